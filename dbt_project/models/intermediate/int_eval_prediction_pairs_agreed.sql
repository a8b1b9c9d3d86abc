{#-
    Cohen's κ between two checkpoints' item-level predictions on the items both
    answered (same task, filter, num_fewshot and doc_id), computed by the
    `cohens_kappa` macro (macros/cohens_kappa.sql), which the probe agreement
    shares:

        κ = (p_o − p_e) / (1 − p_e)
        p_o = share of shared items with equal predictions
        p_e = Σ_c p_a(c) · p_b(c), each checkpoint's label marginals over the shared items

    null when p_e = 1 (both predict one and the same label throughout).

    Beside κ, on the same items, Gwet's AC1 (macro `gwet_ac1`, macros/gwet_ac1.sql):
    chance agreement from the two checkpoints' mean label shares, so it stays
    defined and near 1 where one label dominates and κ collapses (the κ paradox).

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
            where
                held.comparison = groups.comparison
                and held.suite = groups.suite
                and held.model_size = groups.model_size
                and {{ eval_pair_group_value('held') }} = groups.group_value
                and held.input_fingerprint = groups.input_fingerprint
        )
    {% endif %}

),

inter_seed_predictions as (

    {{ eval_group_predictions('items', 'pending_groups', 'inter_seed', group_column='step') }}

),

self_predictions as (

    {{ eval_group_predictions('items', 'pending_groups', 'self', group_column='seed') }}

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

-- every unordered pair of seeds at the same step
    {{ eval_prediction_pairs(
        'inter_seed', 'inter_seed_predictions', 'inter_seed_predictions',
        group_column='step', member_column='seed',
    ) }}

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
    {{ eval_prediction_pairs(
        'self', 'self_predictions', 'final_predictions',
        group_column='seed', member_column='step',
    ) }}

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

agreed_ac1 as (

    {{ gwet_ac1(
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
        agreed_ac1.ac1,
        ---------- provenance: the fingerprint of the group's checkpoints (incremental builds)
        groups.input_fingerprint
    from agreed
    inner join groups
        on agreed.comparison = groups.comparison
        and agreed.suite = groups.suite
        and agreed.model_size = groups.model_size
        and groups.group_value = {{ eval_pair_group_value('agreed') }}
    inner join agreed_ac1
        on agreed.comparison = agreed_ac1.comparison
        and agreed.suite = agreed_ac1.suite
        and agreed.model_size = agreed_ac1.model_size
        and agreed.task = agreed_ac1.task
        and agreed.filter = agreed_ac1.filter
        and agreed.num_fewshot = agreed_ac1.num_fewshot
        and agreed.seed_a = agreed_ac1.seed_a
        and agreed.step_a = agreed_ac1.step_a
        and agreed.seed_b = agreed_ac1.seed_b
        and agreed.step_b = agreed_ac1.step_b

)

select * from final
