with

eval_scores as (

    select * from {{ ref('fct_eval_scores') }}

),

across_seeds as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        task,
        metric,
        filter,
        num_fewshot,

        ---------- spread of the score across seeds
        count(*) as n_runs,
        -- quantile_cont interpolates linearly, as numpy.quantile does by default
        quantile_cont(value, 0.5) as value_median,
        quantile_cont(value, 0.25) as value_q25,
        quantile_cont(value, 0.75) as value_q75,
        avg(value) as value_mean,
        stddev_samp(value) as value_std,
        min(value) as value_min,
        max(value) as value_max,

        ---------- sampling error within each run, kept apart from the seed spread
        avg(stderr) as stderr_mean

    from eval_scores
    group by suite, model_size, step, task, metric, filter, num_fewshot

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        {{ nominal_parameters('model_size') }} as nominal_parameters,
        step,
        task,
        metric,
        filter,
        num_fewshot,

        ---------- statistics across seeds
        n_runs,
        value_median,
        value_q25,
        value_q75,
        value_mean,
        value_std,
        value_min,
        value_max,
        stderr_mean

    from across_seeds

)

select * from final
