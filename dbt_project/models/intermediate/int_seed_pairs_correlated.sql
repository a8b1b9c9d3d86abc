with

token_stats as (

    select * from {{ ref('stg_lake__token_stats') }}

),

token_losses as (

    select
        suite,
        model_size,
        seed,
        step,
        doc_id,
        position,
        token_loss
    from token_stats

),

paired as (

    -- every unordered pair of seeds of one size and step, on the tokens both scored
    select
        seed_a.suite,
        seed_a.model_size,
        seed_a.step,
        seed_a.seed as seed_a,
        seed_b.seed as seed_b,
        seed_a.token_loss as token_loss_a,
        seed_b.token_loss as token_loss_b
    from token_losses as seed_a
    inner join token_losses as seed_b
        on seed_a.suite = seed_b.suite
        and seed_a.model_size = seed_b.model_size
        and seed_a.step = seed_b.step
        and seed_a.doc_id = seed_b.doc_id
        and seed_a.position = seed_b.position
        and seed_a.seed < seed_b.seed

),

correlated as (

    select
        suite,
        model_size,
        step,
        seed_a,
        seed_b,
        count(*) as n_shared_tokens,
        corr(token_loss_a, token_loss_b) as pearson
    from paired
    group by suite, model_size, step, seed_a, seed_b

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        seed_a,
        seed_b,

        ---------- agreement
        n_shared_tokens,
        -- DuckDB's corr is NaN with fewer than two shared tokens or a constant loss
        case when isnan(pearson) then null else pearson end as token_loss_pearson

    from correlated

)

select * from final
