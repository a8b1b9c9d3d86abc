{#-
    The loss spikes themselves: every logged training step that
    int_outlier_loss_spikes calls a spike (after the run's warm-up, the loss more
    than `loss_spike_k` robust deviations above the median of the previous
    `loss_spike_window` logged steps), with the loss, its window and its score.
    The rule lives in int_outlier_loss_spikes; this mart only keeps its spikes.
-#}
{%- set settings = outlier_settings() -%}

with

loss_spikes as (

    select * from {{ ref('int_outlier_loss_spikes') }}

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
        window_median,
        robust_deviation,
        deviation,
        cast({{ settings.loss_spike_k }} as double) as threshold,

        ---------- the run
        is_after_warmup

    from loss_spikes
    where is_spike

)

select * from final
