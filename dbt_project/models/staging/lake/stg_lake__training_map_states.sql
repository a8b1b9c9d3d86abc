with

source as (

    select * from {{ lake_source('training_map_states') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(extraction_id as varchar) as extraction_id,

        ---------- the map
        cast(state as integer) as state,
        cast(score as double) as score,

        ---------- provenance
        cast(source_file as varchar) as source_file,
        cast(source_sha256 as varchar) as source_sha256,
        cast(ingested_at as timestamp with time zone) as ingested_at

    from source

),

latest_files as (

    -- a re-import of a suite × model_size supersedes the earlier ones, which stay
    -- in the append-only lake: keep the greatest extraction id
    select
        suite,
        model_size,
        max(extraction_id) as extraction_id
    from renamed
    group by suite, model_size

),

final as (

    select renamed.*
    from renamed
    inner join latest_files using (suite, model_size, extraction_id)

)

select * from final
