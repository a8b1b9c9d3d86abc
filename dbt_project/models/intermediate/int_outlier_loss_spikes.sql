{#-
    Loss spikes in the training log. At each logged step, the loss is set against
    the `loss_spike_window` logged steps before it (the step itself left out):

        deviation = (loss − median(window)) / (1.4826 · MAD(window))
        MAD(window) = median(|loss_j − median(window)|) over the window

    1.4826 · MAD estimates the standard deviation of normal noise, so the
    deviation reads like a z-score that one earlier spike cannot inflate. A step
    is a spike when deviation > `loss_spike_k` and the step is after the run's
    warm-up (step ≥ `outlier_warmup_fraction` × the run's final step). Steps with
    fewer than `loss_spike_window` earlier steps, or a window whose MAD is 0, get
    no deviation.
-#}
{%- set settings = outlier_settings() -%}
{%- set window = settings.loss_spike_window -%}

with

training_log as (

    select * from {{ ref('stg_lake__training_log') }}

),

checkpoints as (

    select * from {{ ref('int_outlier_checkpoints') }}

),

losses as (

    select
        suite,
        model_size,
        seed,
        step,
        loss
    from training_log
    where loss is not null

),

windows as (

    select
        *,
        count(loss) over previous_steps as n_window,
        median(loss) over previous_steps as window_median,
        mad(loss) over previous_steps as window_mad
    from losses
    window previous_steps as (
        partition by suite, model_size, seed
        order by step
        rows between {{ window }} preceding and 1 preceding
    )

),

final_steps as (

    -- the run's last checkpoint; a run with a log but no checkpoint: its last logged step
    select
        windows.suite,
        windows.model_size,
        windows.seed,
        coalesce(max(checkpoints.final_step), max(windows.step)) as final_step
    from windows
    left join checkpoints using (suite, model_size, seed)
    group by windows.suite, windows.model_size, windows.seed

),

deviations as (

    select
        windows.*,
        1.4826 * windows.window_mad as robust_deviation,
        case
            when windows.n_window = {{ window }} and windows.window_mad > 0
                then (windows.loss - windows.window_median) / (1.4826 * windows.window_mad)
        end as deviation,
        final_steps.final_step,
        cast({{ settings.outlier_warmup_fraction }} as double) * final_steps.final_step
            as warmup_step
    from windows
    inner join final_steps using (suite, model_size, seed)

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        step,

        ---------- the loss against its window
        loss,
        n_window,
        window_median,
        robust_deviation,
        deviation,

        ---------- the run
        final_step,
        warmup_step,
        step >= warmup_step as is_after_warmup,

        ---------- the verdict
        coalesce(step >= warmup_step and deviation > {{ settings.loss_spike_k }}, false)
            as is_spike

    from deviations

)

select * from final
