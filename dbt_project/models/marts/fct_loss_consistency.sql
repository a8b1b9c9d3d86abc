with

checkpoint_losses as (

    select * from {{ ref('fct_checkpoint_losses') }}

),

across_seeds as (

    select
        ---------- keys
        suite,
        model_size,
        step,

        ---------- spread of the per-run mean token loss across seeds
        count(*) as n_seeds,
        -- quantile_cont interpolates linearly, as numpy.quantile does by default
        quantile_cont(mean_token_loss, 0.5) as loss_median,
        quantile_cont(mean_token_loss, 0.25) as loss_q25,
        quantile_cont(mean_token_loss, 0.75) as loss_q75,
        avg(mean_token_loss) as loss_mean,
        stddev_samp(mean_token_loss) as loss_std,
        min(mean_token_loss) as loss_min,
        max(mean_token_loss) as loss_max

    from checkpoint_losses
    group by suite, model_size, step

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        {{ nominal_parameters('model_size') }} as nominal_parameters,
        step,

        ---------- statistics across seeds
        n_seeds,
        loss_median,
        loss_q25,
        loss_q75,
        loss_mean,
        loss_std,
        loss_min,
        loss_max
    from across_seeds

)

select * from final
