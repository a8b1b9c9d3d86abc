"""Training maps fitted here (Hu et al., 2023): the fitting lives in
polypythias.warehouse.training_map, whose docstring says what is computed.

A table rebuilt whole, but a horizon whose input (the prefix of fct_weight_features
up to it, the fit settings, the fitting code and library versions) the table
already holds keeps its rows instead of being refitted, unless the var
training_map_reuse is false (`polypythias build --full-refresh` sets it).
"""


def model(dbt, session):
    from polypythias.warehouse.training_map import Settings, fit_maps

    settings = Settings(
        max_states=_integer(dbt.config.meta_get("training_map_max_states"), "training_map_max_states", 1),
        restarts=_integer(dbt.config.meta_get("training_map_restarts"), "training_map_restarts", 1),
        random_state=_integer(dbt.config.meta_get("training_map_random_state"), "training_map_random_state", 0),
        max_horizons=_integer(dbt.config.meta_get("training_map_max_horizons"), "training_map_max_horizons", 0),
    )
    features = dbt.ref("fct_weight_features").df()
    return fit_maps(features, settings, _previous(dbt, session))


def _previous(dbt, session):
    """The table as the last build left it (still in place while this one runs)."""
    import duckdb

    if str(dbt.config.meta_get("training_map_reuse")).strip().lower() != "true":
        return None
    try:
        return session.sql(f"select * from {dbt.this}").df()
    except duckdb.CatalogException:  # the first build
        return None


def _integer(value, name, minimum):
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"int_training_map_states_fitted: var {name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise ValueError(f"int_training_map_states_fitted: var {name} must be >= {minimum}, not {number}")
    return number
