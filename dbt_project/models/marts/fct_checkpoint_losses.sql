with

token_stats as (

    select * from {{ ref('stg_lake__token_stats') }}

),

aggregated as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        step,

        ---------- measures
        avg(token_loss) as mean_token_loss,
        count(*) as n_tokens

    from token_stats
    group by suite, model_size, seed, step

),

final as (

    select * from aggregated

)

select * from final
