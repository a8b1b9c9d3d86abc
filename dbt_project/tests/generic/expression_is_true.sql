{#-
    An invariant of every row: fails on each row where `expression` is false.
    A null result counts as a pass, so columns that may be null are tested where
    they are present; wrap the expression in coalesce(…, false) to forbid nulls.
-#}
{% test expression_is_true(model, expression) %}

select *
from {{ model }}
where not ({{ expression }})

{% endtest %}
