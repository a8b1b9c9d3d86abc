with

source as (

    -- by name with the dataset's full column list, so that columns older files lack
    -- (value_sample, nonfinite) read as null even when no file of the lake has them
    select * from {{ lake_source('weight_stats') }}
    union all by name
    select * from {{ lake_empty_relation('weight_stats') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

current_extractions as (

    -- the latest weight_stats attempt per checkpoint that succeeded or diverged (on
    -- NaN or inf weights it records what it can: shapes, hashes, the non-finite
    -- counts); rows of any other attempt (superseded, failed, or never recorded in
    -- the manifest) are dropped
    select
        suite,
        model_size,
        seed,
        step,
        extraction_id,
        is_diverged
    from manifest
    where
        extractor = 'weight_stats'
        and is_latest_settled

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(tensor_name as varchar) as tensor_name,
        cast(extraction_id as varchar) as extraction_id,

        ---------- tensor
        cast(kind as varchar) as kind,
        kind in ('all_weights', 'all_biases') as is_aggregate,
        cast(layer as integer) as layer,
        cast(n_rows as bigint) as n_rows,
        cast(n_cols as bigint) as n_cols,
        n_rows = n_cols as is_square,

        ---------- matrix statistics (null on the aggregate rows)
        cast(l1 as double) as l1,
        cast(l2 as double) as l2,
        cast(trace as double) as trace,
        cast(spectral as double) as spectral,
        cast(code_sparsity as double) as code_sparsity,
        cast(computational_sparsity as double) as computational_sparsity,
        cast(sv_mean as double) as sv_mean,
        cast(sv_var as double) as sv_var,

        ---------- distribution of the values
        cast(mean as double) as value_mean,
        cast(median as double) as value_median,
        cast(var as double) as value_var,

        ---------- identity
        cast(weight_hash as varchar) as weight_hash,

        ---------- values at fixed positions (null before weight_stats version 2)
        cast(value_sample as double[]) as value_sample,

        ---------- NaN or inf values (null in files written before the column existed)
        cast(nonfinite as bigint) as nonfinite

    from source

),

final as (

    select
        renamed.*,
        current_extractions.is_diverged
    from renamed
    inner join current_extractions using (suite, model_size, seed, step, extraction_id)

)

select * from final
