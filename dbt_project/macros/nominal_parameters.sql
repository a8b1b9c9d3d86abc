{#-
    The parameter count a model size name states: "14m" → 14e6, "1.4b" → 1.4e9,
    "200k" → 2e5 (suffixes k, m, b, t, any case); null when the name is not of
    that form. The number is rebuilt as "<digits>e<exponent>" and cast, so "1.4b"
    is exactly the double nearest 1.4e9.
-#}
{% macro nominal_parameters(model_size) -%}
    try_cast(
        regexp_extract(lower({{ model_size }}), '^([0-9]+(\.[0-9]+)?)[kmbt]$', 1)
        || 'e'
        || case right(lower({{ model_size }}), 1)
            when 'k' then '3'
            when 'm' then '6'
            when 'b' then '9'
            when 't' then '12'
        end
        as double
    )
{%- endmacro %}
