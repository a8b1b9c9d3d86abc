with

source as (

    select * from {{ lake_source('probe_predictions') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

current_extractions as (

    -- the latest successful probes attempt per checkpoint, as in stg_lake__probe_results
    select
        suite,
        model_size,
        seed,
        step,
        extraction_id
    from manifest
    where extractor = 'probes'
        and is_latest_success

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(task as varchar) as task,
        cast(layer as integer) as layer,
        cast(item_id as bigint) as item_id,
        cast(extraction_id as varchar) as extraction_id,

        ---------- labels
        cast(gold as varchar) as gold,
        cast(predicted as varchar) as predicted,
        predicted = gold as is_correct

    from source

),

final as (

    select renamed.*
    from renamed
    inner join current_extractions
        on renamed.suite = current_extractions.suite
        and renamed.model_size = current_extractions.model_size
        and renamed.seed = current_extractions.seed
        and renamed.step = current_extractions.step
        and renamed.extraction_id = current_extractions.extraction_id

)

select * from final
