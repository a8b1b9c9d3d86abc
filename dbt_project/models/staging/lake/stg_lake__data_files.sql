{#- A table, not a view like the other staging models: every staging model of a
    dataset reads stg_lake__manifest, which checks these row counts, and a view would
    read every file's footer again each time (~1 s per 3,600 files). -#}
{{ config(materialized='table') }}

with

source as (

    select * from {{ lake_source('data_files') }}

),

parsed as (

    select
        file_name,
        num_rows,
        regexp_extract(
            file_name,
            '/([a-z_]+)/suite=([^/]+)/model_size=([^/]+)/seed=([0-9]+)/step=([0-9]+)/([^/]+)\.parquet$',
            ['dataset', 'suite', 'model_size', 'seed', 'step', 'extraction_id']
        ) as part
    from source

),

renamed as (

    select
        ---------- keys
        part.dataset,
        part.suite,
        part.model_size,
        cast(part.seed as bigint) as seed,
        cast(part.step as bigint) as step,
        part.extraction_id,

        ---------- the file
        cast(parsed.num_rows as bigint) as n_rows,
        cast(parsed.file_name as varchar) as file_path

    from parsed
    -- only checkpoint partitions (training_log, suite_grid, … have no manifest rows)
    where part.dataset <> ''

),

final as (

    select * from renamed

)

select * from final
