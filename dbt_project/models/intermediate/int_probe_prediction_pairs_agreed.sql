{#-
    Cohen's κ between the probe predictions of two seeds of one size at one step,
    per task and layer, on the test items both predicted (same item_id); labels
    are the probe's label strings. κ comes from the `cohens_kappa` macro, the
    same implementation as the eval agreement (int_eval_prediction_pairs_agreed);
    Gwet's AC1 beside it, on the same items, from the `gwet_ac1` macro.
-#}
with

probe_predictions as (

    select * from {{ ref('stg_lake__probe_predictions') }}

),

predictions as (

    select
        suite,
        model_size,
        seed,
        step,
        task,
        layer,
        item_id,
        predicted
    from probe_predictions

),

paired as (

    -- every unordered pair of seeds at the same step, on the items both predicted
    select
        a.suite,
        a.model_size,
        a.step,
        a.task,
        a.layer,
        a.seed as seed_a,
        b.seed as seed_b,
        a.item_id,
        a.predicted as predicted_a,
        b.predicted as predicted_b
    from predictions as a
    inner join predictions as b
        on a.suite = b.suite
        and a.model_size = b.model_size
        and a.step = b.step
        and a.task = b.task
        and a.layer = b.layer
        and a.item_id = b.item_id
        and a.seed < b.seed

),

agreed as (

    {{ cohens_kappa(
        'paired',
        keys=['suite', 'model_size', 'step', 'task', 'layer', 'seed_a', 'seed_b'],
        label_a='predicted_a',
        label_b='predicted_b',
    ) }}

),

agreed_ac1 as (

    {{ gwet_ac1(
        'paired',
        keys=['suite', 'model_size', 'step', 'task', 'layer', 'seed_a', 'seed_b'],
        label_a='predicted_a',
        label_b='predicted_b',
    ) }}

),

final as (

    select
        agreed.*,
        agreed_ac1.ac1
    from agreed
    inner join agreed_ac1
        using (suite, model_size, step, task, layer, seed_a, seed_b)

)

select * from final
