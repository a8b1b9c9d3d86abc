with

prediction_pairs as (

    select * from {{ ref('int_eval_prediction_pairs_agreed') }}

),

final as (

    select
        ---------- keys
        suite,
        model_size,
        {{ nominal_parameters('model_size') }} as nominal_parameters,
        seed_a as seed,
        step_a as step,
        step_b as final_step,
        task,
        filter,
        num_fewshot,

        ---------- agreement with the run's final checkpoint
        n_items,
        observed_agreement,
        kappa,
        ac1

    from prediction_pairs
    where comparison = 'self'

)

select * from final
