{#-
    Diverged checkpoints (dim_checkpoints.is_diverged: NaN or inf weights or
    outputs) are counted per step (n_seeds_diverged) and left out of every
    statistic: n_seeds and the spread are over the finite seeds only. A step whose
    every seed diverged still has a row, with n_seeds 0 and null statistics.
-#}

with

checkpoint_losses as (

    select * from {{ ref('fct_checkpoint_losses') }}

),

diverged_checkpoints as (

    select * from {{ ref('int_diverged_checkpoints') }}

),

diverged_seeds_counted as (

    select * from {{ ref('int_diverged_seeds_counted') }}

),

finite_losses as (

    select checkpoint_losses.*
    from checkpoint_losses
    anti join diverged_checkpoints using (suite, model_size, seed, step)

),

diverged_seeds as (

    -- the diverged checkpoints token_stats was expected of or attempted on
    select
        suite,
        model_size,
        step,
        n_seeds_diverged
    from diverged_seeds_counted
    where extractor_group = 'token_stats'

),

across_seeds as (

    select
        ---------- keys
        suite,
        model_size,
        step,

        ---------- spread of the per-run mean token loss across the finite seeds
        count(*) as n_seeds,
        {{ spread_across_seeds('mean_token_loss', 'loss') }}

    from finite_losses
    group by suite, model_size, step

),

steps as (

    select
        suite,
        model_size,
        step
    from across_seeds
    union
    select
        suite,
        model_size,
        step
    from diverged_seeds

),

final as (

    select
        ---------- keys
        steps.suite,
        steps.model_size,
        {{ nominal_parameters('steps.model_size') }} as nominal_parameters,
        steps.step,

        ---------- statistics across the finite seeds
        coalesce(across_seeds.n_seeds, 0) as n_seeds,
        across_seeds.loss_median,
        across_seeds.loss_q25,
        across_seeds.loss_q75,
        across_seeds.loss_mean,
        across_seeds.loss_std,
        across_seeds.loss_min,
        across_seeds.loss_max,

        ---------- left out
        coalesce(diverged_seeds.n_seeds_diverged, 0) as n_seeds_diverged

    from steps
    left join across_seeds using (suite, model_size, step)
    left join diverged_seeds using (suite, model_size, step)

)

select * from final
