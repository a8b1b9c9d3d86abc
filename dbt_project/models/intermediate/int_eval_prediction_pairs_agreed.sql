{#-
    Cohen's κ between two checkpoints' item-level predictions on the items both
    answered (same task, filter, num_fewshot and doc_id), computed by the
    `cohens_kappa` macro (macros/cohens_kappa.sql), which the probe agreement
    shares:

        κ = (p_o − p_e) / (1 − p_e)
        p_o = share of shared items with equal predictions
        p_e = Σ_c p_a(c) · p_b(c), each checkpoint's label marginals over the shared items

    null when p_e = 1 (both predict one and the same label throughout).

    Scale: the item pairs (90 million inter-seed pairs on the full PolyPythias
    grid) are never materialised: the join streams into a contingency table (one
    row per comparison × label pair, with its item count) that the macro reads.

    Incremental (macros/eval_incremental.sql): a group of comparisons (inter-seed:
    suite × model_size × step; self: one run) carries the fingerprint of the
    checkpoints it was computed from; a build deletes the groups whose checkpoints
    changed and computes only the groups it does not hold.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ eval_pairs_delete_stale() }}",
    )
}}

with

items as (

    select * from {{ ref('int_eval_items_predicted') }}

),

groups as (

    {{ eval_agreement_groups(ref('int_eval_items_predicted')) }}

),

pending_groups as (

    select * from groups
    {% if is_incremental() %}
    where not exists (
        select 1
        from {{ this }} as held
        where held.comparison = groups.comparison
            and held.suite = groups.suite
            and held.model_size = groups.model_size
            and case held.comparison when 'inter_seed' then held.step_a else held.seed_a end
                = groups.group_value
            and held.input_fingerprint = groups.input_fingerprint
    )
    {% endif %}

),

inter_seed_predictions as (

    select
        items.suite,
        items.model_size,
        items.seed,
        items.step,
        items.task,
        items.filter,
        items.num_fewshot,
        items.doc_id,
        items.prediction
    from items
    {% if is_incremental() -%}
    inner join pending_groups
        on pending_groups.comparison = 'inter_seed'
        and items.suite = pending_groups.suite
        and items.model_size = pending_groups.model_size
        and items.step = pending_groups.group_value
    {%- endif %}
    where items.prediction is not null

),

self_predictions as (

    select
        items.suite,
        items.model_size,
        items.seed,
        items.step,
        items.task,
        items.filter,
        items.num_fewshot,
        items.doc_id,
        items.prediction
    from items
    {% if is_incremental() -%}
    inner join pending_groups
        on pending_groups.comparison = 'self'
        and items.suite = pending_groups.suite
        and items.model_size = pending_groups.model_size
        and items.seed = pending_groups.group_value
    {%- endif %}
    where items.prediction is not null

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
    from self_predictions
    group by suite, model_size, seed, task, filter, num_fewshot

),

inter_seed_pairs as (

    -- every unordered pair of seeds at the same step, counted per label pair
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
        a.prediction as prediction_a,
        b.prediction as prediction_b,
        count(*) as n_pairs
    from inter_seed_predictions as a
    inner join inter_seed_predictions as b
        on a.suite = b.suite
        and a.model_size = b.model_size
        and a.task = b.task
        and a.filter = b.filter
        and a.num_fewshot = b.num_fewshot
        and a.doc_id = b.doc_id
        and a.step = b.step
        and a.seed < b.seed
    group by all

),

final_predictions as (

    select self_predictions.*
    from self_predictions
    inner join final_steps
        on self_predictions.suite = final_steps.suite
        and self_predictions.model_size = final_steps.model_size
        and self_predictions.seed = final_steps.seed
        and self_predictions.task = final_steps.task
        and self_predictions.filter = final_steps.filter
        and self_predictions.num_fewshot = final_steps.num_fewshot
        and self_predictions.step = final_steps.final_step

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
        a.prediction as prediction_a,
        b.prediction as prediction_b,
        count(*) as n_pairs
    from self_predictions as a
    inner join final_predictions as b
        on a.suite = b.suite
        and a.model_size = b.model_size
        and a.seed = b.seed
        and a.task = b.task
        and a.filter = b.filter
        and a.num_fewshot = b.num_fewshot
        and a.doc_id = b.doc_id
        and a.step < b.step
    group by all

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
        weight='n_pairs',
    ) }}

),

final as (

    select
        agreed.*,
        ---------- provenance: the fingerprint of the group's checkpoints (incremental builds)
        groups.input_fingerprint
    from agreed
    inner join groups
        on groups.comparison = agreed.comparison
        and groups.suite = agreed.suite
        and groups.model_size = agreed.model_size
        and groups.group_value = case agreed.comparison
            when 'inter_seed' then agreed.step_a else agreed.seed_a end

)

select * from final
