{#-
    The diverged checkpoints (int_diverged_checkpoints) an extractor was
    expected of or attempted on, counted per step: what a consistency mart reports
    as left out (n_seeds_diverged). A diverged checkpoint no extractor of a group
    was expected of or attempted on is not counted for that group.
-#}

with

diverged_checkpoints as (

    select * from {{ ref('int_diverged_checkpoints') }}

),

checkpoint_extractors as (

    select * from {{ ref('int_checkpoint_extractors_aggregated') }}

),

grouped_extractors as (

    select
        suite,
        model_size,
        seed,
        step,
        -- both give lm-eval results: a checkpoint evaluated and ingested counts once
        case
            when extractor in {{ eval_extractors() }} then 'lm_eval'
            else extractor
        end as extractor_group
    from checkpoint_extractors

),

counted as (

    select
        diverged_checkpoints.suite,
        diverged_checkpoints.model_size,
        diverged_checkpoints.step,
        grouped_extractors.extractor_group,
        count(distinct diverged_checkpoints.seed) as n_seeds_diverged
    from diverged_checkpoints
    inner join grouped_extractors using (suite, model_size, seed, step)
    group by
        diverged_checkpoints.suite,
        diverged_checkpoints.model_size,
        diverged_checkpoints.step,
        grouped_extractors.extractor_group

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        extractor_group,

        ---------- left out
        n_seeds_diverged

    from counted

)

select * from final
