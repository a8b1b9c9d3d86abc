{#-
    The diverged checkpoints (dim_checkpoints.is_diverged: NaN or inf weights or
    outputs), the one list that the consistency marts and the outlier z-scores
    leave out of their statistics and int_diverged_seeds_counted counts.
-#}

with

dim_checkpoints as (

    select * from {{ ref('dim_checkpoints') }}

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        step

    from dim_checkpoints
    where is_diverged

)

select * from final
