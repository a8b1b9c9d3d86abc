{#-
    The diverged checkpoints (dim_checkpoints.is_diverged) an extractor was
    expected of or attempted on, counted per step: what a consistency mart reports
    as left out (n_seeds_diverged). A diverged checkpoint no extractor of a group
    was expected of or attempted on is not counted for that group.
-#}

with

dim_checkpoints as (

    select * from {{ ref('dim_checkpoints') }}

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
        dim_checkpoints.suite,
        dim_checkpoints.model_size,
        dim_checkpoints.step,
        grouped_extractors.extractor_group,
        count(distinct dim_checkpoints.seed) as n_seeds_diverged
    from dim_checkpoints
    inner join grouped_extractors
        on dim_checkpoints.suite = grouped_extractors.suite
        and dim_checkpoints.model_size = grouped_extractors.model_size
        and dim_checkpoints.seed = grouped_extractors.seed
        and dim_checkpoints.step = grouped_extractors.step
    where dim_checkpoints.is_diverged
    group by
        dim_checkpoints.suite,
        dim_checkpoints.model_size,
        dim_checkpoints.step,
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
