{#-
    The checkpoints the outlier signals are evaluated at: every step of a run that
    has a successful or diverged extraction (any extractor) or a training-map
    state, with the run's final step, the end of its warm-up, and whether the
    checkpoint is diverged (NaN or inf weights or outputs) and why.
-#}
{%- set settings = outlier_settings() -%}

with

checkpoint_extractors as (

    select * from {{ ref('int_checkpoint_extractors_aggregated') }}

),

training_map_states as (

    select * from {{ ref('int_training_map_states') }}

),

extracted as (

    select
        suite,
        model_size,
        seed,
        step,
        bool_or(is_diverged) as is_diverged,
        -- as dim_checkpoints.diverged_reason: the weights' reason first
        arg_min(
            diverged_error,
            case when diverged_error like 'weights not finite%' then '0' else '1' end || extractor
        ) filter (where is_diverged) as diverged_reason
    from checkpoint_extractors
    group by suite, model_size, seed, step
    having bool_or(is_settled)

),

mapped as (

    -- an imported training map may cover checkpoints the lake never extracted
    select distinct
        suite,
        model_size,
        seed,
        step
    from training_map_states

),

checkpoints as (

    select
        suite,
        model_size,
        seed,
        step
    from extracted
    union
    select * from mapped

),

runs as (

    select
        suite,
        model_size,
        seed,
        max(step) as final_step
    from checkpoints
    group by suite, model_size, seed

),

sizes as (

    select
        suite,
        model_size,
        count(*) as n_seeds
    from runs
    group by suite, model_size

),

final as (

    select
        ---------- keys
        checkpoints.suite,
        checkpoints.model_size,
        checkpoints.seed,
        checkpoints.step,

        ---------- the run
        runs.final_step,
        cast({{ settings.outlier_warmup_fraction }} as double) * runs.final_step as warmup_step,
        checkpoints.step >= cast({{ settings.outlier_warmup_fraction }} as double) * runs.final_step
            as is_after_warmup,
        sizes.n_seeds,

        ---------- divergence
        coalesce(extracted.is_diverged, false) as is_diverged,
        extracted.diverged_reason

    from checkpoints
    inner join runs using (suite, model_size, seed)
    inner join sizes using (suite, model_size)
    left join extracted using (suite, model_size, seed, step)

)

select * from final
