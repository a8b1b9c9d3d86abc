{#-
    Gwet's AC1 between two raters' labels, per comparison: the one implementation the
    eval and probe agreement models share, beside Cohen's κ (macros/cohens_kappa.sql),
    on the same items (the same input and null rule as `cohens_kappa`).

    `relation` holds one row per item of a comparison with the comparison's `keys` and
    the labels `label_a`, `label_b` (or, with `weight`, one row per label pair with its
    item count). The macro is a select statement (the body of a CTE) with one row per
    comparison that has at least one item:

        keys…, ac1

        AC1 = (p_o − p_e) / (1 − p_e)
        p_o = share of the items with equal labels
        p_e = Σ_c π_c (1 − π_c) / (Q − 1)
        π_c = (n_a(c) + n_b(c)) / (2n), the two raters' mean share of label c
        Q   = the number of labels either rater uses

    Unlike κ's p_e, AC1's chance agreement is small when one label dominates
    (π_c near 1 makes π_c (1 − π_c) near 0), so two raters who almost always give
    the same label score near 1, where κ falls to 0 or is undefined (the κ paradox).
    p_e ≤ 1/Q ≤ 1/2 for Q ≥ 2, so AC1 is always defined; with Q = 1 (both raters
    give one and the same label throughout) the sum is 0, p_e = 0 and AC1 = p_o = 1.
-#}
{% macro gwet_ac1(relation, keys, label_a='prediction_a', label_b='prediction_b', weight=none) -%}
    {%- set item_weight = weight if weight else '1' -%}
    {%- set key_list = keys | join(', ') -%}
    with

    ac1_items as (

        select
            {{ key_list }},
            {{ label_a }} as ac1_label_a,
            {{ label_b }} as ac1_label_b,
            cast({{ item_weight }} as bigint) as ac1_weight
        from {{ relation }}
        where {{ label_a }} is not null
            and {{ label_b }} is not null

    ),

    ac1_agreement as (

        -- hugeint: 4n²(Q − 1) below outgrows a bigint near a billion items
        select
            {{ key_list }},
            cast(sum(ac1_weight) as hugeint) as n_items,
            cast(coalesce(sum(ac1_weight) filter (where ac1_label_a = ac1_label_b), 0) as hugeint)
                as n_agreeing
        from ac1_items
        group by {{ key_list }}

    ),

    ac1_labels as (

        -- each item counts once for rater a's label and once for rater b's
        select {{ key_list }}, ac1_label_a as ac1_label, ac1_weight from ac1_items
        union all
        select {{ key_list }}, ac1_label_b as ac1_label, ac1_weight from ac1_items

    ),

    ac1_label_counts as (

        -- m_c = n_a(c) + n_b(c), out of 2n
        select
            {{ key_list }},
            ac1_label,
            sum(ac1_weight) as n_label
        from ac1_labels
        group by {{ key_list }}, ac1_label

    ),

    ac1_chance as (

        -- V = Σ_c m_c (2n − m_c), so Σ_c π_c (1 − π_c) = V / (2n)²
        select
            {% for key in keys -%}
    ac1_label_counts.{{ key }},
            {% endfor -%}
            count(*) as n_labels,
            sum(ac1_label_counts.n_label * (2 * ac1_agreement.n_items - ac1_label_counts.n_label))
                as label_variance_products
        from ac1_label_counts
        inner join ac1_agreement
            using ({{ key_list }})
        group by {% for key in keys %}ac1_label_counts.{{ key }}{{ ", " if not loop.last }}{% endfor %}

    )

    -- AC1 = (4n(Q − 1)·a − V) / (4n²(Q − 1) − V) with a the agreeing items: integer
    -- arithmetic up to one division; 1 when Q = 1 (then a = n)
    select
        {% for key in keys -%}
    ac1_agreement.{{ key }},
        {% endfor -%}
        case
            when ac1_chance.n_labels = 1 then 1.0
            else (
                4 * ac1_agreement.n_items * (ac1_chance.n_labels - 1) * ac1_agreement.n_agreeing
                - ac1_chance.label_variance_products
            ) / (
                4 * ac1_agreement.n_items * ac1_agreement.n_items * (ac1_chance.n_labels - 1)
                - ac1_chance.label_variance_products
            )
        end as ac1
    from ac1_agreement
    inner join ac1_chance
        using ({{ key_list }})
{%- endmacro %}
