{#-
    Outliers and early warning: the settings the outlier models share, and the
    leave-one-out z-score they all use.
-#}

{% macro outlier_settings() %}
    {#-
        The vars of the outlier models (dbt_project.yml, "Outliers and early
        warning", where their defaults are), checked and typed: a dict name →
        value. A bad value stops the build with a compiler error naming the var.
    -#}
    {%- set fail = exceptions.raise_compiler_error -%}
    {%- set settings = {} -%}

    {%- for name, low, high in [
        ('outlier_warmup_fraction', 0, 1),
        ('performance_z_threshold', none, 0),
        ('loss_spike_k', 0, none),
        ('final_loss_z_threshold', 0, none),
        ('agreement_z_threshold', none, 0),
        ('training_map_rare_fraction', 0, 1),
        ('training_map_entry_shift', 0, none),
    ] -%}
        {%- set raw = var(name) -%}
        {%- set value = raw | float(none) -%}
        {%- if value is none or raw is boolean
            or (low is not none and value < low) or (high is not none and value > high) -%}
            {{ fail(
                "outliers: var " ~ name ~ " must be a number"
                ~ (" >= " ~ low if low is not none else "")
                ~ (" and" if low is not none and high is not none else "")
                ~ (" <= " ~ high if high is not none else "")
                ~ ", not " ~ raw
            ) }}
        {%- endif -%}
        {%- do settings.update({name: value}) -%}
    {%- endfor -%}

    {%- set window = var('loss_spike_window') -%}
    {%- set whole = window | int(-1) -%}
    {%- if window is boolean or whole < 2 or (window | string) != (whole | string) -%}
        {{ fail(
            "outliers: var loss_spike_window must be an integer >= 2 (training-log steps), not "
            ~ window
        ) }}
    {%- endif -%}
    {%- do settings.update({'loss_spike_window': window | int}) -%}

    {%- set persistence = var('signal_persistence') -%}
    {%- set whole = persistence | int(-1) -%}
    {%- if persistence is boolean or whole < 1 or (persistence | string) != (whole | string) -%}
        {{ fail(
            "outliers: var signal_persistence must be an integer >= 1 (consecutive evaluated "
            ~ "checkpoints), not " ~ persistence
        ) }}
    {%- endif -%}
    {%- do settings.update({'signal_persistence': persistence | int}) -%}

    {%- set tasks = var('performance_tasks') -%}
    {%- if tasks is string or tasks is not iterable or tasks | length == 0 -%}
        {{ fail(
            "outliers: var performance_tasks must be a non-empty list of lm-eval task names, not "
            ~ tasks
        ) }}
    {%- endif -%}
    {%- for task in tasks -%}
        {%- if task is not string or task | length == 0 or "'" in task -%}
            {{ fail(
                "outliers: var performance_tasks must hold task names (strings without quotes), "
                ~ "not " ~ task
            ) }}
        {%- endif -%}
    {%- endfor -%}
    {%- do settings.update({'performance_tasks': tasks | list}) -%}

    {%- set metric = var('performance_metric') -%}
    {%- if metric is not string or metric | length == 0 or "'" in metric -%}
        {{ fail("outliers: var performance_metric must be an lm-eval metric name, not " ~ metric) }}
    {%- endif -%}
    {%- do settings.update({'performance_metric': metric}) -%}

    {{ return(settings) }}
{% endmacro %}


{% macro sql_string_list(values) -%}
    {#- ('a', 'b') for an `in` list of strings already checked to hold no quote. -#}
    ({%- for value in values -%}'{{ value }}'{{ ", " if not loop.last }}{%- endfor -%})
{%- endmacro %}


{% macro leave_one_out_z(relation, keys, unit='seed', value='value', min_units=3) -%}
    {#-
        Leave-one-out z-scores: a select statement (the body of a CTE) with one row
        per row of `relation` whose `value` is not null:

            keys…, unit, value, n_units, others_mean, others_std, z

        Within each group of `keys` (compared with `is not distinct from`), each
        unit's value is set against the other units' values of the group:
        others_mean their mean, others_std their sample standard deviation
        (n − 1), z = (value − others_mean) / others_std. n_units counts the units
        of the group (the unit itself included). z is null when the group has
        fewer than `min_units` units or the others' values are all equal
        (others_std 0). The unit itself never enters its own reference, so with
        5 seeds one run far from the other four reaches any threshold.
    -#}
    {%- set key_list = keys | join(', ') -%}
    with

    loo_values as (

        select
            {{ key_list }},
            {{ unit }} as loo_unit,
            {{ value }} as loo_value
        from {{ relation }}
        where {{ value }} is not null

    ),

    loo_others as (

        select
            {% for key in keys -%}
    loo_self.{{ key }},
            {% endfor -%}
            loo_self.loo_unit,
            loo_self.loo_value,
            count(loo_other.loo_value) + 1 as n_units,
            avg(loo_other.loo_value) as others_mean,
            stddev_samp(loo_other.loo_value) as others_std
        from loo_values as loo_self
        left join loo_values as loo_other
            on loo_self.loo_unit <> loo_other.loo_unit
    {%- for key in keys %}
            and loo_self.{{ key }} is not distinct from loo_other.{{ key }}
    {%- endfor %}
        group by
            {% for key in keys -%}
    loo_self.{{ key }},
            {% endfor -%}
            loo_self.loo_unit,
            loo_self.loo_value

    )

    select
        {{ key_list }},
        loo_unit as {{ unit }},
        loo_value as {{ value }},
        n_units,
        others_mean,
        others_std,
        case
            when n_units >= {{ min_units }} and others_std > 0
                then (loo_value - others_mean) / others_std
        end as z
    from loo_others
{%- endmacro %}
