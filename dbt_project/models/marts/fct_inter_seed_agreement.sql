with

items as (

    select * from {{ ref('int_eval_items_predicted') }}

),

prediction_pairs as (

    select * from {{ ref('int_eval_prediction_pairs_agreed') }}

),

reference_seeds as (

    -- the run family's reference: its smallest seed (PolyPythias' seed 0, the original)
    select
        suite,
        model_size,
        min(seed) as reference_seed
    from items
    group by suite, model_size

),

compared_seeds as (

    -- every other seed that answered the task at the step
    select distinct
        items.suite,
        items.model_size,
        items.step,
        items.task,
        items.filter,
        items.num_fewshot,
        items.seed,
        reference_seeds.reference_seed
    from items
    inner join reference_seeds using (suite, model_size)
    where
        items.seed <> reference_seeds.reference_seed
        and items.prediction is not null

),

inter_seed_pairs as (

    select * from prediction_pairs
    where comparison = 'inter_seed'

),

all_pairs as (

    -- pairs with an undefined κ (p_e = 1) are left out of κ's mean (n_seed_pairs
    -- counts the rest); AC1 and raw agreement are defined for every pair
    select
        suite,
        model_size,
        step_a as step,
        task,
        filter,
        num_fewshot,
        avg(kappa) as mean_pairwise_kappa,
        count(kappa) as n_seed_pairs,
        avg(ac1) as mean_pairwise_ac1,
        avg(observed_agreement) as mean_pairwise_observed_agreement
    from inter_seed_pairs
    group by all

),

final as (

    select
        ---------- keys
        compared_seeds.suite,
        compared_seeds.model_size,
        {{ nominal_parameters('compared_seeds.model_size') }} as nominal_parameters,
        compared_seeds.step,
        compared_seeds.task,
        compared_seeds.filter,
        compared_seeds.num_fewshot,
        compared_seeds.seed,
        compared_seeds.reference_seed,

        ---------- agreement with the reference seed (none when it did not answer)
        coalesce(with_reference.n_items, 0) as n_items,
        with_reference.observed_agreement,
        with_reference.kappa,
        with_reference.ac1,

        ---------- agreement over every pair of seeds
        all_pairs.mean_pairwise_kappa,
        coalesce(all_pairs.n_seed_pairs, 0) as n_seed_pairs,
        all_pairs.mean_pairwise_ac1,
        all_pairs.mean_pairwise_observed_agreement

    from compared_seeds
    left join inter_seed_pairs as with_reference
        on compared_seeds.suite = with_reference.suite
        and compared_seeds.model_size = with_reference.model_size
        and compared_seeds.step = with_reference.step_a
        and compared_seeds.task = with_reference.task
        and compared_seeds.filter = with_reference.filter
        and compared_seeds.num_fewshot = with_reference.num_fewshot
        and compared_seeds.reference_seed = with_reference.seed_a
        and compared_seeds.seed = with_reference.seed_b
    left join all_pairs
        on compared_seeds.suite = all_pairs.suite
        and compared_seeds.model_size = all_pairs.model_size
        and compared_seeds.step = all_pairs.step
        and compared_seeds.task = all_pairs.task
        and compared_seeds.filter = all_pairs.filter
        and compared_seeds.num_fewshot = all_pairs.num_fewshot

)

select * from final
