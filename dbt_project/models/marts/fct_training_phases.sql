{#-
    The training map of every checkpoint: its state at the final horizon of its
    map (the HMM fitted on every checkpoint of the size, or an imported map).
-#}

with

map_states as (

    select * from {{ ref('int_training_map_states') }}

),

final_horizons as (

    select
        suite,
        model_size,
        map_source,
        max(horizon_step) as horizon_step
    from map_states
    group by suite, model_size, map_source

),

final as (

    select
        ---------- keys
        map_states.suite,
        map_states.model_size,
        map_states.map_source,
        map_states.seed,
        map_states.step,

        ---------- the checkpoint's state
        map_states.state,
        map_states.state_probability,
        map_states.score,

        ---------- the map
        map_states.n_states,
        map_states.horizon_step,
        map_states.checkpoint_index

    from map_states
    inner join final_horizons using (suite, model_size, map_source, horizon_step)

)

select * from final
