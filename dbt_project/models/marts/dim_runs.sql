with

checkpoints as (

    select * from {{ ref('dim_checkpoints') }}

),

training_log as (

    select * from {{ ref('stg_lake__training_log') }}

),

checkpoint_counts as (

    select
        suite,
        model_size,
        seed,
        count(*) filter (where is_expected) as n_expected_checkpoints,
        count(*) filter (where is_present) as n_present_checkpoints
    from checkpoints
    group by suite, model_size, seed

),

logged_runs as (

    select distinct
        suite,
        model_size,
        seed
    from training_log

),

runs as (

    select
        suite,
        model_size,
        seed
    from checkpoint_counts
    union
    select
        suite,
        model_size,
        seed
    from logged_runs

),

final as (

    select
        ---------- keys
        runs.suite,
        runs.model_size,
        runs.seed,

        ---------- size
        {{ nominal_parameters('runs.model_size') }} as nominal_parameters,

        ---------- completeness
        coalesce(checkpoint_counts.n_expected_checkpoints, 0) as n_expected_checkpoints,
        coalesce(checkpoint_counts.n_present_checkpoints, 0) as n_present_checkpoints

    from runs
    left join checkpoint_counts using (suite, model_size, seed)

)

select * from final
