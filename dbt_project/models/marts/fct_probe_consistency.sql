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
        -- quantile_cont interpolates linearly, as numpy.quantile does by default
        quantile_cont(value, 0.5) as value_median,
        quantile_cont(value, 0.25) as value_q25,
        quantile_cont(value, 0.75) as value_q75,
        avg(value) as value_mean,
        stddev_samp(value) as value_std,
        min(value) as value_min,
        max(value) as value_max

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
