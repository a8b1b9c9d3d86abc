{#-
    Cohen's κ between two checkpoints' item-level predictions on the items both
    answered (same task, filter, num_fewshot and doc_id), computed by the
    `cohens_kappa` macro (macros/cohens_kappa.sql), which the probe agreement
    shares:

        κ = (p_o − p_e) / (1 − p_e)
        p_o = share of shared items with equal predictions
        p_e = Σ_c p_a(c) · p_b(c), each checkpoint's label marginals over the shared items

    null when p_e = 1 (both predict one and the same label throughout).
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

agreed as (

    {{ cohens_kappa(
        'paired',
        keys=[
            'comparison', 'suite', 'model_size', 'task', 'filter', 'num_fewshot',
            'seed_a', 'step_a', 'seed_b', 'step_b',
        ],
        label_a='prediction_a',
        label_b='prediction_b',
    ) }}

),

final as (

    select * from agreed

)

select * from final
