{#-
    Referential integrity on a composite key: fails on every combination of
    `columns` in the model that has no row in `parent`.
-#}
{% test has_parent(model, parent, columns) %}

with

child_keys as (

    select distinct {{ columns | join(', ') }}
    from {{ model }}

),

parent_keys as (

    select distinct {{ columns | join(', ') }}
    from {{ parent }}

),

final as (

    select child_keys.*
    from child_keys
    anti join parent_keys
        using ({{ columns | join(', ') }})

)

select * from final

{% endtest %}
