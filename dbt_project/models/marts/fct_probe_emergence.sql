{#-
    When a probe's score emerges: per run, task, layer and metric, the first step
    at which the score reaches `probe_emergence_fraction` (a var, default 0.9) of
    the score at the run's final probed checkpoint; across the seeds of the size,
    how much that step varies.
-#}
{%- set fraction = var('probe_emergence_fraction', 0.9) | float -%}
{%- if fraction <= 0 or fraction > 1 -%}
    {{ exceptions.raise_compiler_error(
        "fct_probe_emergence: var probe_emergence_fraction must be in (0, 1], not "
        ~ var('probe_emergence_fraction')
    ) }}
{%- endif -%}

with

probe_scores as (

    select * from {{ ref('fct_probe_scores') }}

),

scores as (

    select
        suite,
        model_size,
        seed,
        step,
        task,
        layer,
        metric,
        value
    from probe_scores
    where
        metric in ('accuracy', 'compression')
        and value is not null

),

final_scores as (

    -- the run's last probed checkpoint, per task × layer × metric
    select
        suite,
        model_size,
        seed,
        task,
        layer,
        metric,
        max(step) as final_step,
        arg_max(value, step) as final_value
    from scores
    group by suite, model_size, seed, task, layer, metric

),

thresholds as (

    select
        *,
        cast({{ fraction }} as double) as emergence_fraction,
        cast({{ fraction }} as double) * final_value as threshold
    from final_scores

),

emerged as (

    -- the first step at or above the threshold (later dips do not move it)
    select
        thresholds.suite,
        thresholds.model_size,
        thresholds.seed,
        thresholds.task,
        thresholds.layer,
        thresholds.metric,
        min(scores.step) as emergence_step
    from thresholds
    inner join scores
        on thresholds.suite = scores.suite
        and thresholds.model_size = scores.model_size
        and thresholds.seed = scores.seed
        and thresholds.task = scores.task
        and thresholds.layer = scores.layer
        and thresholds.metric = scores.metric
        and thresholds.threshold <= scores.value
    group by
        thresholds.suite,
        thresholds.model_size,
        thresholds.seed,
        thresholds.task,
        thresholds.layer,
        thresholds.metric

),

per_run as (

    select
        thresholds.*,
        emerged.emergence_step
    from thresholds
    left join emerged using (suite, model_size, seed, task, layer, metric)

),

across_seeds as (

    select
        suite,
        model_size,
        task,
        layer,
        metric,
        count(emergence_step) as n_seeds,
        -- linear interpolation, as numpy.quantile's default
        quantile_cont(cast(emergence_step as double), 0.5) as emergence_step_median,
        min(emergence_step) as emergence_step_min,
        max(emergence_step) as emergence_step_max
    from per_run
    group by suite, model_size, task, layer, metric

),

final as (

    select
        ---------- keys
        per_run.suite,
        per_run.model_size,
        {{ nominal_parameters('per_run.model_size') }} as nominal_parameters,
        per_run.seed,
        per_run.task,
        per_run.layer,
        per_run.metric,

        ---------- the run's emergence
        per_run.emergence_fraction,
        per_run.final_step,
        per_run.final_value,
        per_run.threshold,
        per_run.emergence_step,

        ---------- across the seeds of the size (the same on every seed's row)
        across_seeds.n_seeds,
        across_seeds.emergence_step_median,
        across_seeds.emergence_step_min,
        across_seeds.emergence_step_max,
        across_seeds.emergence_step_max - across_seeds.emergence_step_min
            as emergence_step_spread

    from per_run
    inner join across_seeds using (suite, model_size, task, layer, metric)

)

select * from final
