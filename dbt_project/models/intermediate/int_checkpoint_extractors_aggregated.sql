with

suite_grid as (

    select * from {{ ref('stg_lake__suite_grid') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

expected as (

    select distinct
        suite,
        model_size,
        seed,
        step,
        extractor
    from suite_grid

),

attempts as (

    select
        suite,
        model_size,
        seed,
        step,
        extractor,
        count(*) as n_attempts,
        count(*) filter (where is_success) as n_successes,
        -- a diverged attempt (NaN or inf values) is settled, not a failure; a damaged
        -- one (settled, its data files missing) is counted apart
        count(*) filter (where not is_success and not is_diverged and not is_damaged) as n_failed_attempts,
        count(*) filter (where is_diverged) as n_diverged_attempts,
        count(*) filter (where is_damaged) as n_damaged_attempts,
        max(extraction_id) filter (where is_latest_success) as current_extraction_id,
        max(extraction_id) filter (where not is_success and not is_diverged and not is_damaged)
            as last_failed_extraction_id,
        -- arg_max skips null errors: the newest failure that says what went wrong
        arg_max(error, extraction_id) filter (where not is_success and not is_diverged and not is_damaged)
            as last_error,
        -- diverged now: the latest settled attempt (success or diverged) diverged
        coalesce(bool_or(is_diverged) filter (where is_latest_settled), false) as is_diverged,
        max(error) filter (where is_latest_settled and is_diverged) as diverged_error,
        -- damaged now: the newest attempt recorded as settled has damaged data (a
        -- later intact success or divergence repairs it: extract redoes damage)
        case
            when
                max(extraction_id) filter (where is_damaged)
                > coalesce(max(extraction_id) filter (where is_success or is_diverged), '')
                then arg_max(damage, extraction_id) filter (where is_damaged)
        end as damage
    from manifest
    group by suite, model_size, seed, step, extractor

),

joined as (

    select
        ---------- keys
        coalesce(expected.suite, attempts.suite) as suite,
        coalesce(expected.model_size, attempts.model_size) as model_size,
        coalesce(expected.seed, attempts.seed) as seed,
        coalesce(expected.step, attempts.step) as step,
        coalesce(expected.extractor, attempts.extractor) as extractor,

        ---------- expectation
        expected.extractor is not null as is_expected,

        ---------- attempts
        coalesce(attempts.n_attempts, 0) as n_attempts,
        coalesce(attempts.n_successes, 0) as n_successes,
        coalesce(attempts.n_failed_attempts, 0) as n_failed_attempts,
        coalesce(attempts.n_successes, 0) > 0 as has_success,
        coalesce(attempts.n_diverged_attempts, 0) as n_diverged_attempts,
        coalesce(attempts.is_diverged, false) as is_diverged,
        coalesce(attempts.n_damaged_attempts, 0) as n_damaged_attempts,
        -- nothing left to do: a success or a final divergence
        coalesce(attempts.n_successes, 0) > 0 or coalesce(attempts.is_diverged, false)
            as is_settled,
        attempts.current_extraction_id,
        attempts.last_failed_extraction_id,
        attempts.last_error,
        attempts.diverged_error,
        attempts.damage

    from expected
    full outer join attempts
        on expected.suite = attempts.suite
        and expected.model_size = attempts.model_size
        and expected.seed = attempts.seed
        and expected.step = attempts.step
        and expected.extractor = attempts.extractor

),

final as (

    select * from joined

)

select * from final
