{#-
    The state changes of the training maps: between consecutive checkpoints of a
    run in fct_training_phases, every change of state, counted per map and
    (from_state, to_state).
-#}

with

phases as (

    select * from {{ ref('fct_training_phases') }}

),

runs_per_map as (

    select
        suite,
        model_size,
        map_source,
        count(distinct seed) as n_runs_of_map
    from phases
    group by suite, model_size, map_source

),

consecutive as (

    -- each checkpoint with the state at the run's previous checkpoint
    select
        suite,
        model_size,
        map_source,
        seed,
        step,
        lag(state) over (
            partition by suite, model_size, map_source, seed order by step
        ) as from_state,
        state as to_state
    from phases

),

changes as (

    select *
    from consecutive
    where
        from_state is not null
        and from_state != to_state

),

transitions as (

    select
        suite,
        model_size,
        map_source,
        from_state,
        to_state,
        count(*) as n_transitions,
        count(distinct seed) as n_runs,
        list(distinct seed order by seed) as seeds,
        min(step) as first_step,
        -- linear interpolation, as numpy.quantile's default
        quantile_cont(cast(step as double), 0.5) as median_step
    from changes
    group by suite, model_size, map_source, from_state, to_state

),

final as (

    select
        ---------- keys
        transitions.suite,
        transitions.model_size,
        transitions.map_source,
        transitions.from_state,
        transitions.to_state,

        ---------- how often, and by whom
        transitions.n_transitions,
        transitions.n_runs,
        transitions.seeds,
        runs_per_map.n_runs_of_map,

        ---------- when (the step of the checkpoint the run enters to_state at)
        transitions.first_step,
        transitions.median_step

    from transitions
    inner join runs_per_map using (suite, model_size, map_source)

)

select * from final
