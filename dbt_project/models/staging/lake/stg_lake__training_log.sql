with

source as (

    select * from {{ lake_source('training_log') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(extraction_id as varchar) as extraction_id,

        ---------- measures
        cast(loss as double) as loss,
        cast(lr as double) as lr,
        cast(grad_norm as double) as grad_norm,
        cast(tokens_seen as bigint) as tokens_seen

    from source

),

latest_files as (

    -- one file per run; a rewrite supersedes it: keep the greatest extraction id
    select
        suite,
        model_size,
        seed,
        max(extraction_id) as extraction_id
    from renamed
    group by suite, model_size, seed

),

final as (

    select renamed.*
    from renamed
    inner join latest_files using (suite, model_size, seed, extraction_id)

)

select * from final
