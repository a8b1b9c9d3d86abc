with

eval_samples as (

    select * from {{ ref('stg_lake__eval_samples') }}

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
        origin

    from eval_samples
    where not is_superseded

)

select * from final
