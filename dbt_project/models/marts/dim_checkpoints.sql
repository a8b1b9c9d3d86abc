with

checkpoint_extractors as (

    select * from {{ ref('int_checkpoint_extractors_aggregated') }}

),

aggregated as (

    select
        suite,
        model_size,
        seed,
        step,
        bool_or(is_expected) as is_expected,
        -- the extractors a checkpoint needs are the ones its suite grid lists; a
        -- checkpoint outside every grid needs the ones that were attempted on it
        coalesce(
            bool_and(has_success) filter (where is_expected),
            bool_and(has_success)
        ) as is_present,
        coalesce(bool_or(has_success) filter (where extractor = 'token_stats'), false)
            as has_token_stats,
        coalesce(bool_or(has_success) filter (where extractor = 'weight_stats'), false)
            as has_weight_stats,
        coalesce(
            bool_or(has_success) filter (where extractor in ('evals', 'lm_eval_ingest')), false
        ) as has_eval_results,
        cast(sum(n_failed_attempts) as bigint) as n_failed_attempts,
        arg_max(last_error, last_failed_extraction_id || '/' || extractor) as last_error
    from checkpoint_extractors
    group by suite, model_size, seed, step

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        step,

        ---------- completeness
        is_expected,
        is_present,
        has_token_stats,
        has_weight_stats,
        has_eval_results,

        ---------- failures
        n_failed_attempts,
        last_error

    from aggregated

)

select * from final
