with

items as (

    select * from {{ ref('int_eval_items_predicted') }}

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        task,
        filter,
        num_fewshot,
        doc_id,

        ---------- item
        min(doc_hash) as doc_hash,

        ---------- how many seeds get it right
        count(*) as n_seeds,
        count(*) filter (where correct = 1) as n_correct,
        count(*) filter (where correct = 1) / count(*) as fraction_correct

    from items
    -- only items with a correctness metric (acc); bias tasks have none
    where correct is not null
    group by suite, model_size, step, task, filter, num_fewshot, doc_id

)

select * from final
