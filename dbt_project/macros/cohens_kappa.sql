{#-
    Cohen's κ between two raters' labels, per comparison: the one implementation the
    eval and probe agreement models share.

    `relation` (a CTE name or a relation) holds one row per item of a comparison,
    with the comparison's `keys` and the two labels `label_a` and `label_b` (any
    type that compares with =: choice indexes, label strings). Items where either
    label is null are left out. The macro is a select statement (use it as the body
    of a CTE) with one row per comparison that has at least one item:

        keys…, n_items, observed_agreement, expected_agreement, kappa

        κ = (p_o − p_e) / (1 − p_e)
        p_o = share of the items with equal labels
        p_e = Σ_c p_a(c) · p_b(c), each rater's label shares over the items

    With n items, a = agreeing items and S = Σ_c n_a(c) · n_b(c) (counts),
    κ = (n·a − S) / (n² − S): integer arithmetic up to one division, null when
    S = n² (p_e = 1: both raters give one and the same label throughout). It
    equals sklearn.metrics.cohen_kappa_score(labels_a, labels_b).

    With `weight` (a column name), each row stands for `weight` items with the same
    two labels (a contingency table), so a caller can aggregate millions of item
    pairs into counts before the macro sees them.
-#}
{% macro cohens_kappa(relation, keys, label_a='prediction_a', label_b='prediction_b', weight=none) -%}
    {%- set n = 'sum(kappa_weight)' if weight else 'count(*)' -%}
    {%- set key_list = keys | join(', ') -%}
    with

    kappa_items as (

        select
            {{ key_list }},
            {{ label_a }} as kappa_label_a,
            {{ label_b }} as kappa_label_b{% if weight %},
            {{ weight }} as kappa_weight{% endif %}
        from {{ relation }}
        where {{ label_a }} is not null
            and {{ label_b }} is not null

    ),

    kappa_agreement as (

        select
            {{ key_list }},
            cast({{ n }} as bigint) as n_items,
            cast(coalesce({{ n }} filter (where kappa_label_a = kappa_label_b), 0) as bigint) as n_agreeing
        from kappa_items
        group by {{ key_list }}

    ),

    kappa_marginals_a as (

        select
            {{ key_list }},
            kappa_label_a as kappa_label,
            cast({{ n }} as bigint) as n_label
        from kappa_items
        group by {{ key_list }}, kappa_label_a

    ),

    kappa_marginals_b as (

        select
            {{ key_list }},
            kappa_label_b as kappa_label,
            cast({{ n }} as bigint) as n_label
        from kappa_items
        group by {{ key_list }}, kappa_label_b

    ),

    kappa_chance as (

        -- S = Σ_c n_a(c) · n_b(c); a label only one rater uses adds nothing
        select
            {% for key in keys -%}
    kappa_marginals_a.{{ key }},
            {% endfor -%}
            sum(kappa_marginals_a.n_label * kappa_marginals_b.n_label) as n_chance_products
        from kappa_marginals_a
        inner join kappa_marginals_b
            using ({{ key_list }}, kappa_label)
        group by {% for key in keys %}kappa_marginals_a.{{ key }}{{ ", " if not loop.last }}{% endfor %}

    )

    select
        ---------- keys
        {% for key in keys -%}
    kappa_agreement.{{ key }},
        {% endfor %}
        ---------- agreement
        kappa_agreement.n_items,
        kappa_agreement.n_agreeing / kappa_agreement.n_items as observed_agreement,
        cast(coalesce(kappa_chance.n_chance_products, 0) as double)
        / (kappa_agreement.n_items * kappa_agreement.n_items) as expected_agreement,
        case
            when coalesce(kappa_chance.n_chance_products, 0)
                < kappa_agreement.n_items * kappa_agreement.n_items
                then (
                    kappa_agreement.n_items * kappa_agreement.n_agreeing
                    - coalesce(kappa_chance.n_chance_products, 0)
                )
                / (
                    kappa_agreement.n_items * kappa_agreement.n_items
                    - coalesce(kappa_chance.n_chance_products, 0)
                )
        end as kappa

    from kappa_agreement
    left join kappa_chance
        using ({{ key_list }})
{%- endmacro %}
