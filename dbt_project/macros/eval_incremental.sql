{#-
    Incremental builds of the eval_samples path (tens of millions of item rows).

    A checkpoint's item rows depend only on the lake's successful evaluations of
    that checkpoint (`evals` and `lm_eval_ingest` extractions, which the lake never
    changes once written). Their sorted extraction ids are the checkpoint's
    `source_extractions` fingerprint, which every row of stg_lake__eval_samples and
    int_eval_items_predicted carries. An incremental build of either

    1. deletes, in the model's pre-hook, the rows of checkpoints whose fingerprint
       is no longer the current one (a new or superseding extraction, or a
       checkpoint gone from the lake), and
    2. inserts the checkpoints whose current fingerprint the table does not hold:
       stg_lake__eval_samples reads only their partition files (an explicit file
       list, so no other partition is opened).

    The agreement model (int_eval_prediction_pairs_agreed) does the same one level
    up: its groups (inter-seed: suite × model_size × step; self: one run) carry the
    fingerprint of the checkpoints they were computed from.
-#}

{% macro eval_samples_staged(source_relation) %}
    {#- The body of stg_lake__eval_samples over `source_relation` (the whole
        dataset, or a read_parquet of some of its partitions). -#}
with

source as (

    select * from {{ source_relation }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

eval_results as (

    select * from {{ ref('stg_lake__eval_results') }}

),

successful_extractions as (

    {{ successful_eval_extractions('manifest') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(task as varchar) as task,
        cast(num_fewshot as integer) as num_fewshot,
        cast(filter as varchar) as filter,
        cast(doc_id as bigint) as doc_id,
        cast(extraction_id as varchar) as extraction_id,

        ---------- item
        cast(doc_hash as varchar) as doc_hash,
        cast(target as varchar) as target,
        cast(target_index as integer) as target_index,

        ---------- the model's answer
        cast(choice_loglikelihoods as double[]) as choice_loglikelihoods,
        cast(choice_is_greedy as boolean[]) as choice_is_greedy,
        cast(predicted as integer) as predicted,
        cast(metrics as map(varchar, double)) as metrics,
        -- DuckDB 2.0's map['key'] is the value itself (null when the key is absent)
        cast(metrics['acc'] as double) as acc

    from source

),

recorded as (

    select
        renamed.*,
        successful_extractions.origin
    from renamed
    inner join successful_extractions using (suite, model_size, seed, step, extraction_id)

),

winners as (

    -- the evaluation whose results are current (see stg_lake__eval_results)
    select distinct
        suite,
        model_size,
        seed,
        step,
        task,
        num_fewshot,
        extraction_id
    from eval_results
    where not is_superseded

),

latest_samples as (

    -- for items whose evaluation left no results: the latest extraction
    select
        suite,
        model_size,
        seed,
        step,
        task,
        num_fewshot,
        max(extraction_id) as extraction_id
    from recorded
    group by suite, model_size, seed, step, task, num_fewshot

),

final as (

    select
        recorded.*,
        recorded.extraction_id
        <> coalesce(winners.extraction_id, latest_samples.extraction_id) as is_superseded
    from recorded
    inner join latest_samples using (suite, model_size, seed, step, task, num_fewshot)
    left join winners using (suite, model_size, seed, step, task, num_fewshot)

)

select * from final
{% endmacro %}


{% macro eval_checkpoint_extractions() %}
{#- One row per checkpoint with a successful evaluation: its fingerprint. -#}
    select
        suite,
        model_size,
        seed,
        step,
        string_agg(extraction_id, ',' order by extraction_id) as source_extractions
    from ({{ successful_eval_extractions(ref('stg_lake__manifest')) }}) as successful_extractions
    group by suite, model_size, seed, step
{% endmacro %}


{% macro eval_samples_of_changed_checkpoints() %}
    {#- A read_parquet of the eval_samples files (all extractions) of the
        checkpoints whose current fingerprint the model ({{ this }}) does not hold. -#}
    {%- if not execute -%}
        {{ return(lake_empty_relation('eval_samples')) }}
    {%- endif -%}
    {%- set query -%}
        with

        current_checkpoints as ({{ eval_checkpoint_extractions() }}),

        held as (

            select distinct suite, model_size, seed, step, source_extractions
            from {{ this }}

        ),

        changed as (

            select current_checkpoints.*
            from current_checkpoints
            where not exists (
                select 1
                from held
                where held.suite = current_checkpoints.suite
                    and held.model_size = current_checkpoints.model_size
                    and held.seed = current_checkpoints.seed
                    and held.step = current_checkpoints.step
                    and held.source_extractions = current_checkpoints.source_extractions
            )

        ),

        files as (

            select
                file,
                regexp_extract(
                    file,
                    '/suite=([^/]+)/model_size=([^/]+)/seed=([0-9]+)/step=([0-9]+)/[^/]+$',
                    ['suite', 'model_size', 'seed', 'step']
                ) as part
            from glob('{{ lake_glob("eval_samples") }}')

        )

        select files.file
        from files
        inner join changed
            on files.part.suite = changed.suite
            and files.part.model_size = changed.model_size
            and cast(files.part.seed as bigint) = changed.seed
            and cast(files.part.step as bigint) = changed.step
        order by files.file
    {%- endset -%}
    {%- set files = run_query(query).columns[0].values() -%}
    {{ log(this.identifier ~ ": " ~ (files | length)
           ~ " eval_samples file(s) of new or changed checkpoints", info=true) }}
    {%- if files | length == 0 -%}
        {{ return(lake_empty_relation('eval_samples')) }}
    {%- endif -%}
    {%- set quoted = [] -%}
    {%- for file in files -%}
        {%- do quoted.append("'" ~ (file | replace("'", "''")) ~ "'") -%}
    {%- endfor -%}
    {{ return(
        "read_parquet([" ~ (quoted | join(", ")) ~ "], hive_partitioning = true, "
        ~ "hive_types = {'suite': 'VARCHAR', 'model_size': 'VARCHAR', 'seed': 'BIGINT', 'step': 'BIGINT'})"
    ) }}
{% endmacro %}


{% macro eval_delete_stale_checkpoints(current_fingerprints) %}
    {#- Pre-hook of an incremental model with a checkpoint's `source_extractions`
        on every row: drop the checkpoints whose fingerprint is not among
        `current_fingerprints` (a select of suite, model_size, seed, step,
        source_extractions). -#}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where not exists (
            select 1
            from ({{ current_fingerprints }}) as current_checkpoints
            where current_checkpoints.suite = {{ this }}.suite
                and current_checkpoints.model_size = {{ this }}.model_size
                and current_checkpoints.seed = {{ this }}.seed
                and current_checkpoints.step = {{ this }}.step
                and current_checkpoints.source_extractions = {{ this }}.source_extractions
        )
    {%- else -%}
        select 1
    {%- endif -%}
{% endmacro %}


{% macro eval_agreement_groups(items) %}
    {#- The fingerprint of each agreement group over the items relation `items`:
        comparison ('inter_seed': suite × model_size × step; 'self': suite ×
        model_size × seed), as (comparison, suite, model_size, group_value,
        input_fingerprint); group_value is the step or the seed. -#}
    with

    checkpoints as (

        select distinct suite, model_size, seed, step, source_extractions
        from {{ items }}

    )

    select
        'inter_seed' as comparison,
        suite,
        model_size,
        step as group_value,
        string_agg(seed || '=' || source_extractions, ';' order by seed) as input_fingerprint
    from checkpoints
    group by suite, model_size, step

    union all

    select
        'self' as comparison,
        suite,
        model_size,
        seed as group_value,
        string_agg(step || '=' || source_extractions, ';' order by step) as input_fingerprint
    from checkpoints
    group by suite, model_size, seed
{% endmacro %}


{% macro eval_pair_group_value(pairs) -%}
    {#- The group_value (see eval_agreement_groups) of a row of `pairs`, a relation
        or alias with comparison, seed_a and step_a: the group it was computed in. -#}
    case {{ pairs }}.comparison when 'inter_seed' then {{ pairs }}.step_a else {{ pairs }}.seed_a end
{%- endmacro %}


{% macro eval_pairs_delete_stale() %}
    {#- Pre-hook of int_eval_prediction_pairs_agreed: drop the groups whose
        checkpoints changed since they were computed. -#}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where not exists (
            select 1
            from ({{ eval_agreement_groups(ref('int_eval_items_predicted')) }}) as current_groups
            where current_groups.comparison = {{ this }}.comparison
                and current_groups.suite = {{ this }}.suite
                and current_groups.model_size = {{ this }}.model_size
                and current_groups.group_value = {{ eval_pair_group_value(this) }}
                and current_groups.input_fingerprint = {{ this }}.input_fingerprint
        )
    {%- else -%}
        select 1
    {%- endif -%}
{% endmacro %}


{% macro eval_group_predictions(items, pending_groups, comparison, group_column) %}
    {#- The answers (prediction not null) of `items` (int_eval_items_predicted) that
        the agreement groups of `comparison` compare, `group_column` being what a
        group shares (step for inter_seed, seed for self); an incremental build
        keeps the groups in `pending_groups` only. -#}
    select
        items.suite,
        items.model_size,
        items.seed,
        items.step,
        items.task,
        items.filter,
        items.num_fewshot,
        items.doc_id,
        items.prediction
    from {{ items }} as items
    {% if is_incremental() -%}
    inner join {{ pending_groups }} as pending_groups
        on pending_groups.comparison = '{{ comparison }}'
        and items.suite = pending_groups.suite
        and items.model_size = pending_groups.model_size
        and items.{{ group_column }} = pending_groups.group_value
{%- endif %}
    where items.prediction is not null
{% endmacro %}


{% macro eval_prediction_pairs(comparison, predictions_a, predictions_b, group_column, member_column) %}
    {#- The item pairs of `comparison`, counted per label pair (a contingency table
        for cohens_kappa): an answer of `predictions_a` against the same item's
        answer in `predictions_b` within one group (same `group_column`), from an
        earlier `member_column` to a later one. -#}
    select
        '{{ comparison }}' as comparison,
        a.suite,
        a.model_size,
        a.task,
        a.filter,
        a.num_fewshot,
        a.seed as seed_a,
        a.step as step_a,
        b.seed as seed_b,
        b.step as step_b,
        a.prediction as prediction_a,
        b.prediction as prediction_b,
        count(*) as n_pairs
    from {{ predictions_a }} as a
    inner join {{ predictions_b }} as b
        on a.suite = b.suite
        and a.model_size = b.model_size
        and a.task = b.task
        and a.filter = b.filter
        and a.num_fewshot = b.num_fewshot
        and a.doc_id = b.doc_id
        and a.{{ group_column }} = b.{{ group_column }}
        and a.{{ member_column }} < b.{{ member_column }}
    group by all
{% endmacro %}
