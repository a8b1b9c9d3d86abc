{#-
    The staging logic is the macro eval_samples_staged (macros/eval_incremental.sql).
    A table, incremental: a build deletes the checkpoints whose successful
    evaluations changed and stages only the partition files of new or changed
    checkpoints; a full build (the first, or --full-refresh) stages the whole
    dataset. Both give the same rows. (A table, not a view: tens of millions of
    rows are read from Parquet once, not by every model and test downstream.)
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ eval_delete_stale_checkpoints(eval_checkpoint_extractions()) }}",
    )
}}

with

{% if is_incremental() %}
    staged as (

        {{ eval_samples_staged(eval_samples_of_changed_checkpoints()) }}

    ),
{% else %}
    staged as (

        {{ eval_samples_staged(lake_source('eval_samples')) }}

    ),
{% endif %}

checkpoint_extractions as (

    {{ eval_checkpoint_extractions() }}

),

final as (

    select
        staged.*,
        ---------- provenance: the checkpoint's successful evaluations when staged
        checkpoint_extractions.source_extractions
    from staged
    inner join checkpoint_extractions using (suite, model_size, seed, step)

)

select * from final
