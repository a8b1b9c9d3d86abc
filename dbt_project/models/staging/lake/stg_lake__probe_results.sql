with

source as (

    select * from {{ lake_source('probe_results') }}

),

manifest as (

    select * from {{ ref('stg_lake__manifest') }}

),

current_extractions as (

    {{ latest_successful_extractions('manifest', 'probes') }}

),

renamed as (

    select
        ---------- keys
        cast(suite as varchar) as suite,
        cast(model_size as varchar) as model_size,
        cast(seed as bigint) as seed,
        cast(step as bigint) as step,
        cast(task as varchar) as task,
        cast(layer as integer) as layer,
        cast(metric as varchar) as metric,
        cast(extraction_id as varchar) as extraction_id,

        ---------- task
        cast(level as varchar) as level,
        cast(n_classes as integer) as n_classes,
        cast(n_train as bigint) as n_train,
        cast(n_test as bigint) as n_test,
        -- words left out because the tokenizer gave them no token
        cast(n_train_without_token as bigint) as n_train_without_token,
        cast(n_test_without_token as bigint) as n_test_without_token,

        ---------- probe score on the test split
        cast(value as double) as value,
        cast(majority_accuracy as double) as majority_accuracy,

        ---------- description length of the train labels (bits)
        cast(codelength as double) as codelength,
        cast(uniform_codelength as double) as uniform_codelength

    from source

),

final as (

    select renamed.*
    from renamed
    inner join current_extractions using (suite, model_size, seed, step, extraction_id)

)

select * from final
