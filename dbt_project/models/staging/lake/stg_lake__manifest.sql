with

source as (

    select * from {{ lake_source('manifest') }}

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

        ---------- outcome
        cast(status as varchar) as status,
        status = 'success' as is_success,
        -- NaN or inf weights or outputs: settled (not retried), not a failure
        status = 'diverged' as is_diverged,
        cast(error as varchar) as error,
        rows as rows_written,

        ---------- timing
        started_at,
        finished_at,
        cast(duration_s as double) as duration_s,

        ---------- provenance
        cast(config_hash as varchar) as config_hash,
        cast(source as varchar) as checkpoint_source,
        -- safetensors | bin (a pickle read weights-only); null before it was recorded
        cast(weights_format as varchar) as weights_format,
        cast(device as varchar) as device,
        cast(host as varchar) as host,
        package_versions

    from source

),

latest_success as (

    select
        suite,
        model_size,
        seed,
        step,
        extractor,
        -- extraction ids sort by time: the greatest successful one is the latest
        max(extraction_id) as extraction_id
    from renamed
    where is_success
    group by suite, model_size, seed, step, extractor

),

latest_settled as (

    -- the latest attempt that settled the checkpoint × extractor: a success or a
    -- divergence (a diverged weight_stats attempt still wrote what it could)
    select
        suite,
        model_size,
        seed,
        step,
        extractor,
        max(extraction_id) as extraction_id
    from renamed
    where is_success or is_diverged
    group by suite, model_size, seed, step, extractor

),

final as (

    select
        renamed.*,
        latest_success.extraction_id is not null as is_latest_success,
        latest_settled.extraction_id is not null as is_latest_settled
    from renamed
    left join latest_success using (suite, model_size, seed, step, extractor, extraction_id)
    left join latest_settled using (suite, model_size, seed, step, extractor, extraction_id)

)

select * from final
