{% macro spread_across_seeds(column, prefix) %}
    {#- The spread of `column` across the seeds of each group, as the consistency
        marts report it: `prefix`_median, _q25, _q75, _mean, _std, _min, _max.
        quantile_cont interpolates linearly, as numpy.quantile does by default;
        the std is the sample standard deviation (numpy's ddof=1). -#}
    quantile_cont({{ column }}, 0.5) as {{ prefix }}_median,
        quantile_cont({{ column }}, 0.25) as {{ prefix }}_q25,
        quantile_cont({{ column }}, 0.75) as {{ prefix }}_q75,
        avg({{ column }}) as {{ prefix }}_mean,
        stddev_samp({{ column }}) as {{ prefix }}_std,
        min({{ column }}) as {{ prefix }}_min,
        max({{ column }}) as {{ prefix }}_max
{%- endmacro %}
