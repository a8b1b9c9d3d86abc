with

source as (

    select * from {{ lake_source('token_stats') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

current_extractions as (

    {{ latest_successful_extractions('manifest', 'token_stats') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(doc_id as bigint) as doc_id,
        cast(position as integer) as position,
        cast(extraction_id as varchar) as extraction_id,

        ---------- prediction
        cast(target_id as integer) as target_id,
        cast(target_logprob as double) as target_logprob,
        -cast(target_logprob as double) as token_loss,
        cast(entropy as double) as entropy,
        cast(target_rank as integer) as target_rank,
        topk_ids,
        topk_logprobs

    from source

),

final as (

    select renamed.*
    from renamed
    inner join current_extractions using (suite, model_size, seed, step, extraction_id)

)

select * from final
