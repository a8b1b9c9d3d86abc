with

source as (

    select * from {{ lake_source('manifest') }}

),

data_files as (

    select * from {{ ref('stg_lake__data_files') }}

),

recorded_files as (

    -- every data file a settled attempt records, with the rows it records
    select
        suite,
        model_size,
        seed,
        step,
        extractor,
        extraction_id,
        unnest(map_keys(rows)) as dataset,
        unnest(map_values(rows)) as recorded_rows
    from source
    where status in ('success', 'diverged')

),

damage as (

    -- a settled attempt whose files are missing or hold other row counts than it
    -- records: its data is not there, so it counts as neither success nor divergence
    select
        recorded_files.suite,
        recorded_files.model_size,
        recorded_files.seed,
        recorded_files.step,
        recorded_files.extractor,
        recorded_files.extraction_id,
        string_agg(
            recorded_files.dataset || '/suite=' || recorded_files.suite
            || '/model_size=' || recorded_files.model_size || '/seed=' || recorded_files.seed
            || '/step=' || recorded_files.step || '/' || recorded_files.extraction_id || '.parquet '
            || case
                when data_files.n_rows is null then 'is missing'
                else
                    'holds ' || data_files.n_rows || ' rows, the manifest records '
                    || recorded_files.recorded_rows
            end,
            '; ' order by recorded_files.dataset
        ) as damage
    from recorded_files
    left join data_files
        on recorded_files.dataset = data_files.dataset
        and recorded_files.suite = data_files.suite
        and recorded_files.model_size = data_files.model_size
        and recorded_files.seed = data_files.seed
        and recorded_files.step = data_files.step
        and recorded_files.extraction_id = data_files.extraction_id
    where data_files.n_rows is distinct from recorded_files.recorded_rows
    group by all

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
        cast(source.status as varchar) as status,
        source.status = 'success' and damage.damage is null as is_success,
        -- NaN or inf weights or outputs: settled (not retried), not a failure
        source.status = 'diverged' and damage.damage is null as is_diverged,
        -- settled, but its data files are missing or hold other row counts
        damage.damage is not null as is_damaged,
        damage.damage,
        cast(source.error as varchar) as error,
        source.rows as rows_written,

        ---------- timing
        source.started_at,
        source.finished_at,
        cast(source.duration_s as double) as duration_s,

        ---------- provenance
        cast(source.config_hash as varchar) as config_hash,
        cast(source.source as varchar) as checkpoint_source,
        -- safetensors | bin (a pickle read weights-only); null before it was recorded
        cast(source.weights_format as varchar) as weights_format,
        cast(source.device as varchar) as device,
        cast(source.host as varchar) as host,
        source.package_versions

    from source
    left join damage using (suite, model_size, seed, step, extractor, extraction_id)

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
