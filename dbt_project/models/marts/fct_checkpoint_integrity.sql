{#-
    What is wrong with the checkpoints themselves (public suites have all three):
    identical weights under two labels, checkpoints the suite grid expects that
    never reached the lake, data the manifest records that the lake does not hold,
    and breaks in a run's lineage.

    Distances between checkpoints are estimated from weight_stats' value samples:
    d(a, b)² = Σ over matrices of numel / m · Σ (a − b)² over the m sampled values
    (the same positions in every checkpoint, so the estimate is unbiased). A
    checkpoint breaks its run's lineage when either ratio exceeds
    `lineage_break_factor` (default 2.5; see dbt_project.yml):
    - path ratio = (d(previous, it) + d(it, next)) / d(previous, next);
    - step ratio = d(previous, it) / (d(previous², previous) · max(g, √g)),
      g = (its step − previous step) / (previous step − previous² step).
    "previous", "next", "previous²" are the run's neighbouring checkpoints that
    have samples, by step.
-#}
{%- set factor = var('lineage_break_factor', 2.5) | float -%}
{%- if factor <= 1 -%}
    {{ exceptions.raise_compiler_error(
        "fct_checkpoint_integrity: var lineage_break_factor must be > 1, not "
        ~ var('lineage_break_factor')
    ) }}
{%- endif -%}

with

weight_stats as (

    select * from {{ ref('stg_lake__weight_stats') }}

),

checkpoint_extractors as (

    select * from {{ ref('int_checkpoint_extractors_aggregated') }}

),

checkpoints as (

    select * from {{ ref('dim_checkpoints') }}

),

matrices as (

    select
        suite,
        model_size,
        seed,
        step,
        tensor_name,
        n_rows,
        n_cols,
        l2,
        weight_hash,
        value_sample
    from weight_stats
    where not is_aggregate

),

---------- duplicate_weights

checkpoint_hashes as (

    -- a checkpoint's weights as one value: its matrices' digests in name order
    select
        suite,
        model_size,
        seed,
        step,
        count(*) as n_matrices,
        md5(string_agg(tensor_name || '=' || weight_hash, ';' order by tensor_name))
            as checkpoint_hash
    from matrices
    group by suite, model_size, seed, step
    having count(weight_hash) = count(*)

),

duplicate_weights as (

    -- every checkpoint of an identical pair is listed, naming the other (a group
    -- of k identical checkpoints gives each k − 1 rows): the weights alone cannot
    -- tell which label is wrong
    select
        'duplicate_weights' as finding,
        checkpoint.suite,
        checkpoint.model_size,
        checkpoint.seed,
        checkpoint.step,
        twin.model_size as other_model_size,
        twin.seed as other_seed,
        twin.step as other_step,
        cast(null as double) as score,
        cast(null as double) as threshold,
        'all ' || checkpoint.n_matrices || ' weight matrices are identical to those of '
        || twin.model_size || ' seed ' || twin.seed || ' step ' || twin.step as detail
    from checkpoint_hashes as checkpoint
    inner join checkpoint_hashes as twin
        on checkpoint.suite = twin.suite
        and checkpoint.checkpoint_hash = twin.checkpoint_hash
        and not (
            checkpoint.model_size = twin.model_size
            and checkpoint.seed = twin.seed
            and checkpoint.step = twin.step
        )

),

---------- missing_checkpoint

extraction_outcomes as (

    select
        suite,
        model_size,
        seed,
        step,
        -- a diverged extraction counts: the checkpoint is there, its values are not finite
        bool_or(is_settled) as has_any_success,
        -- reported as missing_data instead
        bool_or(damage is not null) as has_damaged_data
    from checkpoint_extractors
    group by suite, model_size, seed, step

),

missing_checkpoints as (

    select
        'missing_checkpoint' as finding,
        checkpoints.suite,
        checkpoints.model_size,
        checkpoints.seed,
        checkpoints.step,
        cast(null as varchar) as other_model_size,
        cast(null as bigint) as other_seed,
        cast(null as bigint) as other_step,
        cast(null as double) as score,
        cast(null as double) as threshold,
        case
            when checkpoints.n_failed_attempts > 0
                then
                    'the suite grid expects this checkpoint and no extractor ever succeeded on it: '
                    || checkpoints.n_failed_attempts || ' extractor run(s) failed; last error: '
                    || coalesce(checkpoints.last_error, '(none recorded)')
            else 'the suite grid expects this checkpoint and no extraction was ever attempted on it'
        end as detail
    from checkpoints
    inner join extraction_outcomes using (suite, model_size, seed, step)
    where
        checkpoints.is_expected
        and not extraction_outcomes.has_any_success
        and not extraction_outcomes.has_damaged_data

),

---------- missing_data

missing_data as (

    -- the manifest records a settled extraction whose data files are missing or
    -- hold other row counts: it is not counted as present (stg_lake__manifest)
    select
        'missing_data' as finding,
        suite,
        model_size,
        seed,
        step,
        cast(null as varchar) as other_model_size,
        cast(null as bigint) as other_seed,
        cast(null as bigint) as other_step,
        cast(null as double) as score,
        cast(null as double) as threshold,
        'the manifest records data the lake does not hold (`polypythias extract` redoes it): '
        || string_agg(extractor || ': ' || damage, '; ' order by extractor) as detail
    from checkpoint_extractors
    where damage is not null
    group by suite, model_size, seed, step

),

---------- lineage_break

sampled_checkpoints as (

    -- the checkpoints with a value sample on every matrix (a matrix with NaN or
    -- inf values has none: no distance), numbered along their run
    select
        suite,
        model_size,
        seed,
        step,
        sqrt(sum(l2 * l2)) as weight_norm,
        row_number() over (partition by suite, model_size, seed order by step) as run_position
    from matrices
    group by suite, model_size, seed, step
    having count(value_sample) = count(*)

),

matrix_sequences as (

    -- each matrix of a sampled checkpoint beside the same matrix (name and shape)
    -- one and two sampled checkpoints earlier in its run. Windows, not a self-join:
    -- joining a run's matrices to each other before the step condition applies
    -- grows with the square of the run's length, and DuckDB chose that order when
    -- staging was a table (over 10 minutes on the PolyPythias-sized lake).
    select
        matrices.suite,
        matrices.model_size,
        matrices.seed,
        matrices.step,
        matrices.n_rows * matrices.n_cols / len(matrices.value_sample) as scale,
        matrices.value_sample,
        sampled_checkpoints.run_position,
        lag(matrices.value_sample) over matrix_run as previous_sample,
        lag(matrices.value_sample, 2) over matrix_run as second_previous_sample,
        lag(sampled_checkpoints.run_position) over matrix_run as previous_position,
        lag(sampled_checkpoints.run_position, 2) over matrix_run as second_previous_position
    from matrices
    inner join sampled_checkpoints using (suite, model_size, seed, step)
    window matrix_run as (
        partition by
            matrices.suite, matrices.model_size, matrices.seed,
            matrices.tensor_name, matrices.n_rows, matrices.n_cols
        order by matrices.step
    )

),

intervals as (

    -- unbiased: numel / m · Σ (a − b)² over a matrix's m sampled positions, summed
    -- over the matrices the two checkpoints share (same name, shape and sample size;
    -- a lag that reaches further back in the run is no neighbour)
    select
        suite,
        model_size,
        seed,
        step,
        -- (case, not filter: list_distance refuses lists of two lengths)
        sqrt(sum(case
            when
                previous_position = run_position - 1
                and len(previous_sample) = len(value_sample)
                then scale * list_distance(value_sample, previous_sample) ^ 2
        end)) as distance_from_previous,
        sqrt(sum(case
            when
                second_previous_position = run_position - 2
                and len(second_previous_sample) = len(value_sample)
                then scale * list_distance(value_sample, second_previous_sample) ^ 2
        end)) as distance_skipping_previous
    from matrix_sequences
    group by suite, model_size, seed, step

),

run_sequences as (

    select
        sampled_checkpoints.suite,
        sampled_checkpoints.model_size,
        sampled_checkpoints.seed,
        sampled_checkpoints.step,
        lag(sampled_checkpoints.step) over run as previous_step,
        lag(sampled_checkpoints.step, 2) over run as second_previous_step,
        lead(sampled_checkpoints.step) over run as next_step,
        lag(sampled_checkpoints.weight_norm) over run as previous_weight_norm,
        -- d(previous, this), d(this, next), d(previous, next), d(previous², previous)
        intervals.distance_from_previous,
        lead(intervals.distance_from_previous) over run as distance_to_next,
        lead(intervals.distance_skipping_previous) over run as distance_previous_to_next,
        lag(intervals.distance_from_previous) over run as previous_distance
    from sampled_checkpoints
    left join intervals using (suite, model_size, seed, step)
    window run as (
        partition by sampled_checkpoints.suite, sampled_checkpoints.model_size, sampled_checkpoints.seed
        order by sampled_checkpoints.step
    )

),

gap_ratios as (

    select
        *,
        cast(step - previous_step as double)
        / (previous_step - second_previous_step) as gap_ratio
    from run_sequences

),

ratios as (

    select
        *,
        -- null without a next checkpoint, or when previous and next are identical
        (distance_from_previous + distance_to_next)
        / nullif(distance_previous_to_next, 0) as path_ratio,
        -- the interval before predicts linear growth with the gap (drift) when it
        -- widens and √ growth (random walk) when it narrows: the larger of the two
        distance_from_previous
        / nullif(previous_distance * greatest(gap_ratio, sqrt(gap_ratio)), 0) as step_ratio
    from gap_ratios

),

lineage_breaks as (

    select
        'lineage_break' as finding,
        suite,
        model_size,
        seed,
        step,
        model_size as other_model_size,
        seed as other_seed,
        previous_step as other_step,
        greatest(path_ratio, step_ratio) as score,
        cast({{ factor }} as double) as threshold,
        'estimated distance from step ' || previous_step || ': '
        || printf('%.3g', distance_from_previous / nullif(previous_weight_norm, 0))
        || ' × that checkpoint''s weight norm'
        || case
            when path_ratio > {{ factor }}
                then
                    '; going from step ' || previous_step || ' through this checkpoint to step '
                    || next_step || ' is ' || printf('%.3g', path_ratio) || '× the direct distance'
            else ''
        end
        || case
            when step_ratio > {{ factor }}
                then
                    '; ' || printf('%.3g', step_ratio) || '× what the interval from step '
                    || second_previous_step || ' to ' || previous_step || ' predicts'
            else ''
        end
        || ' (limit ' || {{ factor }} || '×)' as detail
    from ratios
    where greatest(path_ratio, step_ratio) > {{ factor }}

),

findings as (

    select * from duplicate_weights
    union all
    select * from missing_checkpoints
    union all
    select * from missing_data
    union all
    select * from lineage_breaks

),

final as (

    select
        ---------- finding and the checkpoint it concerns
        finding,
        suite,
        model_size,
        seed,
        step,

        ---------- the other checkpoint: the twin, or the run's previous checkpoint
        other_model_size,
        other_seed,
        other_step,

        ---------- measure
        score,
        threshold,
        detail

    from findings

)

select * from final
