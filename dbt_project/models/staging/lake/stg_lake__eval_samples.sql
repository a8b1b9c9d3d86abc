with

source as (

    select * from {{ lake_source('eval_samples') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

eval_results as (

    select * from {{ ref('stg_lake__eval_results') }}

),

successful_extractions as (

    select
        suite,
        model_size,
        seed,
        step,
        extraction_id,
        case extractor
            when 'evals' then 'extract'
            when 'lm_eval_ingest' then 'ingest'
        end as origin
    from manifest
    where extractor in ('evals', 'lm_eval_ingest')
        and is_success

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
        cast(filter as varchar) as filter,
        cast(doc_id as bigint) as doc_id,
        cast(extraction_id as varchar) as extraction_id,

        ---------- item
        cast(doc_hash as varchar) as doc_hash,
        cast(target as varchar) as target,
        cast(target_index as integer) as target_index,

        ---------- the model's answer
        cast(choice_loglikelihoods as double[]) as choice_loglikelihoods,
        cast(choice_is_greedy as boolean[]) as choice_is_greedy,
        cast(predicted as integer) as predicted,
        cast(metrics as map(varchar, double)) as metrics,
        -- DuckDB 2.0's map['key'] is the value itself (null when the key is absent)
        cast(metrics['acc'] as double) as acc

    from source

),

recorded as (

    select
        renamed.*,
        successful_extractions.origin
    from renamed
    inner join successful_extractions
        on renamed.suite = successful_extractions.suite
        and renamed.model_size = successful_extractions.model_size
        and renamed.seed = successful_extractions.seed
        and renamed.step = successful_extractions.step
        and renamed.extraction_id = successful_extractions.extraction_id

),

winners as (

    -- the evaluation whose results are current (see stg_lake__eval_results)
    select distinct
        suite,
        model_size,
        seed,
        step,
        task,
        num_fewshot,
        extraction_id
    from eval_results
    where not is_superseded

),

latest_samples as (

    -- for items whose evaluation left no results: the latest extraction
    select
        suite,
        model_size,
        seed,
        step,
        task,
        num_fewshot,
        max(extraction_id) as extraction_id
    from recorded
    group by suite, model_size, seed, step, task, num_fewshot

),

final as (

    select
        recorded.*,
        recorded.extraction_id
        <> coalesce(winners.extraction_id, latest_samples.extraction_id) as is_superseded
    from recorded
    inner join latest_samples
        on recorded.suite = latest_samples.suite
        and recorded.model_size = latest_samples.model_size
        and recorded.seed = latest_samples.seed
        and recorded.step = latest_samples.step
        and recorded.task = latest_samples.task
        and recorded.num_fewshot = latest_samples.num_fewshot
    left join winners
        on recorded.suite = winners.suite
        and recorded.model_size = winners.model_size
        and recorded.seed = winners.seed
        and recorded.step = winners.step
        and recorded.task = winners.task
        and recorded.num_fewshot = winners.num_fewshot

)

select * from final
