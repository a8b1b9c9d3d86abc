{#-
    Every outlier signal of every run at every checkpoint t (int_outlier_checkpoints),
    from data up to t only. Per signal: score, threshold, whether it flags the run
    at t, and a plain-language detail of the score.

    - training_map: the number of departures of the run's state path from the
      other runs' (int_outlier_training_map_departures) in the latest map fitted on
      checkpoints up to t (the greatest horizon_step ≤ t; the fitted map where a
      size has both); flags at ≥ 1.
    - performance, final_loss, agreement: the leave-one-out z-score of the run
      against the other seeds at t (int_outlier_z_scores); performance and
      agreement flag below `performance_z_threshold` / `agreement_z_threshold`,
      final_loss (token loss: higher = worse) above `final_loss_z_threshold`.
    - loss_spikes: the largest deviation, in robust deviations, of a training-log
      step after warm-up and ≤ t (int_outlier_loss_spikes); flags when one of them
      is a spike (above `loss_spike_k`).
    - diverged: the number of the run's diverged checkpoints (NaN or inf weights
      or outputs) at steps ≤ t; flags at ≥ 1, naming the first diverged step and
      why. A divergence is no noise to wait out: it flags during warm-up too.

    Persistence: training_map, performance, final_loss and agreement flag at t only
    when they have been beyond their threshold at `signal_persistence` consecutive
    evaluated checkpoints up to t (warm-up checkpoints count: the state held there
    too), or at the run's final checkpoint while beyond (the run ends while it
    holds). A checkpoint without a score (off the evaluation grid, or not
    extracted) is skipped: it neither breaks nor extends the run. loss_spikes
    and diverged are events, not states: they flag as soon as they occur.

    No other signal flags a checkpoint before the run's warm-up (step <
    `outlier_warmup_fraction` × final step), but for an imported map (its states
    are given, not fitted on a few early checkpoints) the training_map signal. Diverged checkpoints have no z-score
    (int_outlier_z_scores leaves them out).
-#}
{%- set settings = outlier_settings() -%}

with

checkpoints as (

    select * from {{ ref('int_outlier_checkpoints') }}

),

training_map_departures as (

    select * from {{ ref('int_outlier_training_map_departures') }}

),

z_scores as (

    select * from {{ ref('int_outlier_z_scores') }}

),

loss_spikes as (

    select * from {{ ref('int_outlier_loss_spikes') }}

),

---------- training map

preferred_maps as (

    select
        suite,
        model_size,
        seed,
        horizon_step,
        cast(n_departures as double) as score,
        n_runs,
        map_source,
        departures
    from training_map_departures
    where is_preferred_source

),

training_map as (

    -- the latest map fitted on checkpoints up to t (a capped or imported map has
    -- fewer horizons than checkpoints)
    select
        checkpoints.suite,
        checkpoints.model_size,
        checkpoints.seed,
        checkpoints.step,
        preferred_maps.horizon_step,
        preferred_maps.score,
        preferred_maps.n_runs,
        preferred_maps.map_source,
        preferred_maps.departures
        || case
            when preferred_maps.horizon_step < checkpoints.step
                then
                    ' (' || preferred_maps.map_source || ' map fitted up to step '
                    || preferred_maps.horizon_step || ')'
            else ''
        end as departures
    from checkpoints
    asof inner join preferred_maps
        on checkpoints.suite = preferred_maps.suite
        and checkpoints.model_size = preferred_maps.model_size
        and checkpoints.seed = preferred_maps.seed
        and checkpoints.step >= preferred_maps.horizon_step

),

---------- loss spikes

loss_running as (

    -- per logged step: what the log says up to it, after warm-up
    select
        suite,
        model_size,
        seed,
        step as log_step,
        max(deviation) filter (where is_after_warmup) over up_to_here as max_deviation,
        arg_max(step, deviation) filter (where is_after_warmup) over up_to_here
            as max_deviation_step,
        count(*) filter (where is_spike) over up_to_here as n_spikes,
        min(step) filter (where is_spike) over up_to_here as first_spike_step
    from loss_spikes
    window up_to_here as (
        partition by suite, model_size, seed
        order by step
        rows between unbounded preceding and current row
    )

),

loss_at_checkpoints as (

    -- the log up to each checkpoint: its last logged step at or before it
    select
        checkpoints.suite,
        checkpoints.model_size,
        checkpoints.seed,
        checkpoints.step,
        loss_running.max_deviation,
        loss_running.max_deviation_step,
        loss_running.n_spikes,
        loss_running.first_spike_step
    from checkpoints
    asof inner join loss_running
        on checkpoints.suite = loss_running.suite
        and checkpoints.model_size = loss_running.model_size
        and checkpoints.seed = loss_running.seed
        and checkpoints.step >= loss_running.log_step

),

loss_spike_signal as (

    select
        loss_at_checkpoints.*,
        first_spike.loss as first_spike_loss,
        first_spike.window_median as first_spike_median,
        first_spike.deviation as first_spike_deviation
    from loss_at_checkpoints
    left join loss_spikes as first_spike
        on loss_at_checkpoints.suite = first_spike.suite
        and loss_at_checkpoints.model_size = first_spike.model_size
        and loss_at_checkpoints.seed = first_spike.seed
        and loss_at_checkpoints.first_spike_step = first_spike.step

),

---------- divergence

diverged_running as (

    -- per checkpoint: the run's diverged checkpoints up to it
    select
        suite,
        model_size,
        seed,
        step,
        count(*) filter (where is_diverged) over up_to_here as n_diverged,
        count(*) over up_to_here as n_checkpoints,
        min(step) filter (where is_diverged) over up_to_here as first_diverged_step,
        arg_min(diverged_reason, step) filter (where is_diverged) over up_to_here
            as first_diverged_reason
    from checkpoints
    window up_to_here as (
        partition by suite, model_size, seed
        order by step
        rows between unbounded preceding and current row
    )

),

---------- every signal at every checkpoint

signals as (

    select
        checkpoints.*,
        'training_map' as signal,
        training_map.score,
        cast(1 as double) as threshold,
        training_map.score >= 1 as is_beyond,
        case
            when training_map.score > 0
                then training_map.departures
            when training_map.score = 0
                then
                    'the state path follows the other runs'' ('
                    || training_map.n_runs || ' runs, ' || training_map.map_source || ' map'
                    || case
                        when training_map.horizon_step < training_map.step
                            then ' fitted up to step ' || training_map.horizon_step
                        else ''
                    end || ')'
        end as detail,
        -- an imported map's states are given, not fitted on a short prefix
        coalesce(training_map.map_source = 'imported', false) as flags_in_warmup,
        true as must_persist
    from checkpoints
    left join training_map using (suite, model_size, seed, step)

    union all

    {#- the z-score signals: performance and agreement are worse below their
        threshold, final_loss (token loss) above it -#}
    {%- for signal, beyond, threshold in [
        ('performance', '<', settings.performance_z_threshold),
        ('final_loss', '>', settings.final_loss_z_threshold),
        ('agreement', '<', settings.agreement_z_threshold),
    ] %}

        select
            checkpoints.*,
            '{{ signal }}' as signal,
            {{ signal }}.score,
            cast({{ threshold }} as double) as threshold,
            {{ signal }}.score {{ beyond }} {{ threshold }} as is_beyond,
            {{ signal }}.detail,
            false as flags_in_warmup,
            true as must_persist
        from checkpoints
        left join z_scores as {{ signal }}
            on checkpoints.suite = {{ signal }}.suite
            and checkpoints.model_size = {{ signal }}.model_size
            and checkpoints.seed = {{ signal }}.seed
            and checkpoints.step = {{ signal }}.step
            and {{ signal }}.signal = '{{ signal }}'

        union all
    {%- endfor %}

    select
        checkpoints.*,
        'loss_spikes' as signal,
        loss_spike_signal.max_deviation as score,
        cast({{ settings.loss_spike_k }} as double) as threshold,
        loss_spike_signal.n_spikes > 0 as is_beyond,
        case
            when loss_spike_signal.n_spikes > 0
                then
                    loss_spike_signal.n_spikes
                    || case
                        when loss_spike_signal.n_spikes = 1
                            then ' loss spike'
                        else ' loss spikes'
                    end
                    || ' after warm-up; the first at step ' || loss_spike_signal.first_spike_step
                    || ': loss ' || printf('%.4g', loss_spike_signal.first_spike_loss) || ', '
                    || printf('%.1f', loss_spike_signal.first_spike_deviation)
                    || ' robust deviations above the median '
                    || printf('%.4g', loss_spike_signal.first_spike_median)
                    || ' of the previous {{ settings.loss_spike_window }} steps; the largest '
                    || printf('%.1f', loss_spike_signal.max_deviation) || ' at step '
                    || loss_spike_signal.max_deviation_step
            when loss_spike_signal.max_deviation is not null
                then
                    'largest deviation ' || printf('%.1f', loss_spike_signal.max_deviation)
                    || ' robust deviations, at step ' || loss_spike_signal.max_deviation_step
        end as detail,
        false as flags_in_warmup,
        false as must_persist
    from checkpoints
    left join loss_spike_signal using (suite, model_size, seed, step)

    union all

    select
        checkpoints.*,
        'diverged' as signal,
        cast(diverged_running.n_diverged as double) as score,
        cast(1 as double) as threshold,
        diverged_running.n_diverged >= 1 as is_beyond,
        case
            when diverged_running.n_diverged > 0
                then
                    'diverged at step ' || diverged_running.first_diverged_step || ': '
                    || coalesce(diverged_running.first_diverged_reason, 'values not finite')
                    || ' (' || diverged_running.n_diverged || ' of the run''s '
                    || diverged_running.n_checkpoints || ' checkpoints up to step '
                    || diverged_running.step || ' diverged)'
            else
                'no diverged checkpoint among the run''s ' || diverged_running.n_checkpoints
                || ' up to step ' || diverged_running.step
        end as detail,
        true as flags_in_warmup,
        false as must_persist
    from checkpoints
    inner join diverged_running using (suite, model_size, seed, step)

),

---------- persistence

runs_of_checkpoints as (

    -- the checkpoints of a run × signal, numbered by how many were evaluated and
    -- not beyond up to each: consecutive beyond checkpoints share a number, and a
    -- checkpoint where the signal was not evaluated (no score: off the evaluation
    -- grid, or not extracted) neither breaks nor extends the run
    select
        signals.*,
        count(*) filter (where not signals.is_beyond) over up_to_here as n_not_beyond
    from signals
    window up_to_here as (
        partition by suite, model_size, seed, signal
        order by step
        rows between unbounded preceding and current row
    )

),

persisted as (

    select
        runs_of_checkpoints.*,
        -- consecutive evaluated checkpoints up to t at which the signal is beyond
        count(*) filter (where runs_of_checkpoints.is_beyond) over (
            partition by
                runs_of_checkpoints.suite,
                runs_of_checkpoints.model_size,
                runs_of_checkpoints.seed,
                runs_of_checkpoints.signal,
                runs_of_checkpoints.n_not_beyond
            order by runs_of_checkpoints.step
            rows between unbounded preceding and current row
        ) as n_consecutive_beyond
    from runs_of_checkpoints

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        signal,
        step,

        ---------- the run
        final_step,
        warmup_step,
        is_after_warmup,
        n_seeds,
        flags_in_warmup,

        ---------- the signal at this checkpoint
        score,
        threshold,
        n_consecutive_beyond,
        -- divergence and an imported map's departures flag during warm-up too
        coalesce(
            (is_after_warmup or flags_in_warmup)
            and is_beyond
            and (
                not must_persist
                or n_consecutive_beyond >= {{ settings.signal_persistence }}
                or step = final_step
            ),
            false
        ) as flags,
        detail

    from persisted

)

select * from final
