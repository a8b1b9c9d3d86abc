with

probe_results as (

    select * from {{ ref('stg_lake__probe_results') }}

),

test_scores as (

    -- accuracy and macro-F1 on the test split, as the extractor reports them
    select * from probe_results

),

compression as (

    -- one per checkpoint × task × layer: the codelength is the same on every
    -- metric row of a probe (should two rows disagree, two compression rows come
    -- out and the mart's primary-key test fails)
    select distinct
        * replace (
            'compression' as metric,
            -- how many times shorter the online code is than the uniform code
            case when codelength > 0 then uniform_codelength / codelength end as value
        )
    from probe_results

),

unioned as (

    select * from test_scores
    union all by name
    select * from compression

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        {{ nominal_parameters('model_size') }} as nominal_parameters,
        seed,
        step,
        task,
        level,
        layer,
        metric,

        ---------- measures
        value,
        majority_accuracy,
        codelength,
        uniform_codelength,

        ---------- the task's data
        n_classes,
        n_train,
        n_test,

        ---------- provenance
        extraction_id

    from unioned

)

select * from final
