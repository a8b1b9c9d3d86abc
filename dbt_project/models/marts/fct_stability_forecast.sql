{#-
    Early warning: for every checkpoint t of every run, which runs each signal
    flags from data up to t (int_outlier_signals_by_step), set against how the
    run ends (fct_run_outliers): for the runs that are outliers at the end, how
    long before their final step each signal first flagged them (lead time), and
    which flags fell on runs that end stable (false alarms).
-#}

with

signals_by_step as (

    select * from {{ ref('int_outlier_signals_by_step') }}

),

run_outliers as (

    select * from {{ ref('fct_run_outliers') }}

),

run_ends as (

    select
        suite,
        model_size,
        seed,
        bool_or(is_outlier) as is_outlier_at_end
    from run_outliers
    group by suite, model_size, seed

),

first_flags as (

    select
        suite,
        model_size,
        seed,
        signal,
        min(step) filter (where flags) as first_flag_step
    from signals_by_step
    group by suite, model_size, seed, signal

),

final as (

    select
        ---------- keys
        signals_by_step.suite,
        signals_by_step.model_size,
        signals_by_step.seed,
        signals_by_step.signal,
        signals_by_step.step,

        ---------- the signal at step t, from data up to t
        signals_by_step.score,
        signals_by_step.threshold,
        signals_by_step.flags,

        ---------- how the run ends
        signals_by_step.final_step,
        coalesce(run_ends.is_outlier_at_end, false) as is_outlier_at_end,

        ---------- early warning (the same on every step of the run × signal)
        first_flags.first_flag_step,
        case
            when coalesce(run_ends.is_outlier_at_end, false)
                then signals_by_step.final_step - first_flags.first_flag_step
        end as lead_steps,
        signals_by_step.flags and not coalesce(run_ends.is_outlier_at_end, false)
            as is_false_alarm

    from signals_by_step
    left join run_ends using (suite, model_size, seed)
    inner join first_flags using (suite, model_size, seed, signal)

)

select * from final
