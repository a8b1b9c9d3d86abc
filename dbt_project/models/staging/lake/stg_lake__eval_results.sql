with

source as (

    select * from {{ lake_source('eval_results') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

successful_extractions as (

    {{ successful_eval_extractions('manifest') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(task as varchar) as task,
        cast(num_fewshot as integer) as num_fewshot,
        cast(metric as varchar) as metric,
        cast(filter as varchar) as filter,
        cast(extraction_id as varchar) as extraction_id,

        ---------- measures
        cast(value as double) as value,
        cast(stderr as double) as stderr,
        cast(n_samples as bigint) as n_samples,

        ---------- provenance
        cast(task_version as varchar) as task_version,
        cast(harness_version as varchar) as harness_version,
        evaluated_at

    from source

),

recorded as (

    select
        renamed.*,
        successful_extractions.origin
    from renamed
    inner join successful_extractions using (suite, model_size, seed, step, extraction_id)

),

evaluations as (

    -- one evaluation = one extraction's results for a checkpoint × task × num_fewshot
    select
        suite,
        model_size,
        seed,
        step,
        task,
        num_fewshot,
        extraction_id,
        max(evaluated_at) as evaluated_at
    from recorded
    group by suite, model_size, seed, step, task, num_fewshot, extraction_id

),

ranked as (

    -- the newest evaluation wins; on a tie, the larger (later) extraction id
    select
        *,
        row_number() over (
            partition by suite, model_size, seed, step, task, num_fewshot
            order by evaluated_at desc, extraction_id desc
        ) as recency_rank
    from evaluations

),

final as (

    select
        recorded.*,
        ranked.recency_rank > 1 as is_superseded
    from recorded
    inner join ranked using (suite, model_size, seed, step, task, num_fewshot, extraction_id)

)

select * from final
