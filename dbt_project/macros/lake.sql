{#-
    Reading the lake.

    Every lake dataset is a dbt source whose `external_location` is a
    `read_parquet(…/<dataset>/**/*.parquet)`. DuckDB refuses a glob that matches no
    file, and a young lake may not hold every dataset yet (no training log, no weight
    statistics…). Staging models therefore read their dataset through
    `lake_source(dataset)`: the source itself when the lake holds at least one file
    of it, otherwise an empty relation with the dataset's columns and types (the
    same as `warehouse/schemas.py`, partition columns included), so every model
    downstream builds, empty.
-#}

{% macro lake_glob(dataset) -%}
    {#- data_files: the footers of every dataset's files -#}
    {{ env_var('POLYPYTHIAS_LAKE') }}/{{ '*' if dataset == 'data_files' else dataset }}/**/*.parquet
{%- endmacro %}


{% macro lake_has_files(dataset) %}
    {%- set probe -%}
        select count(*) > 0 as has_files
        from (select file from glob('{{ lake_glob(dataset) }}') limit 1)
    {%- endset -%}
    {%- set result = run_query(probe) -%}
    {{ return(result.columns[0].values()[0]) }}
{% endmacro %}


{% macro lake_columns(dataset) %}
    {#- Column name → DuckDB type of each dataset, as read with hive partitioning. -#}
    {%- set checkpoint = [
        ('suite', 'varchar'), ('model_size', 'varchar'), ('seed', 'bigint'), ('step', 'bigint'),
    ] -%}
    {%- set run = [('suite', 'varchar'), ('model_size', 'varchar'), ('seed', 'bigint')] -%}
    {%- set columns = {
        'data_files': [('file_name', 'varchar'), ('num_rows', 'bigint')],
        'manifest': [
            ('extraction_id', 'varchar'),
            ('extractor', 'varchar'),
            ('status', 'varchar'),
            ('started_at', 'timestamp with time zone'),
            ('finished_at', 'timestamp with time zone'),
            ('duration_s', 'double'),
            ('rows', 'map(varchar, bigint)'),
            ('config_hash', 'varchar'),
            ('source', 'varchar'),
            ('device', 'varchar'),
            ('host', 'varchar'),
            ('package_versions', 'map(varchar, varchar)'),
            ('error', 'varchar'),
            ('weights_format', 'varchar'),
        ] + checkpoint,
        'token_stats': [
            ('extraction_id', 'varchar'),
            ('doc_id', 'bigint'),
            ('position', 'integer'),
            ('target_id', 'integer'),
            ('target_logprob', 'float'),
            ('entropy', 'float'),
            ('target_rank', 'integer'),
            ('topk_ids', 'integer[]'),
            ('topk_logprobs', 'float[]'),
        ] + checkpoint,
        'weight_stats': [
            ('extraction_id', 'varchar'),
            ('tensor_name', 'varchar'),
            ('kind', 'varchar'),
            ('layer', 'integer'),
            ('n_rows', 'bigint'),
            ('n_cols', 'bigint'),
            ('l1', 'double'),
            ('l2', 'double'),
            ('trace', 'double'),
            ('spectral', 'double'),
            ('code_sparsity', 'double'),
            ('computational_sparsity', 'double'),
            ('sv_mean', 'double'),
            ('sv_var', 'double'),
            ('mean', 'double'),
            ('median', 'double'),
            ('var', 'double'),
            ('weight_hash', 'varchar'),
            ('value_sample', 'float[]'),
            ('nonfinite', 'bigint'),
        ] + checkpoint,
        'training_log': [
            ('extraction_id', 'varchar'),
            ('step', 'bigint'),
            ('loss', 'double'),
            ('lr', 'double'),
            ('grad_norm', 'double'),
            ('tokens_seen', 'bigint'),
        ] + run,
        'eval_results': [
            ('extraction_id', 'varchar'),
            ('task', 'varchar'),
            ('metric', 'varchar'),
            ('filter', 'varchar'),
            ('value', 'double'),
            ('stderr', 'double'),
            ('n_samples', 'bigint'),
            ('num_fewshot', 'integer'),
            ('task_version', 'varchar'),
            ('harness_version', 'varchar'),
            ('evaluated_at', 'timestamp with time zone'),
        ] + checkpoint,
        'eval_samples': [
            ('extraction_id', 'varchar'),
            ('task', 'varchar'),
            ('filter', 'varchar'),
            ('num_fewshot', 'integer'),
            ('doc_id', 'bigint'),
            ('doc_hash', 'varchar'),
            ('target', 'varchar'),
            ('target_index', 'integer'),
            ('choice_loglikelihoods', 'double[]'),
            ('choice_is_greedy', 'boolean[]'),
            ('predicted', 'integer'),
            ('metrics', 'map(varchar, double)'),
        ] + checkpoint,
        'eval_files': [
            ('extraction_id', 'varchar'),
            ('path', 'varchar'),
            ('sha256', 'varchar'),
            ('format', 'varchar'),
            ('model_args', 'varchar'),
            ('pretrained', 'varchar'),
            ('revision', 'varchar'),
            ('variant', 'varchar'),
            ('num_fewshot', 'integer'),
            ('evaluated_at', 'timestamp with time zone'),
            ('n_tasks', 'bigint'),
            ('samples_files', 'varchar[]'),
            ('finding', 'varchar'),
        ] + checkpoint,
        'probe_results': [
            ('extraction_id', 'varchar'),
            ('task', 'varchar'),
            ('level', 'varchar'),
            ('layer', 'integer'),
            ('metric', 'varchar'),
            ('value', 'double'),
            ('codelength', 'double'),
            ('uniform_codelength', 'double'),
            ('majority_accuracy', 'double'),
            ('n_classes', 'integer'),
            ('n_train', 'bigint'),
            ('n_test', 'bigint'),
            ('n_train_without_token', 'bigint'),
            ('n_test_without_token', 'bigint'),
        ] + checkpoint,
        'probe_predictions': [
            ('extraction_id', 'varchar'),
            ('task', 'varchar'),
            ('layer', 'integer'),
            ('item_id', 'bigint'),
            ('gold', 'varchar'),
            ('predicted', 'varchar'),
        ] + checkpoint,
        'suite_grid': [
            ('extraction_id', 'varchar'),
            ('model_size', 'varchar'),
            ('seed', 'bigint'),
            ('step', 'bigint'),
            ('extractor', 'varchar'),
            ('source', 'varchar'),
            ('suite', 'varchar'),
        ],
        'training_map_states': [
            ('extraction_id', 'varchar'),
            ('seed', 'bigint'),
            ('step', 'bigint'),
            ('state', 'integer'),
            ('score', 'double'),
            ('source_file', 'varchar'),
            ('source_sha256', 'varchar'),
            ('ingested_at', 'timestamp with time zone'),
            ('suite', 'varchar'),
            ('model_size', 'varchar'),
        ],
    } -%}
    {%- if dataset not in columns -%}
        {{ exceptions.raise_compiler_error("lake_columns: unknown lake dataset '" ~ dataset ~ "'") }}
    {%- endif -%}
    {{ return(columns[dataset]) }}
{% endmacro %}


{% macro lake_empty_relation(dataset) -%}
    (
        select
    {%- for name, type in lake_columns(dataset) %}
            cast(null as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
    {%- endfor %}
        where false
    )
{%- endmacro %}


{% macro lake_source(dataset) %}
    {%- set relation = source('lake', dataset) -%}
    {#- Unit tests replace the source with a fixture CTE (no external location). -#}
    {%- if not execute or relation.external is none -%}
        {{ return(relation) }}
    {%- elif lake_has_files(dataset) -%}
        {{ return(relation) }}
    {%- else -%}
        {{ log("lake: no " ~ dataset ~ " files under " ~ env_var('POLYPYTHIAS_LAKE')
               ~ "; reading it as empty", info=true) }}
        {{ return(lake_empty_relation(dataset)) }}
    {%- endif -%}
{% endmacro %}


{% macro latest_successful_extractions(manifest, extractor) %}
    {#- The extraction whose rows staging keeps per checkpoint: the latest
        successful attempt of `extractor` in `manifest` (stg_lake__manifest: a CTE
        name or a relation). Rows of any other attempt (superseded, failed, or never
        recorded in the manifest) are dropped by joining on these. -#}
    select
        suite,
        model_size,
        seed,
        step,
        extraction_id
    from {{ manifest }}
    where extractor = '{{ extractor }}'
        and is_latest_success
{% endmacro %}
