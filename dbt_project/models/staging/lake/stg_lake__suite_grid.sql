with

source as (

    select * from {{ lake_source('suite_grid') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(extractor as varchar) as extractor,
        cast(extraction_id as varchar) as extraction_id,

        ---------- provenance
        cast(source as varchar) as checkpoint_source

    from source

),

latest_grids as (

    -- every write of a suite file records its whole grid: the latest one holds
    select
        suite,
        max(extraction_id) as extraction_id
    from renamed
    group by suite

),

final as (

    select renamed.*
    from renamed
    inner join latest_grids using (suite, extraction_id)

)

select * from final
