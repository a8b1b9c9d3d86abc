{#-
    Every training map, per horizon: the HMM fitted here (map_source 'hmm',
    int_training_map_states_fitted) and the maps imported by
    `polypythias ingest training-map` (map_source 'imported'), whose one horizon is
    their largest step and whose states and scores are the file's own.
-#}

with

fitted as (

    select * from {{ ref('int_training_map_states_fitted') }}

),

imported_rows as (

    select * from {{ ref('stg_lake__training_map_states') }}

),

imported_maps as (

    select
        suite,
        model_size,
        max(step) as horizon_step,
        count(distinct state) as n_states,
        count(distinct seed) as n_runs,
        count(*) as n_observations
    from imported_rows
    group by suite, model_size

),

imported_steps as (

    select
        suite,
        model_size,
        step,
        cast(row_number() over (partition by suite, model_size order by step) - 1 as bigint)
            as checkpoint_index
    from (select distinct suite, model_size, step from imported_rows) as steps

),

imported as (

    select
        imported_rows.suite,
        imported_rows.model_size,
        'imported' as map_source,
        imported_maps.horizon_step,
        imported_rows.seed,
        imported_rows.step,
        imported_steps.checkpoint_index,
        imported_rows.state,
        cast(null as double) as state_probability,
        imported_rows.score,
        cast(imported_maps.n_states as integer) as n_states,
        cast(null as integer) as n_features,
        cast(imported_maps.n_runs as integer) as n_runs,
        imported_maps.n_observations,
        cast(null as double) as log_likelihood,
        cast(null as double) as bic
    from imported_rows
    inner join imported_maps using (suite, model_size)
    inner join imported_steps using (suite, model_size, step)

),

unioned as (

    select
        suite,
        model_size,
        map_source,
        horizon_step,
        seed,
        step,
        checkpoint_index,
        state,
        state_probability,
        score,
        n_states,
        n_features,
        n_runs,
        n_observations,
        log_likelihood,
        bic
    from fitted

    union all

    select * from imported

),

final as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(map_source as varchar) as map_source,
        cast(horizon_step as bigint) as horizon_step,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,

        ---------- the checkpoint's state
        cast(checkpoint_index as bigint) as checkpoint_index,
        cast(state as integer) as state,
        cast(state_probability as double) as state_probability,
        cast(score as double) as score,

        ---------- the map at this horizon
        cast(n_states as integer) as n_states,
        cast(n_features as integer) as n_features,
        cast(n_runs as integer) as n_runs,
        cast(n_observations as bigint) as n_observations,
        cast(log_likelihood as double) as log_likelihood,
        cast(bic as double) as bic

    from unioned

)

select * from final
