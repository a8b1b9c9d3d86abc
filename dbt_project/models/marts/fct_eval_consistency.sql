{#-
    Diverged checkpoints (dim_checkpoints.is_diverged: NaN or inf weights or
    outputs) are counted per step (n_seeds_diverged) and left out of every
    statistic, explicitly: an ingested lm-eval file of a checkpoint whose weights
    diverged does not enter the spread.
-#}

with

all_eval_scores as (

    select * from {{ ref('fct_eval_scores') }}

),

diverged_checkpoints as (

    select * from {{ ref('int_diverged_checkpoints') }}

),

diverged_seeds_counted as (

    select * from {{ ref('int_diverged_seeds_counted') }}

),

eval_scores as (

    select all_eval_scores.*
    from all_eval_scores
    anti join diverged_checkpoints using (suite, model_size, seed, step)

),

diverged_seeds as (

    -- the diverged checkpoints an evaluation was expected of or attempted on
    select
        suite,
        model_size,
        step,
        n_seeds_diverged
    from diverged_seeds_counted
    where extractor_group = 'lm_eval'

),

across_seeds as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        task,
        metric,
        filter,
        num_fewshot,

        ---------- spread of the score across seeds
        count(*) as n_runs,
        {{ spread_across_seeds('value', 'value') }},

        ---------- sampling error within each run, kept apart from the seed spread
        avg(stderr) as stderr_mean

    from eval_scores
    group by suite, model_size, step, task, metric, filter, num_fewshot

),

final as (

    select
        ---------- keys
        across_seeds.suite,
        across_seeds.model_size,
        {{ nominal_parameters('across_seeds.model_size') }} as nominal_parameters,
        across_seeds.step,
        across_seeds.task,
        across_seeds.metric,
        across_seeds.filter,
        across_seeds.num_fewshot,

        ---------- statistics across the finite seeds
        across_seeds.n_runs,
        across_seeds.value_median,
        across_seeds.value_q25,
        across_seeds.value_q75,
        across_seeds.value_mean,
        across_seeds.value_std,
        across_seeds.value_min,
        across_seeds.value_max,
        across_seeds.stderr_mean,

        ---------- left out
        coalesce(diverged_seeds.n_seeds_diverged, 0) as n_seeds_diverged

    from across_seeds
    left join diverged_seeds using (suite, model_size, step)

)

select * from final
