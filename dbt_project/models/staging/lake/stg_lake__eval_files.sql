with

source as (

    select * from {{ lake_source('eval_files') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

successful_ingests as (

    select
        suite,
        model_size,
        seed,
        step,
        extraction_id
    from manifest
    where
        extractor = 'lm_eval_ingest'
        and is_success

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(extraction_id as varchar) as extraction_id,
        cast(path as varchar) as path,

        ---------- the file
        cast(sha256 as varchar) as sha256,
        cast(format as varchar) as file_format,
        cast(samples_files as varchar[]) as samples_files,
        cast(n_tasks as bigint) as n_tasks,
        cast(num_fewshot as integer) as num_fewshot,
        evaluated_at,

        ---------- what the file says about itself
        cast(model_args as varchar) as model_args,
        cast(pretrained as varchar) as pretrained,
        cast(revision as varchar) as revision,
        cast(variant as varchar) as variant,

        ---------- data quality
        cast(finding as varchar) as finding

    from source

),

final as (

    select renamed.*
    from renamed
    inner join successful_ingests using (suite, model_size, seed, step, extraction_id)

)

select * from final
