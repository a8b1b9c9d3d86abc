{#-
    Which manifest extractions give lm-eval results: the `evals` extractor (lm-eval
    run here) and `lm_eval_ingest` (result files lm-eval wrote elsewhere).
-#}

{% macro eval_extractors() -%}
    ('evals', 'lm_eval_ingest')
{%- endmacro %}


{% macro successful_eval_extractions(manifest) %}
    {#- Every successful evaluation in `manifest` (stg_lake__manifest: a CTE name or
        a relation), not only the latest per checkpoint: one ingest extraction holds
        one result file, and a checkpoint may have several. One row per extraction,
        with its origin: `extract` (evals) or `ingest` (lm_eval_ingest). -#}
    select
        suite,
        model_size,
        seed,
        step,
        extraction_id,
        case extractor
            when 'evals' then 'extract'
            when 'lm_eval_ingest' then 'ingest'
        end as origin
    from {{ manifest }}
    where extractor in {{ eval_extractors() }}
        and is_success
{% endmacro %}
