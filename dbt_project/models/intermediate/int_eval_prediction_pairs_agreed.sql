{#-
    Cohen's κ between two checkpoints' item-level predictions on the items both
    answered (same task, filter, num_fewshot and doc_id):

        κ = (p_o − p_e) / (1 − p_e)
        p_o = share of shared items with equal predictions
        p_e = Σ_c p_a(c) · p_b(c), each checkpoint's label marginals over the shared items

    With n shared items, a = agreeing items and S = Σ_c n_a(c) · n_b(c) (counts),
    κ = (n·a − S) / (n² − S): integer arithmetic up to one division, null when
    S = n² (p_e = 1: both predict one and the same label throughout).
-#}
with

items as (

    select * from {{ ref('int_eval_items_predicted') }}

),

predictions as (

    select
        suite,
        model_size,
        seed,
        step,
        task,
        filter,
        num_fewshot,
        doc_id,
        prediction
    from items
    where prediction is not null

),

final_steps as (

    -- each run's last evaluated checkpoint, per task
    select
        suite,
        model_size,
        seed,
        task,
        filter,
        num_fewshot,
        max(step) as final_step
    from predictions
    group by suite, model_size, seed, task, filter, num_fewshot

),

inter_seed_pairs as (

    -- every unordered pair of seeds at the same step
    select
        'inter_seed' as comparison,
        a.suite,
        a.model_size,
        a.task,
        a.filter,
        a.num_fewshot,
        a.seed as seed_a,
        a.step as step_a,
        b.seed as seed_b,
        b.step as step_b,
        a.doc_id,
        a.prediction as prediction_a,
        b.prediction as prediction_b
    from predictions as a
    inner join predictions as b
        on a.suite = b.suite
        and a.model_size = b.model_size
        and a.task = b.task
        and a.filter = b.filter
        and a.num_fewshot = b.num_fewshot
        and a.doc_id = b.doc_id
        and a.step = b.step
        and a.seed < b.seed

),

self_pairs as (

    -- every earlier checkpoint of a run against the run's final one
    select
        'self' as comparison,
        a.suite,
        a.model_size,
        a.task,
        a.filter,
        a.num_fewshot,
        a.seed as seed_a,
        a.step as step_a,
        b.seed as seed_b,
        b.step as step_b,
        a.doc_id,
        a.prediction as prediction_a,
        b.prediction as prediction_b
    from predictions as a
    inner join final_steps
        on a.suite = final_steps.suite
        and a.model_size = final_steps.model_size
        and a.seed = final_steps.seed
        and a.task = final_steps.task
        and a.filter = final_steps.filter
        and a.num_fewshot = final_steps.num_fewshot
        and a.step < final_steps.final_step
    inner join predictions as b
        on a.suite = b.suite
        and a.model_size = b.model_size
        and a.seed = b.seed
        and a.task = b.task
        and a.filter = b.filter
        and a.num_fewshot = b.num_fewshot
        and a.doc_id = b.doc_id
        and b.step = final_steps.final_step

),

paired as (

    select * from inter_seed_pairs
    union all
    select * from self_pairs

),

agreement as (

    select
        comparison,
        suite,
        model_size,
        task,
        filter,
        num_fewshot,
        seed_a,
        step_a,
        seed_b,
        step_b,
        count(*) as n_items,
        count(*) filter (where prediction_a = prediction_b) as n_agreeing
    from paired
    group by all

),

marginals_a as (

    select
        comparison, suite, model_size, task, filter, num_fewshot,
        seed_a, step_a, seed_b, step_b,
        prediction_a as label,
        count(*) as n_label
    from paired
    group by all

),

marginals_b as (

    select
        comparison, suite, model_size, task, filter, num_fewshot,
        seed_a, step_a, seed_b, step_b,
        prediction_b as label,
        count(*) as n_label
    from paired
    group by all

),

chance as (

    -- S = Σ_c n_a(c) · n_b(c); a label only one side uses adds nothing
    select
        marginals_a.comparison,
        marginals_a.suite,
        marginals_a.model_size,
        marginals_a.task,
        marginals_a.filter,
        marginals_a.num_fewshot,
        marginals_a.seed_a,
        marginals_a.step_a,
        marginals_a.seed_b,
        marginals_a.step_b,
        sum(marginals_a.n_label * marginals_b.n_label) as n_chance_products
    from marginals_a
    inner join marginals_b
        using (
            comparison, suite, model_size, task, filter, num_fewshot,
            seed_a, step_a, seed_b, step_b, label
        )
    group by all

),

final as (

    select
        ---------- keys
        agreement.comparison,
        agreement.suite,
        agreement.model_size,
        agreement.task,
        agreement.filter,
        agreement.num_fewshot,
        agreement.seed_a,
        agreement.step_a,
        agreement.seed_b,
        agreement.step_b,

        ---------- agreement
        agreement.n_items,
        agreement.n_agreeing / agreement.n_items as observed_agreement,
        cast(coalesce(chance.n_chance_products, 0) as double)
        / (agreement.n_items * agreement.n_items) as expected_agreement,
        case
            when coalesce(chance.n_chance_products, 0) < agreement.n_items * agreement.n_items
                then (
                    agreement.n_items * agreement.n_agreeing
                    - coalesce(chance.n_chance_products, 0)
                )
                / (agreement.n_items * agreement.n_items - coalesce(chance.n_chance_products, 0))
        end as kappa

    from agreement
    left join chance
        using (
            comparison, suite, model_size, task, filter, num_fewshot,
            seed_a, step_a, seed_b, step_b
        )

)

select * from final
