with

probe_scores as (

    select * from {{ ref('fct_probe_scores') }}

),

across_seeds as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        task,
        layer,
        metric,

        ---------- spread of the score across seeds (runs without a value left out)
        count(value) as n_runs,
        {{ spread_across_seeds('value', 'value') }}

    from probe_scores
    where value is not null
    group by suite, model_size, step, task, layer, metric

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        {{ nominal_parameters('model_size') }} as nominal_parameters,
        step,
        task,
        layer,
        metric,

        ---------- statistics across seeds
        n_runs,
        value_median,
        value_q25,
        value_q75,
        value_mean,
        value_std,
        value_min,
        value_max

    from across_seeds

)

select * from final
