{#-
    Incremental (see macros/eval_incremental.sql): a build deletes the checkpoints
    whose staged rows changed (another `source_extractions` in
    stg_lake__eval_samples) and inserts those it does not hold; a full build
    (first, --full-refresh) gives the same rows.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ eval_delete_stale_checkpoints(
            'select distinct suite, model_size, seed, step, source_extractions from '
            ~ ref('stg_lake__eval_samples')
        ) }}",
    )
}}

with

eval_samples as (

    select * from {{ ref('stg_lake__eval_samples') }}

),

pending as (

    select * from eval_samples
    where
        not is_superseded
        {% if is_incremental() %}
            and not exists (
                select 1
                from (
                    select distinct
                        suite,
                        model_size,
                        seed,
                        step,
                        source_extractions
                    from {{ this }}
                ) as held
                where
                    held.suite = eval_samples.suite
                    and held.model_size = eval_samples.model_size
                    and held.seed = eval_samples.seed
                    and held.step = eval_samples.step
                    and held.source_extractions = eval_samples.source_extractions
            )
        {% endif %}

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        step,
        task,
        filter,
        num_fewshot,
        doc_id,

        ---------- item
        doc_hash,

        ---------- the model's answer
        -- the argmax choice of a multiple-choice item; for a single-continuation
        -- log-likelihood item (no choice to predict) whether the continuation is greedy
        coalesce(cast(predicted as bigint), cast(acc as bigint)) as prediction,
        acc as correct,

        ---------- provenance
        extraction_id,
        origin,
        source_extractions

    from pending

)

select * from final
