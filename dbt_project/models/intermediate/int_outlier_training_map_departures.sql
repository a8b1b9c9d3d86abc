{#-
    How each run's state path departs from the path most runs of its size take, at
    every horizon of every training map (int_training_map_states).

    Within one suite × model_size × map_source × horizon_step, with n runs and the
    checkpoint index of a step its 0-based rank among the horizon's distinct steps,
    a run departs each time it

    - visits a rare state: one that fewer than `training_map_rare_fraction` × n of
      the runs visit (the run itself counted);
    - skips a state that every other run visits (n − 1 of them);
    - enters the common states (those every run visits) in another order than the
      majority: the order of first entries (ties: lower state first) that more
      than half of the runs share; no majority, no departure;
    - enters a common state more than `training_map_entry_shift` checkpoints
      before or after the median run (median of the runs' entry indices, linear
      interpolation);
    - takes a backward transition: returns to a state it entered before (from
      another state), when no other run takes that transition (from that state to
      that one) up to the horizon.

    n_departures counts them (each rare, skipped or shifted state once, the order
    once, each backward transition once); null when the horizon has fewer than 3
    runs. `departures` says them in plain words; `departure_list` gives each with
    its kind (rare_state, skipped_state, entry_order, shifted_entry,
    backward_transition). is_preferred_source marks the map the outlier signal reads: the
    fitted one ('hmm') where a size has both.
-#}
{%- set settings = outlier_settings() -%}

with

states as (

    select * from {{ ref('int_training_map_states') }}

),

maps as (

    select distinct
        suite,
        model_size,
        map_source,
        horizon_step
    from states

),

grid as (

    -- the checkpoint index of each step of a horizon
    select
        suite,
        model_size,
        map_source,
        horizon_step,
        step,
        dense_rank() over (
            partition by suite, model_size, map_source, horizon_step order by step
        ) - 1 as checkpoint_index
    from (select distinct
        suite,
        model_size,
        map_source,
        horizon_step,
        step
    from states) as steps

),

runs as (

    select distinct
        suite,
        model_size,
        map_source,
        horizon_step,
        seed
    from states

),

run_counts as (

    select
        suite,
        model_size,
        map_source,
        horizon_step,
        count(*) as n_runs
    from runs
    group by all

),

entries as (

    -- each state a run visits, and when it first enters it
    select
        states.suite,
        states.model_size,
        states.map_source,
        states.horizon_step,
        states.seed,
        states.state,
        min(states.step) as entry_step,
        min(grid.checkpoint_index) as entry_index
    from states
    inner join grid using (suite, model_size, map_source, horizon_step, step)
    group by all

),

state_visits as (

    select
        entries.suite,
        entries.model_size,
        entries.map_source,
        entries.horizon_step,
        entries.state,
        count(*) as n_visiting_runs,
        count(*) = any_value(run_counts.n_runs) as is_common,
        quantile_cont(cast(entries.entry_index as double), 0.5) as median_entry_index,
        quantile_cont(cast(entries.entry_step as double), 0.5) as median_entry_step,
        any_value(run_counts.n_runs) as n_runs
    from entries
    inner join run_counts using (suite, model_size, map_source, horizon_step)
    group by all

),

rare_visits as (

    select
        entries.suite,
        entries.model_size,
        entries.map_source,
        entries.horizon_step,
        entries.seed,
        1 as kind_order,
        entries.state,
        'visits state ' || entries.state || ', which ' || state_visits.n_visiting_runs
        || ' of ' || state_visits.n_runs || ' runs of ' || entries.model_size || ' visit'
            as departure
    from entries
    inner join state_visits using (suite, model_size, map_source, horizon_step, state)
    where
        state_visits.n_visiting_runs
        < cast({{ settings.training_map_rare_fraction }} as double) * state_visits.n_runs

),

skipped_states as (

    select
        runs.suite,
        runs.model_size,
        runs.map_source,
        runs.horizon_step,
        runs.seed,
        2 as kind_order,
        state_visits.state,
        'never visits state ' || state_visits.state || ', which the other '
        || state_visits.n_visiting_runs || ' runs visit' as departure
    from runs
    inner join state_visits using (suite, model_size, map_source, horizon_step)
    anti join entries using (suite, model_size, map_source, horizon_step, seed, state)
    where state_visits.n_visiting_runs = state_visits.n_runs - 1

),

common_entries as (

    select
        entries.*,
        state_visits.median_entry_index,
        state_visits.median_entry_step
    from entries
    inner join state_visits using (suite, model_size, map_source, horizon_step, state)
    where state_visits.is_common

),

orders as (

    -- the order in which each run first enters the common states
    select
        runs.suite,
        runs.model_size,
        runs.map_source,
        runs.horizon_step,
        runs.seed,
        coalesce(
            list(common_entries.state order by common_entries.entry_index, common_entries.state)
            filter (where common_entries.state is not null),
            []
        ) as entry_order
    from runs
    left join common_entries using (suite, model_size, map_source, horizon_step, seed)
    group by all

),

majority_orders as (

    -- an order more than half of the runs share (at most one can)
    select
        orders.suite,
        orders.model_size,
        orders.map_source,
        orders.horizon_step,
        orders.entry_order as majority_order,
        count(*) as n_majority_runs
    from orders
    inner join run_counts using (suite, model_size, map_source, horizon_step)
    group by all
    having count(*) > any_value(run_counts.n_runs) / 2

),

reordered as (

    select
        orders.suite,
        orders.model_size,
        orders.map_source,
        orders.horizon_step,
        orders.seed,
        3 as kind_order,
        cast(null as integer) as state,
        'enters states ' || array_to_string(orders.entry_order, ', ')
        || ' in that order (' || majority_orders.n_majority_runs || ' of '
        || run_counts.n_runs || ' runs: '
        || array_to_string(majority_orders.majority_order, ', ') || ')' as departure
    from orders
    inner join majority_orders using (suite, model_size, map_source, horizon_step)
    inner join run_counts using (suite, model_size, map_source, horizon_step)
    where orders.entry_order <> majority_orders.majority_order

),

shifted_entries as (

    select
        suite,
        model_size,
        map_source,
        horizon_step,
        seed,
        4 as kind_order,
        state,
        'enters state ' || state || ' at step ' || entry_step || ' (median step '
        || printf('%g', median_entry_step) || '), '
        || printf('%g', abs(entry_index - median_entry_index)) || ' checkpoints '
        || case when entry_index > median_entry_index then 'later' else 'earlier' end
        || ' than the median run' as departure
    from common_entries
    where abs(entry_index - median_entry_index) > {{ settings.training_map_entry_shift }}

),

moves as (

    -- each checkpoint of a run with the state it comes from
    select
        suite,
        model_size,
        map_source,
        horizon_step,
        seed,
        step,
        lag(state) over (
            partition by suite, model_size, map_source, horizon_step, seed order by step
        ) as from_state,
        state as to_state
    from states

),

transitions as (

    select * from moves
    where from_state <> to_state

),

backward_transitions as (

    -- a return to a state the run entered before, which no other run takes
    select
        transitions.suite,
        transitions.model_size,
        transitions.map_source,
        transitions.horizon_step,
        transitions.seed,
        5 as kind_order,
        transitions.to_state as state,
        'returns from state ' || transitions.from_state || ' to state ' || transitions.to_state
        || ' at step ' || transitions.step || ', a transition no other run takes'
            as departure
    from transitions
    inner join entries
        on transitions.suite = entries.suite
        and transitions.model_size = entries.model_size
        and transitions.map_source = entries.map_source
        and transitions.horizon_step = entries.horizon_step
        and transitions.seed = entries.seed
        and transitions.to_state = entries.state
    where
        entries.entry_step < transitions.step
        and not exists (
            select 1
            from transitions as others
            where
                others.suite = transitions.suite
                and others.model_size = transitions.model_size
                and others.map_source = transitions.map_source
                and others.horizon_step = transitions.horizon_step
                and others.seed <> transitions.seed
                and others.from_state = transitions.from_state
                and others.to_state = transitions.to_state
        )

),

departures as (

    select * from rare_visits
    union all
    select * from skipped_states
    union all
    select * from reordered
    union all
    select * from shifted_entries
    union all
    select * from backward_transitions

),

per_run as (

    select
        runs.suite,
        runs.model_size,
        runs.map_source,
        runs.horizon_step,
        runs.seed,
        count(departures.kind_order) filter (where departures.kind_order = 1) as n_rare_states,
        count(departures.kind_order) filter (where departures.kind_order = 2) as n_skipped_states,
        count(departures.kind_order) filter (where departures.kind_order = 3) > 0
            as is_order_departure,
        count(departures.kind_order) filter (where departures.kind_order = 4)
            as n_shifted_entries,
        count(departures.kind_order) filter (where departures.kind_order = 5)
            as n_backward_transitions,
        count(departures.kind_order) as n_departures,
        string_agg(departures.departure, '; ' order by departures.kind_order, departures.state, departures.departure)
            as departures,
        list(
            {
                'kind': [
                    'rare_state', 'skipped_state', 'entry_order', 'shifted_entry',
                    'backward_transition'
                ][departures.kind_order
                ],
                'departure': departures.departure
            }
            order by departures.kind_order, departures.state, departures.departure
        ) filter (where departures.kind_order is not null) as departure_list
    from runs
    left join departures using (suite, model_size, map_source, horizon_step, seed)
    group by all

),

preferred_sources as (

    -- the fitted map where a size has one, else the imported one
    select
        suite,
        model_size,
        case when bool_or(map_source = 'hmm') then 'hmm' else min(map_source) end as map_source
    from maps
    group by suite, model_size

),

final as (

    select
        ---------- keys
        per_run.suite,
        per_run.model_size,
        per_run.map_source,
        per_run.horizon_step,
        per_run.seed,

        ---------- the map at this horizon
        run_counts.n_runs,
        preferred_sources.map_source is not null as is_preferred_source,

        ---------- the run's departures (null with fewer than 3 runs)
        case when run_counts.n_runs >= 3 then per_run.n_rare_states end as n_rare_states,
        case when run_counts.n_runs >= 3 then per_run.n_skipped_states end as n_skipped_states,
        case when run_counts.n_runs >= 3 then per_run.is_order_departure end
            as is_order_departure,
        case when run_counts.n_runs >= 3 then per_run.n_shifted_entries end
            as n_shifted_entries,
        case when run_counts.n_runs >= 3 then per_run.n_backward_transitions end
            as n_backward_transitions,
        case when run_counts.n_runs >= 3 then per_run.n_departures end as n_departures,
        case when run_counts.n_runs >= 3 then per_run.departures end as departures,
        case when run_counts.n_runs >= 3 and per_run.n_departures > 0 then per_run.departure_list end
            as departure_list

    from per_run
    inner join run_counts using (suite, model_size, map_source, horizon_step)
    left join preferred_sources using (suite, model_size, map_source)

)

select * from final
