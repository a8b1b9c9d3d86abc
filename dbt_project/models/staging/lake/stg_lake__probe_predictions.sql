with

source as (

    select * from {{ lake_source('probe_predictions') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

current_extractions as (

    {{ latest_successful_extractions('manifest', 'probes') }}

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
    inner join current_extractions using (suite, model_size, seed, step, extraction_id)

)

select * from final
