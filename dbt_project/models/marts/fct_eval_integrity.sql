with

suite_grid as (

    select * from {{ ref('stg_lake__suite_grid') }}

),

eval_scores as (

    select * from {{ ref('fct_eval_scores') }}

),

eval_files as (

    select * from {{ ref('stg_lake__eval_files') }}

),

evaluated_checkpoints as (

    select distinct
        suite,
        model_size,
        seed,
        step
    from eval_scores

),

missing_results as (

    select
        'missing_results' as finding,
        suite_grid.suite,
        suite_grid.model_size,
        suite_grid.seed,
        suite_grid.step,
        cast(null as varchar) as task,
        cast(null as bigint) as other_seed,
        cast(null as varchar) as path,
        'the suite grid expects evals at this checkpoint; the lake holds no eval results for it'
            as detail
    from suite_grid
    anti join evaluated_checkpoints using (suite, model_size, seed, step)
    where suite_grid.extractor = 'evals'

),

fingerprints as (

    -- a checkpoint's whole set of current results, compared as one value
    select
        suite,
        model_size,
        seed,
        step,
        count(*) as n_results,
        list(
            struct_pack(task, metric, filter, num_fewshot, value)
            order by task, metric, filter, num_fewshot
        ) as results,
        -- the ingested file(s) the results come from, when there is exactly one
        case
            when
                count(distinct extraction_id) filter (where origin = 'ingest') = 1
                and count(*) filter (where origin = 'extract') = 0
                then min(extraction_id)
        end as ingest_extraction_id
    from eval_scores
    group by suite, model_size, seed, step

),

duplicate_results as (

    -- both runs of a copy are listed, each naming the other: the results
    -- alone cannot tell which one is mislabelled
    select
        'duplicate_results' as finding,
        run.suite,
        run.model_size,
        run.seed,
        run.step,
        cast(null as varchar) as task,
        other.seed as other_seed,
        eval_files.path,
        'all ' || run.n_results || ' eval results at step ' || run.step
        || ' are identical to seed ' || other.seed || '''s' as detail
    from fingerprints as run
    inner join fingerprints as other
        on run.suite = other.suite
        and run.model_size = other.model_size
        and run.step = other.step
        and run.seed <> other.seed
        and run.results = other.results
    left join eval_files
        on run.suite = eval_files.suite
        and run.model_size = eval_files.model_size
        and run.seed = eval_files.seed
        and run.step = eval_files.step
        and run.ingest_extraction_id = eval_files.extraction_id

),

mislabelled_files as (

    -- a file ingested more than once reports its finding once
    select distinct
        'mislabelled_file' as finding,
        eval_files.suite,
        eval_files.model_size,
        eval_files.seed,
        eval_files.step,
        cast(null as varchar) as task,
        cast(null as bigint) as other_seed,
        eval_files.path,
        eval_files.finding as detail
    from eval_files
    where eval_files.finding is not null

),

final as (

    select * from missing_results
    union all
    select * from duplicate_results
    union all
    select * from mislabelled_files

)

select * from final
