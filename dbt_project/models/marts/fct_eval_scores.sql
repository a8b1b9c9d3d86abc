with

eval_results as (

    select * from {{ ref('stg_lake__eval_results') }}

),

eval_files as (

    select * from {{ ref('stg_lake__eval_files') }}

),

file_variants as (

    -- an ingested evaluation's variant is what its file's model name says
    select
        suite,
        model_size,
        seed,
        step,
        extraction_id,
        min(variant) as variant
    from eval_files
    group by suite, model_size, seed, step, extraction_id

),

current_results as (

    select * from eval_results
    where not is_superseded

),

final as (

    select
        ---------- keys
        current_results.suite,
        current_results.model_size,
        {{ nominal_parameters('current_results.model_size') }} as nominal_parameters,
        current_results.seed,
        current_results.step,
        current_results.task,
        current_results.metric,
        current_results.filter,
        current_results.num_fewshot,

        ---------- measures
        current_results.value,
        current_results.stderr,
        current_results.n_samples,

        ---------- provenance
        current_results.task_version,
        current_results.harness_version,
        current_results.evaluated_at,
        current_results.origin,
        -- the `evals` extractor runs the suite's own checkpoints: standard
        coalesce(file_variants.variant, 'standard') as variant,
        current_results.extraction_id

    from current_results
    left join file_variants using (suite, model_size, seed, step, extraction_id)

)

select * from final
