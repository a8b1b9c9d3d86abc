"""The probe marts over a toy lake with probe results and predictions: scores and
compression, seed spread against numpy, Cohen's κ of probe labels against sklearn,
emergence steps against a plain-Python reading of the definition, the extraction
rules, and a lake without probes."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from lake_fixtures import (
    ABSURD,
    ABSURD_LABEL,
    DATASETS,
    PROBE_CONSTANT,
    PROBE_DATASETS,
    PROBE_SHORT,
    PROBE_TASKS,
    SEEDS,
    SUITE,
)
from polypythias.warehouse.dbt import PROJECT_DIR, state_dir
from test_dbt_build import Built, _build, by_key, query

pytestmark = pytest.mark.slow

PROBE_MARTS = [
    "fct_probe_agreement",
    "fct_probe_consistency",
    "fct_probe_emergence",
    "fct_probe_scores",
]
PROBE_STAGING = ["stg_lake__probe_predictions", "stg_lake__probe_results"]
PROBE_INTERMEDIATE = ["int_probe_prediction_pairs_agreed"]
#: The default of the var probe_emergence_fraction.
EMERGENCE_FRACTION = 0.9


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> Built:
    return _build(tmp_path_factory.mktemp("probes"), PROBE_MARTS, datasets=DATASETS + PROBE_DATASETS)


def kappa(a: list[str], b: list[str]) -> float | None:
    """sklearn's κ, None where it is undefined (both raters constant and equal)."""
    with warnings.catch_warnings():
        # constant raters: sklearn warns, then returns NaN
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(a, b)
    return None if np.isnan(value) else float(value)


def shared(items_a: dict, items_b: dict) -> tuple[list[str], list[str]]:
    items = sorted(set(items_a) & set(items_b))
    return [items_a[i] for i in items], [items_b[i] for i in items]


def approx_or_none(value):
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)


def expected_scores(truth) -> dict[tuple, float]:
    """(suite, size, seed, step, task, layer, metric) → value, compression included."""
    scores = {key: row["value"] for key, row in truth.probe_scores.items()}
    for (*probe, metric), row in truth.probe_scores.items():
        if metric == "accuracy":
            scores[(*probe, "compression")] = row["uniform_codelength"] / row["codelength"]
    return scores


# -- scores and their spread --------------------------------------------------------


def test_probe_scores_are_the_current_extraction_with_compression(probes):
    rows = query(probes.db, "select * from fct_probe_scores")
    found = by_key(rows, "suite", "model_size", "seed", "step", "task", "layer", "metric")
    expected = expected_scores(probes.truth)
    assert set(found) == set(expected)
    assert len(rows) == len(found)
    for key, value in expected.items():
        row = found[key]
        source = probes.truth.probe_scores[(*key[:-1], "accuracy")]
        if key[-1] == "compression":
            assert row["value"] == pytest.approx(value, rel=1e-12), key
        else:
            assert row["value"] == value, key
        for column in ("level", "codelength", "uniform_codelength", "majority_accuracy",
                       "n_classes", "n_train", "n_test", "extraction_id"):  # fmt: skip
            assert row[column] == source[column], (key, column)
    assert ABSURD not in {r["value"] for r in rows}
    assert {r["nominal_parameters"] for r in rows} == {14e6, 1.4e9}
    assert {r["level"] for r in rows} == {level for level, *_ in PROBE_TASKS.values()}
    # a probe that learnt something compresses its labels below the uniform code
    assert max(r["value"] for r in rows if r["metric"] == "compression") > 1


def test_probe_consistency_matches_numpy(probes):
    rows = query(probes.db, "select * from fct_probe_consistency")
    found = by_key(rows, "suite", "model_size", "step", "task", "layer", "metric")
    groups: dict[tuple, list[float]] = {}
    for (suite, size, _seed, step, task, layer, metric), value in expected_scores(probes.truth).items():
        groups.setdefault((suite, size, step, task, layer, metric), []).append(value)
    assert set(found) == set(groups)
    for key, values in groups.items():
        values = np.array(values)
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])  # linear, numpy's default
        row = found[key]
        assert row["n_runs"] == len(values) == len(SEEDS)
        expected = {
            "value_median": median, "value_q25": q25, "value_q75": q75,
            "value_mean": values.mean(), "value_std": values.std(ddof=1),
            "value_min": values.min(), "value_max": values.max(),
        }  # fmt: skip
        for column, value in expected.items():
            assert row[column] == approx_or_none(value), (key, column)
    assert {r["nominal_parameters"] for r in rows} == {14e6, 1.4e9}


# -- agreement -----------------------------------------------------------------------


def test_probe_agreement_matches_sklearn(probes):
    items = probes.truth.probe_items
    rows = query(probes.db, "select * from fct_probe_agreement")
    found = by_key(rows, "suite", "model_size", "step", "task", "layer", "seed")
    reference = min(SEEDS)
    expected_keys = {
        (suite, size, step, task, layer, seed) for (suite, size, seed, step, task, layer) in items if seed != reference
    }
    assert set(found) == expected_keys
    for (suite, size, step, task, layer, seed), row in found.items():
        a, b = shared(
            items[(suite, size, reference, step, task, layer)],
            items[(suite, size, seed, step, task, layer)],
        )
        assert row["reference_seed"] == reference
        assert row["n_items"] == len(a) > 0
        assert row["observed_agreement"] == pytest.approx(np.mean(np.equal(a, b)))
        assert row["kappa"] == approx_or_none(kappa(a, b)), (size, step, task, layer, seed)
        pair_kappas = [
            kappa(*shared(items[(suite, size, s, step, task, layer)],
                          items[(suite, size, t, step, task, layer)]))
            for s, t in itertools.combinations(SEEDS, 2)
        ]  # fmt: skip
        defined = [k for k in pair_kappas if k is not None]
        assert row["n_seed_pairs"] == len(defined)
        assert row["mean_pairwise_kappa"] == approx_or_none(np.mean(defined) if defined else None)

    # every seed's probe says the majority label throughout: κ undefined
    constant = [r for r in rows if (r["step"], r["layer"], r["task"]) == PROBE_CONSTANT]
    assert constant and all(r["kappa"] is None and r["observed_agreement"] == 1 for r in constant)
    assert all(r["mean_pairwise_kappa"] is None and r["n_seed_pairs"] == 0 for r in constant)
    # the run that misses one test item shares one fewer with the reference
    size, seed, step = PROBE_SHORT
    n_test = PROBE_TASKS["upos"][3]
    assert {r["n_items"] for r in rows if (r["model_size"], r["seed"], r["step"], r["task"])
            == (size, seed, step, "upos")} == {n_test - 1}  # fmt: skip
    kappas = [r["kappa"] for r in rows if r["kappa"] is not None]
    assert kappas and all(-1 <= k <= 1 for k in kappas)
    assert len({round(k, 6) for k in kappas}) > 5  # not a constant


def test_probe_ac1_matches_an_independent_computation(probes):
    from test_eval_marts import gwet_ac1

    items = probes.truth.probe_items
    rows = query(probes.db, "select * from fct_probe_agreement")
    for row in rows:
        key = (row["suite"], row["model_size"])
        at = (row["step"], row["task"], row["layer"])
        a, b = shared(items[(*key, min(SEEDS), *at)], items[(*key, row["seed"], *at)])
        assert row["ac1"] == pytest.approx(gwet_ac1(a, b), rel=1e-9, abs=1e-12)
        pairs = [shared(items[(*key, s, *at)], items[(*key, t, *at)])
                 for s, t in itertools.combinations(SEEDS, 2)]  # fmt: skip
        assert row["mean_pairwise_ac1"] == pytest.approx(np.mean([gwet_ac1(*p) for p in pairs]))
    # every probe says the majority label throughout: κ undefined, AC1 perfect agreement
    constant = [r for r in rows if (r["step"], r["layer"], r["task"]) == PROBE_CONSTANT]
    assert constant and all(r["ac1"] == 1 and r["mean_pairwise_ac1"] == 1 for r in constant)


def test_both_agreements_share_one_kappa_implementation():
    for model in ("intermediate/int_eval_prediction_pairs_agreed.sql",
                  "intermediate/int_probe_prediction_pairs_agreed.sql"):  # fmt: skip
        sql = (PROJECT_DIR / "models" / model).read_text()
        assert "{{ cohens_kappa(" in sql, model
        assert "n_chance_products" not in sql and "marginals_a" not in sql, model


def test_both_agreements_share_one_ac1_implementation():
    for model in ("intermediate/int_eval_prediction_pairs_agreed.sql",
                  "intermediate/int_probe_prediction_pairs_agreed.sql"):  # fmt: skip
        sql = (PROJECT_DIR / "models" / model).read_text()
        assert "{{ gwet_ac1(" in sql and "label_variance" not in sql, model


# -- emergence ------------------------------------------------------------------------


def test_probe_emergence_matches_the_definition(probes):
    rows = query(probes.db, "select * from fct_probe_emergence")
    found = by_key(rows, "suite", "model_size", "seed", "task", "layer", "metric")
    runs: dict[tuple, dict[int, float]] = {}
    for (suite, size, seed, step, task, layer, metric), value in expected_scores(probes.truth).items():
        if metric in ("accuracy", "compression"):
            runs.setdefault((suite, size, seed, task, layer, metric), {})[step] = value
    assert set(found) == set(runs)

    emergence = {}
    for key, by_step in runs.items():
        final_step = max(by_step)
        threshold = EMERGENCE_FRACTION * by_step[final_step]
        first = next(step for step in sorted(by_step) if by_step[step] >= threshold)
        emergence[key] = first
        row = found[key]
        assert row["final_step"] == final_step, key
        assert row["final_value"] == pytest.approx(by_step[final_step], rel=1e-12), key
        assert row["threshold"] == pytest.approx(threshold, rel=1e-12), key
        assert row["emergence_fraction"] == EMERGENCE_FRACTION
        assert row["emergence_step"] == first, key
    for key, row in found.items():
        suite, size, _seed, task, layer, metric = key
        steps = [emergence[(suite, size, s, task, layer, metric)] for s in SEEDS]
        assert row["n_seeds"] == len(SEEDS)
        assert row["emergence_step_median"] == pytest.approx(np.median(steps))
        assert row["emergence_step_min"] == min(steps)
        assert row["emergence_step_max"] == max(steps)
        assert row["emergence_step_spread"] == max(steps) - min(steps)
    # the fixture's seeds learn at different speeds: the steps are not all alike
    assert len(set(emergence.values())) > 1
    assert {r["emergence_step_spread"] for r in rows} - {0}


# -- the extraction rules and dbt's own tests -----------------------------------------


def test_staging_keeps_only_the_latest_probe_extraction(probes):
    truth = probes.truth
    for model in PROBE_STAGING:
        ids = query(
            probes.db,
            f"select model_size, seed, step, list(distinct extraction_id) as ids from staging.{model} group by all",
        )
        found = {(r["model_size"], r["seed"], r["step"]): r["ids"] for r in ids}
        assert found == {c: [i] for c, i in truth.probe_ids.items()}, model
        assert not {i for ids_ in found.values() for i in ids_} & truth.invisible_ids
    n_results = query(probes.db, "select count(*) as n from staging.stg_lake__probe_results")
    assert n_results[0]["n"] == len(truth.probe_scores)
    predictions = query(probes.db, "select * from staging.stg_lake__probe_predictions")
    assert len(predictions) == sum(len(labels) for labels in truth.probe_items.values())
    assert ABSURD_LABEL not in {r["predicted"] for r in predictions}
    for row in predictions:
        key = (SUITE, row["model_size"], row["seed"], row["step"], row["task"], row["layer"])
        assert truth.probe_items[key][row["item_id"]] == row["predicted"]
        assert row["is_correct"] is (row["predicted"] == row["gold"])


def test_probe_tests_ran_and_passed(probes):
    results = json.loads((state_dir(probes.db) / "target" / "run_results.json").read_text())
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    assert set(statuses.values()) <= {"pass", "success"}
    for model in PROBE_MARTS + PROBE_STAGING + PROBE_INTERMEDIATE:
        assert statuses[f"model.polypythias.{model}"] == "success"
        assert sum(model in uid and uid.startswith("test.") for uid in statuses) >= 2, model
    # dbt's unit tests (the probes' and the shared κ macro's) run in test_dbt_unit_tests


# -- a lake without probes ------------------------------------------------------------------


def test_a_lake_without_probes_builds_empty_typed_probe_marts(probes, young_lake_warehouse):
    empty = young_lake_warehouse.db
    relations = [
        *(f"staging.{m}" for m in PROBE_STAGING),
        *(f"intermediate.{m}" for m in PROBE_INTERMEDIATE),
        *PROBE_MARTS,
    ]
    for relation in relations:
        count = query(empty, f"select count(*) as n from {relation}")
        assert count[0]["n"] == 0, relation
        describe = f"select column_name, column_type from (describe {relation})"
        assert query(empty, describe) == query(probes.db, describe), relation
