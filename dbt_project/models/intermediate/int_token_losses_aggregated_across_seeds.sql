with

token_stats as (

    select * from {{ ref('stg_lake__token_stats') }}

),

aggregated as (

    select
        ---------- keys
        suite,
        model_size,
        step,
        doc_id,
        position,

        ---------- spread of the token's loss across seeds
        count(*) as n_seeds,
        avg(token_loss) as token_loss_mean,
        -- sample standard deviation; null for a token scored in one seed only
        stddev_samp(token_loss) as token_loss_std

    from token_stats
    group by suite, model_size, step, doc_id, position

),

final as (

    select * from aggregated

)

select * from final
