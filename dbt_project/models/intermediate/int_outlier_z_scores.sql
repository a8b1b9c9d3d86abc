{#-
    The outlier signals that set a run against the other seeds of its size at
    the same checkpoint, by leave-one-out z-scores (macro leave_one_out_z):

    - performance: per task in `performance_tasks`, the z-score of the run's
      `performance_metric` (fct_eval_scores) against the other seeds' at the same
      step, task, metric, filter and num_fewshot; averaged over the task's
      filter × num_fewshot rows, then over the tasks.
    - final_loss: the z-score of the run's mean token loss (fct_checkpoint_losses)
      against the other seeds' (higher = worse).
    - agreement: the run's mean Gwet's AC1 with each other seed, per task ×
      filter × num_fewshot (inter-seed pairs of int_eval_prediction_pairs_agreed),
      averaged over the tasks; its z-score against the other runs' means. AC1, not
      Cohen's κ: on a task whose answer is always the same choice, a perfect seed's
      κ with every other seed is 0 (null with another perfect one) exactly where
      the seeds agree best; AC1 stays defined and near 1 there.

    Diverged checkpoints (NaN or inf weights or outputs, int_diverged_checkpoints)
    are left out of every signal here, on both sides: they get no z-score and are
    in no other run's reference (the `diverged` signal reports them).
-#}
{%- set settings = outlier_settings() -%}

with

all_eval_scores as (

    select * from {{ ref('fct_eval_scores') }}

),

all_checkpoint_losses as (

    select * from {{ ref('fct_checkpoint_losses') }}

),

all_prediction_pairs as (

    select * from {{ ref('int_eval_prediction_pairs_agreed') }}

),

diverged_checkpoints as (

    select * from {{ ref('int_diverged_checkpoints') }}

),

---------- diverged checkpoints, left out

eval_scores as (

    select all_eval_scores.*
    from all_eval_scores
    anti join diverged_checkpoints using (suite, model_size, seed, step)

),

checkpoint_losses as (

    select all_checkpoint_losses.*
    from all_checkpoint_losses
    anti join diverged_checkpoints using (suite, model_size, seed, step)

),

prediction_pairs as (

    -- both runs of the pair finite
    select all_prediction_pairs.*
    from all_prediction_pairs
    anti join diverged_checkpoints as diverged_a
        on all_prediction_pairs.suite = diverged_a.suite
        and all_prediction_pairs.model_size = diverged_a.model_size
        and all_prediction_pairs.seed_a = diverged_a.seed
        and all_prediction_pairs.step_a = diverged_a.step
    anti join diverged_checkpoints as diverged_b
        on all_prediction_pairs.suite = diverged_b.suite
        and all_prediction_pairs.model_size = diverged_b.model_size
        and all_prediction_pairs.seed_b = diverged_b.seed
        and all_prediction_pairs.step_b = diverged_b.step

),

---------- performance

performance_scores as (

    select
        suite,
        model_size,
        seed,
        step,
        task,
        metric,
        filter,
        num_fewshot,
        value
    from eval_scores
    where
        task in {{ sql_string_list(settings.performance_tasks) }}
        and metric = '{{ settings.performance_metric }}'

),

performance_z as (

    {{ leave_one_out_z(
        'performance_scores',
        keys=['suite', 'model_size', 'step', 'task', 'metric', 'filter', 'num_fewshot'],
    ) }}

),

performance_tasks as (

    select
        suite,
        model_size,
        seed,
        step,
        task,
        avg(z) as z,
        max(n_units) as n_seeds
    from performance_z
    where z is not null
    group by all

),

performance as (

    select
        suite,
        model_size,
        seed,
        step,
        'performance' as signal,
        avg(z) as score,
        cast(null as double) as value,
        max(n_seeds) as n_seeds,
        cast(null as double) as others_mean,
        cast(null as double) as others_std,
        count(*) as n_tasks,
        'mean z-score ' || printf('%.2f', avg(z)) || ' over ' || count(*)
        || case when count(*) = 1 then ' task' else ' tasks' end
        || ' at step ' || step || ' ('
        || string_agg(task || ' ' || printf('%.2f', z), ', ' order by task) || ')'
            as detail
    from performance_tasks
    group by suite, model_size, seed, step

),

---------- final loss

final_loss_z as (

    {{ leave_one_out_z(
        'checkpoint_losses', keys=['suite', 'model_size', 'step'], value='mean_token_loss'
    ) }}

),

final_loss as (

    select
        suite,
        model_size,
        seed,
        step,
        'final_loss' as signal,
        z as score,
        mean_token_loss as value,
        n_units as n_seeds,
        others_mean,
        others_std,
        cast(null as bigint) as n_tasks,
        'token loss ' || printf('%.4g', mean_token_loss) || ' at step ' || step
        || ', z = ' || printf('%.2f', z) || ' against the other ' || (n_units - 1)
        || ' seeds (mean ' || printf('%.4g', others_mean)
        || ', sd ' || printf('%.2g', others_std) || ')' as detail
    from final_loss_z
    where z is not null

),

---------- agreement

run_pairs as (

    -- each inter-seed pair once from either side
    select
        suite,
        model_size,
        step_a as step,
        task,
        filter,
        num_fewshot,
        seed_a as seed,
        ac1
    from prediction_pairs
    where comparison = 'inter_seed'
    union all
    select
        suite,
        model_size,
        step_a as step,
        task,
        filter,
        num_fewshot,
        seed_b as seed,
        ac1
    from prediction_pairs
    where comparison = 'inter_seed'

),

run_task_agreements as (

    select
        suite,
        model_size,
        seed,
        step,
        task,
        filter,
        num_fewshot,
        avg(ac1) as mean_ac1
    from run_pairs
    group by all

),

run_agreements as (

    select
        suite,
        model_size,
        seed,
        step,
        avg(mean_ac1) as mean_ac1,
        count(*) as n_tasks
    from run_task_agreements
    group by all

),

agreement_z as (

    {{ leave_one_out_z('run_agreements', keys=['suite', 'model_size', 'step'], value='mean_ac1') }}

),

agreement as (

    select
        agreement_z.suite,
        agreement_z.model_size,
        agreement_z.seed,
        agreement_z.step,
        'agreement' as signal,
        agreement_z.z as score,
        agreement_z.mean_ac1 as value,
        agreement_z.n_units as n_seeds,
        agreement_z.others_mean,
        agreement_z.others_std,
        run_agreements.n_tasks,
        'mean AC1 ' || printf('%.3f', agreement_z.mean_ac1) || ' with the other seeds at step '
        || agreement_z.step || ' over ' || run_agreements.n_tasks
        || case when run_agreements.n_tasks = 1 then ' task' else ' tasks' end
        || ', z = ' || printf('%.2f', agreement_z.z) || ' against the other '
        || (agreement_z.n_units - 1) || ' seeds'' (mean '
        || printf('%.3f', agreement_z.others_mean)
        || ', sd ' || printf('%.2g', agreement_z.others_std) || ')' as detail
    from agreement_z
    inner join run_agreements using (suite, model_size, seed, step)
    where agreement_z.z is not null

),

unioned as (

    select * from performance
    union all
    select * from final_loss
    union all
    select * from agreement

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        seed,
        step,
        signal,

        ---------- the score
        score,
        value,
        others_mean,
        others_std,
        n_seeds,
        cast(n_tasks as bigint) as n_tasks,
        detail

    from unioned

)

select * from final
