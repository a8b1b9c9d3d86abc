{#-
    Every training map, per horizon: the HMM fitted here (map_source 'hmm',
    int_training_map_states_fitted) and the maps imported by
    `polypythias ingest training-map` (map_source 'imported'), whose states and
    scores are the file's own. An imported map has a horizon at each of its steps:
    the prefix of its rows up to that step (no refit is needed: the states are
    given), so that what is said about step t uses no later state.
-#}

with

fitted as (

    select * from {{ ref('int_training_map_states_fitted') }}

),

imported_rows as (

    select * from {{ ref('stg_lake__training_map_states') }}

),

imported_steps as (

    -- an imported map's steps, each the horizon of the map's prefix up to it
    select
        suite,
        model_size,
        step,
        cast(row_number() over (partition by suite, model_size order by step) - 1 as bigint)
            as checkpoint_index
    from (select distinct
        suite,
        model_size,
        step
    from imported_rows) as steps

),

imported_prefixes as (

    -- every row of an imported map at every horizon from its step on
    select
        imported_rows.suite,
        imported_rows.model_size,
        horizons.step as horizon_step,
        imported_rows.seed,
        imported_rows.step,
        imported_rows.state,
        imported_rows.score
    from imported_rows
    inner join imported_steps as horizons
        on imported_rows.suite = horizons.suite
        and imported_rows.model_size = horizons.model_size
        and imported_rows.step <= horizons.step

),

imported_maps as (

    select
        suite,
        model_size,
        horizon_step,
        count(distinct state) as n_states,
        count(distinct seed) as n_runs,
        count(*) as n_observations
    from imported_prefixes
    group by suite, model_size, horizon_step

),

imported as (

    select
        imported_prefixes.suite,
        imported_prefixes.model_size,
        'imported' as map_source,
        imported_prefixes.horizon_step,
        imported_prefixes.seed,
        imported_prefixes.step,
        imported_steps.checkpoint_index,
        imported_prefixes.state,
        cast(null as double) as state_probability,
        imported_prefixes.score,
        cast(imported_maps.n_states as integer) as n_states,
        cast(null as integer) as n_features,
        cast(imported_maps.n_runs as integer) as n_runs,
        imported_maps.n_observations,
        cast(null as double) as log_likelihood,
        cast(null as double) as bic
    from imported_prefixes
    inner join imported_maps using (suite, model_size, horizon_step)
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
