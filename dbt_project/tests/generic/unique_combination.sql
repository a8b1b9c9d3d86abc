{#-
    Primary key on several columns: fails on every combination of `columns` that
    occurs more than once, or has a null in any of them except those listed in
    `nullable` (a null there counts as one more value: two rows alike but for
    nulls in the same nullable columns are duplicates).
-#}
{% test unique_combination(model, columns, nullable=[]) %}

with

keyed as (

    select
        {{ columns | join(', ') }}
    from {{ model }}

),

duplicated as (

    select
        {{ columns | join(', ') }},
        count(*) as n_rows
    from keyed
    group by {{ columns | join(', ') }}
    having count(*) > 1

),

incomplete as (

    select
        {{ columns | join(', ') }},
        count(*) as n_rows
    from keyed
    where {% for column in columns if column not in nullable %}{{ column }} is null{{ " or " if not loop.last }}{% endfor %}
    group by {{ columns | join(', ') }}

),

final as (

    select * from duplicated
    union all
    select * from incomplete

)

select * from final

{% endtest %}
