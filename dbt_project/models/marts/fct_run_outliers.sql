{#-
    Which runs are outliers, by which signal, and why: per run and signal, the
    score, its threshold, whether it fires and a plain-language reason
    (int_outlier_signals_by_step holds the rules).

    - training_map, final_loss, agreement: the signal at the run's last
      checkpoint where it has a score (for a complete run: its final step). A
      firing training_map's reason names the first departure and its step, then
      every kind of departure first found later, with the step it was found at.
    - performance: the lowest mean z-score after warm-up; fires when any
      checkpoint after warm-up is below the threshold.
    - loss_spikes: the largest deviation of any logged step after warm-up (the
      whole log, also past the last checkpoint); fires on any spike.
    - diverged: the run's diverged checkpoints (NaN or inf weights or outputs),
      counted at its last checkpoint; fires on any, naming the first.

    first_step is the first step at which the signal fires, from data up to that
    step: the first flagged checkpoint, for loss_spikes the first spike's logged
    step; null when the signal does not fire.
-#}
{%- set settings = outlier_settings() -%}

with

signals_by_step as (

    select * from {{ ref('int_outlier_signals_by_step') }}

),

loss_spikes as (

    select * from {{ ref('int_outlier_loss_spikes') }}

),

checkpoints as (

    select * from {{ ref('int_outlier_checkpoints') }}

),

training_map_departures as (

    select * from {{ ref('int_outlier_training_map_departures') }}
    where is_preferred_source

),

signal_names as (

    select unnest(['training_map', 'performance', 'loss_spikes', 'final_loss', 'agreement', 'diverged'])
        as signal

),

logged_runs as (

    select
        suite,
        model_size,
        seed,
        max(final_step) as final_step
    from loss_spikes
    group by suite, model_size, seed

),

runs as (

    -- every run with a checkpoint or a training log
    select
        coalesce(checkpoint_runs.suite, logged_runs.suite) as suite,
        coalesce(checkpoint_runs.model_size, logged_runs.model_size) as model_size,
        coalesce(checkpoint_runs.seed, logged_runs.seed) as seed,
        coalesce(checkpoint_runs.final_step, logged_runs.final_step) as final_step
    from (
        select
            suite,
            model_size,
            seed,
            max(final_step) as final_step
        from checkpoints
        group by suite, model_size, seed
    ) as checkpoint_runs
    full outer join logged_runs
        on checkpoint_runs.suite = logged_runs.suite
        and checkpoint_runs.model_size = logged_runs.model_size
        and checkpoint_runs.seed = logged_runs.seed

),

size_seeds as (

    select
        suite,
        model_size,
        count(*) as n_seeds
    from runs
    group by suite, model_size

),

---------- the signals read at the run's last scored checkpoint

at_end as (

    select
        suite,
        model_size,
        seed,
        signal,
        arg_max(score, step) as score,
        any_value(threshold) as threshold,
        arg_max(flags, step) as fires,
        arg_max(detail, step) as detail
    from signals_by_step
    where
        signal in ('training_map', 'final_loss', 'agreement', 'diverged')
        and score is not null
    group by all

),

---------- performance: its worst checkpoint after warm-up

performance as (

    select
        suite,
        model_size,
        seed,
        signal,
        min(score) as score,
        any_value(threshold) as threshold,
        bool_or(flags) as fires,
        arg_min(step, score) as lowest_step,
        min(step) filter (where flags) as first_flag_step,
        arg_min(detail, step) filter (where flags) as first_flag_detail
    from signals_by_step
    where
        signal = 'performance'
        and is_after_warmup
        and score is not null
    group by all

),

---------- loss spikes: the whole log after warm-up

loss_log as (

    select
        suite,
        model_size,
        seed,
        max(deviation) as score,
        arg_max(step, deviation) as max_deviation_step,
        count(*) filter (where is_spike) as n_spikes,
        min(step) filter (where is_spike) as first_spike_step,
        arg_min(loss, step) filter (where is_spike) as first_spike_loss,
        arg_min(window_median, step) filter (where is_spike) as first_spike_median,
        arg_min(deviation, step) filter (where is_spike) as first_spike_deviation
    from loss_spikes
    where
        is_after_warmup
        and deviation is not null
    group by all

),

first_flags as (

    select
        suite,
        model_size,
        seed,
        signal,
        min(step) filter (where flags) as first_flag_step
    from signals_by_step
    group by all

),

---------- training map: the first departure, then each later kind

departures_listed as (

    select
        suite,
        model_size,
        seed,
        horizon_step,
        unnest(departure_list) as departure
    from training_map_departures

),

kinds_found as (

    -- the first horizon at which each kind of departure shows in a run
    select
        departures_listed.suite,
        departures_listed.model_size,
        departures_listed.seed,
        departure.kind,
        min(horizon_step) as horizon_step
    from departures_listed
    group by all

),

later_departures as (

    -- the kinds first found after the run's first flag, each in its words there
    select
        kinds_found.suite,
        kinds_found.model_size,
        kinds_found.seed,
        string_agg(
            departures_listed.departure.departure || ' (found at step ' || kinds_found.horizon_step || ')',
            '; ' order by kinds_found.horizon_step, departures_listed.departure.departure
        ) as later_departures
    from kinds_found
    inner join departures_listed
        on kinds_found.suite = departures_listed.suite
        and kinds_found.model_size = departures_listed.model_size
        and kinds_found.seed = departures_listed.seed
        and kinds_found.horizon_step = departures_listed.horizon_step
        and kinds_found.kind = departures_listed.departure.kind
    inner join first_flags
        on kinds_found.suite = first_flags.suite
        and kinds_found.model_size = first_flags.model_size
        and kinds_found.seed = first_flags.seed
        and first_flags.signal = 'training_map'
    where kinds_found.horizon_step > first_flags.first_flag_step
    group by all

),

training_map_first as (

    select
        suite,
        model_size,
        seed,
        arg_min(detail, step) as first_flag_detail
    from signals_by_step
    where
        signal = 'training_map'
        and flags
    group by all

),

---------- one row per run × signal

scored as (

    select
        runs.suite,
        runs.model_size,
        runs.seed,
        signal_names.signal,
        size_seeds.n_seeds,
        case signal_names.signal
            when 'performance' then performance.score
            when 'loss_spikes' then loss_log.score
            else at_end.score
        end as score,
        case signal_names.signal
            when 'training_map' then cast(1 as double)
            when 'performance' then cast({{ settings.performance_z_threshold }} as double)
            when 'loss_spikes' then cast({{ settings.loss_spike_k }} as double)
            when 'final_loss' then cast({{ settings.final_loss_z_threshold }} as double)
            when 'agreement' then cast({{ settings.agreement_z_threshold }} as double)
            when 'diverged' then cast(1 as double)
        end as threshold,
        coalesce(
            case signal_names.signal
                when 'performance' then performance.fires
                when 'loss_spikes' then loss_log.n_spikes > 0
                else at_end.fires
            end,
            false
        ) as fires,
        case signal_names.signal
            when 'performance' then performance.first_flag_step
            when 'loss_spikes' then loss_log.first_spike_step
            else first_flags.first_flag_step
        end as first_fire_step,
        at_end.detail as end_detail,
        training_map_first.first_flag_detail as training_map_first_detail,
        later_departures.later_departures,
        performance.lowest_step as performance_lowest_step,
        performance.first_flag_detail as performance_first_detail,
        loss_log.max_deviation_step,
        loss_log.n_spikes,
        loss_log.first_spike_loss,
        loss_log.first_spike_median,
        loss_log.first_spike_deviation
    from runs
    cross join signal_names
    inner join size_seeds using (suite, model_size)
    left join at_end using (suite, model_size, seed, signal)
    left join performance using (suite, model_size, seed, signal)
    left join loss_log using (suite, model_size, seed)
    left join first_flags using (suite, model_size, seed, signal)
    left join training_map_first using (suite, model_size, seed)
    left join later_departures using (suite, model_size, seed)

),

reasoned as (

    select
        *,
        case
            ---------- no score
            when score is null and signal not in ('loss_spikes', 'diverged') and n_seeds < 3
                then
                    'no score: ' || n_seeds || ' seed'
                    || case when n_seeds = 1 then '' else 's' end
                    || ' of ' || model_size || ', a comparison needs 3'
            when score is null
                then 'no score: ' || case signal
                    when 'training_map' then 'the run is in no training map of 3 runs or more'
                    when 'performance'
                        then
                            'no ' || '{{ settings.performance_metric }}'
                            || ' of the performance tasks after warm-up with 3 seeds'
                    when 'loss_spikes' then 'no training-log step after warm-up with a full window'
                    when 'final_loss' then 'no token losses with 3 seeds'
                    when 'agreement' then 'no item-level predictions with 3 seeds'
                    when 'diverged' then 'no extracted checkpoint'
                end

            ---------- fires
            when fires and signal = 'training_map'
                then
                    training_map_first_detail || ' (first at step ' || first_fire_step || ')'
                    || coalesce('; later: ' || later_departures, '')
            when fires and signal = 'performance'
                then
                    performance_first_detail || ', first flagged below ' || printf('%g', threshold)
                    || ' after warm-up; lowest ' || printf('%.2f', score) || ' at step '
                    || performance_lowest_step
            when fires and signal = 'loss_spikes'
                then
                    n_spikes || case when n_spikes = 1 then ' loss spike' else ' loss spikes' end
                    || ' after warm-up; the first at step ' || first_fire_step || ': loss '
                    || printf('%.4g', first_spike_loss) || ', '
                    || printf('%.1f', first_spike_deviation)
                    || ' robust deviations above the median '
                    || printf('%.4g', first_spike_median)
                    || ' of the previous {{ settings.loss_spike_window }} steps; the largest '
                    || printf('%.1f', score) || ' at step ' || max_deviation_step
            when fires
                then end_detail

            ---------- within threshold
            when signal = 'training_map'
                then 'within threshold: ' || end_detail
            when signal = 'performance'
                then
                    'within threshold: lowest mean z-score ' || printf('%.2f', score)
                    || ' after warm-up, at step ' || performance_lowest_step
                    || ' (fires below ' || printf('%g', threshold) || ')'
            when signal = 'loss_spikes'
                then
                    'within threshold: largest deviation ' || printf('%.1f', score)
                    || ' robust deviations after warm-up, at step ' || max_deviation_step
                    || ' (fires above ' || printf('%g', threshold) || ')'
            when signal = 'final_loss'
                then
                    'within threshold: ' || end_detail || ' (fires above '
                    || printf('%g', threshold) || ')'
            when signal = 'agreement'
                then
                    'within threshold: ' || end_detail || ' (fires below '
                    || printf('%g', threshold) || ')'
            when signal = 'diverged'
                then 'within threshold: ' || end_detail
        end as reason
    from scored

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        signal,

        ---------- the signal
        score,
        threshold,
        fires,
        case when fires then first_fire_step end as first_step,
        reason,

        ---------- the run
        bool_or(fires) over run_signals as is_outlier,
        cast(count(*) filter (where fires) over run_signals as integer) as n_signals_firing

    from reasoned
    window run_signals as (partition by suite, model_size, seed)

)

select * from final
