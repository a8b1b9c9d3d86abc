{#-
    Custom schemas are used as given (`staging`, `intermediate`, `main`) rather than
    prefixed with the target schema, so the marts sit in `main` of the warehouse.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
