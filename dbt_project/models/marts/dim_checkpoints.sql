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
        -- checkpoint outside every grid needs the ones that were attempted on it.
        -- A diverged extractor counts: the checkpoint is there, its values are not finite
        coalesce(
            bool_and(is_settled) filter (where is_expected),
            bool_and(is_settled)
        ) as is_present,
        bool_or(is_diverged) as is_diverged,
        -- the weights' own reason first (the runner gives it to every extractor),
        -- else an extractor's (non-finite logits, hidden states, log-likelihoods)
        arg_min(
            diverged_error,
            case when diverged_error like 'weights not finite%' then '0' else '1' end || extractor
        ) filter (where is_diverged) as diverged_reason,
        coalesce(bool_or(has_success) filter (where extractor = 'token_stats'), false)
            as has_token_stats,
        coalesce(bool_or(has_success) filter (where extractor = 'weight_stats'), false)
            as has_weight_stats,
        coalesce(
            bool_or(has_success) filter (where extractor in {{ eval_extractors() }}), false
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
        last_error,

        ---------- divergence (NaN or inf weights or outputs)
        is_diverged,
        diverged_reason

    from aggregated

)

select * from final
