with

checkpoint_losses as (

    select * from {{ ref('fct_checkpoint_losses') }}

),

token_losses as (

    select * from {{ ref('int_token_losses_aggregated_across_seeds') }}

),

seed_pairs as (

    select * from {{ ref('int_seed_pairs_correlated') }}

),

seeds as (

    select
        suite,
        model_size,
        step,
        count(*) as n_seeds
    from checkpoint_losses
    group by suite, model_size, step

),

token_spread as (

    -- only tokens scored in two seeds or more have a spread
    select
        suite,
        model_size,
        step,
        count(*) as n_tokens,
        avg(token_loss_std) as mean_token_loss_std
    from token_losses
    where n_seeds >= 2
    group by suite, model_size, step

),

pair_agreement as (

    -- only pairs with a defined correlation (two shared tokens, non-constant losses)
    select
        suite,
        model_size,
        step,
        count(*) as n_seed_pairs,
        avg(token_loss_pearson) as mean_pairwise_pearson
    from seed_pairs
    where token_loss_pearson is not null
    group by suite, model_size, step

),

final as (

    select
        ---------- keys
        seeds.suite,
        seeds.model_size,
        seeds.step,

        ---------- coverage
        seeds.n_seeds,
        coalesce(token_spread.n_tokens, 0) as n_tokens,

        ---------- token-level spread across seeds
        token_spread.mean_token_loss_std,

        ---------- agreement between seeds
        pair_agreement.mean_pairwise_pearson,
        coalesce(pair_agreement.n_seed_pairs, 0) as n_seed_pairs

    from seeds
    left join token_spread using (suite, model_size, step)
    left join pair_agreement using (suite, model_size, step)

)

select * from final
