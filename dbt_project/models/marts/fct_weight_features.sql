{#-
    Diverged checkpoints (dim_checkpoints.is_diverged) are left out: with NaN or
    inf weights the features are undefined, and a checkpoint whose outputs
    diverged is left out too, as in every mart. The training map (HMM) fitted on
    these features therefore never sees them.
-#}

with

all_weight_stats as (

    select * from {{ ref('stg_lake__weight_stats') }}

),

dim_checkpoints as (

    select * from {{ ref('dim_checkpoints') }}

),

weight_stats as (

    select all_weight_stats.*
    from all_weight_stats
    inner join dim_checkpoints using (suite, model_size, seed, step)
    where
        not dim_checkpoints.is_diverged
        and not all_weight_stats.is_diverged

),

checkpoints as (

    select distinct
        suite,
        model_size,
        seed,
        step
    from weight_stats

),

matrices as (

    select
        suite,
        model_size,
        seed,
        step,
        count(*) as n_matrices,
        count(*) filter (where is_square) as n_square_matrices,
        avg(l1) as l1_mean,
        avg(l2) as l2_mean,
        avg(spectral) as spectral_mean,
        avg(code_sparsity) as code_sparsity_mean,
        avg(sv_mean) as sv_mean_mean,
        avg(sv_var) as sv_var_mean,
        avg(trace) filter (where is_square) as trace_mean,
        avg(computational_sparsity) filter (where is_square) as computational_sparsity_mean
    from weight_stats
    where not is_aggregate
    group by suite, model_size, seed, step

),

distributions as (

    select
        suite,
        model_size,
        seed,
        step,
        max(value_mean) filter (where kind = 'all_weights') as weights_mean,
        max(value_median) filter (where kind = 'all_weights') as weights_median,
        max(value_var) filter (where kind = 'all_weights') as weights_var,
        max(value_mean) filter (where kind = 'all_biases') as biases_mean,
        max(value_median) filter (where kind = 'all_biases') as biases_median,
        max(value_var) filter (where kind = 'all_biases') as biases_var
    from weight_stats
    where is_aggregate
    group by suite, model_size, seed, step

),

final as (

    select
        ---------- keys
        checkpoints.suite,
        checkpoints.model_size,
        checkpoints.seed,
        checkpoints.step,

        ---------- matrices averaged over
        coalesce(matrices.n_matrices, 0) as n_matrices,
        coalesce(matrices.n_square_matrices, 0) as n_square_matrices,

        ---------- per-matrix statistics, mean over the checkpoint's matrices
        matrices.l1_mean,
        matrices.l2_mean,
        matrices.spectral_mean,
        matrices.code_sparsity_mean,
        matrices.sv_mean_mean,
        matrices.sv_var_mean,
        matrices.trace_mean,
        matrices.computational_sparsity_mean,

        ---------- distribution of every weight and every bias value
        distributions.weights_mean,
        distributions.weights_median,
        distributions.weights_var,
        distributions.biases_mean,
        distributions.biases_median,
        distributions.biases_var

    from checkpoints
    left join matrices using (suite, model_size, seed, step)
    left join distributions using (suite, model_size, seed, step)

)

select * from final
