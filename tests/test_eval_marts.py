"""The eval marts over a toy lake with lm-eval results and samples: scores, seed
spread against numpy, Cohen's κ against sklearn, Gwet's AC1 against numpy, item
stability, integrity findings against what the fixture planted, reruns, and lakes
without some eval datasets."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from lake_fixtures import (
    ABSURD,
    DATASETS,
    DEDUPED_SUITE,
    EVAL_DATASETS,
    SEEDS,
    SUITE,
)
from polypythias.warehouse.dbt import state_dir
from test_dbt_build import Built, _build, by_key, query

pytestmark = pytest.mark.slow

EVAL_MARTS = [
    "fct_eval_consistency",
    "fct_eval_integrity",
    "fct_eval_scores",
    "fct_inter_seed_agreement",
    "fct_item_stability",
    "fct_self_consistency",
]
EVAL_STAGING = ["stg_lake__eval_files", "stg_lake__eval_results", "stg_lake__eval_samples"]


@pytest.fixture(scope="module")
def evals(tmp_path_factory) -> Built:
    return _build(tmp_path_factory.mktemp("evals"), EVAL_MARTS, datasets=DATASETS + EVAL_DATASETS)


@pytest.fixture(scope="module")
def results_only(tmp_path_factory) -> Built:
    """Scores without samples or files, as older lm-eval output gives."""
    datasets = ("manifest", "suite_grid", "eval_results")
    return _build(tmp_path_factory.mktemp("results_only"), EVAL_MARTS, datasets=datasets)


def kappa(a: list[int], b: list[int]) -> float | None:
    """sklearn's κ, None where it is undefined (both raters constant and equal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = cohen_kappa_score(a, b)
    return None if np.isnan(value) else float(value)


def shared(items_a: dict, items_b: dict) -> tuple[list[int], list[int]]:
    docs = sorted(set(items_a) & set(items_b))
    return [items_a[d][0] for d in docs], [items_b[d][0] for d in docs]


def approx_or_none(value):
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)


def gwet_ac1(a: list, b: list) -> float:
    """Gwet's AC1 from the two raters' label counts: p_e = Σ π_c (1 − π_c) / (Q − 1)
    with π_c the raters' mean share of label c; 1 when both use a single label."""
    a, b = np.asarray(a), np.asarray(b)
    labels = np.union1d(a, b)
    if len(labels) == 1:
        return 1.0
    pi = np.array([((a == c).mean() + (b == c).mean()) / 2 for c in labels])
    chance = (pi * (1 - pi)).sum() / (len(labels) - 1)
    return float(((a == b).mean() - chance) / (1 - chance))


def test_the_independent_ac1_gives_the_hand_worked_cases():
    # one label dominates: κ is 0, AC1 (.9 − .095)/.905
    assert gwet_ac1([0] * 10, [0] * 9 + [1]) == pytest.approx(161 / 181)
    assert gwet_ac1([1, 1, 1], [1, 1, 1]) == 1.0  # κ undefined (p_e = 1)
    assert gwet_ac1([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]) == pytest.approx(98 / 194)


# -- scores and their spread --------------------------------------------------------


def test_eval_scores_are_the_current_evaluations(evals):
    rows = query(evals.db, "select * from fct_eval_scores")
    found = by_key(rows, "suite", "model_size", "seed", "step", "task", "metric")
    assert set(found) == set(evals.truth.eval_scores)
    for key, expected in evals.truth.eval_scores.items():
        row = found[key]
        for column in ("value", "stderr", "n_samples", "origin", "variant", "extraction_id"):
            assert row[column] == expected[column], (key, column)
        assert (row["filter"], row["num_fewshot"]) == ("none", 0)
        assert row["evaluated_at"] == expected["evaluated_at"]
    assert ABSURD not in {r["value"] for r in rows}
    assert {r["nominal_parameters"] for r in rows} == {14e6, 1.4e9}
    # the newer ingested rerun of one task wins that task only
    assert {(r["suite"], r["origin"], r["variant"]) for r in rows} == {
        (SUITE, "extract", "standard"), (SUITE, "ingest", "standard"),
        (DEDUPED_SUITE, "ingest", "deduped"),
    }  # fmt: skip


def test_eval_consistency_matches_numpy(evals):
    rows = query(evals.db, "select * from fct_eval_consistency")
    found = by_key(rows, "suite", "model_size", "step", "task", "metric")
    groups: dict[tuple, list[dict]] = {}
    for (suite, size, _seed, step, task, metric), score in evals.truth.eval_scores.items():
        groups.setdefault((suite, size, step, task, metric), []).append(score)
    assert set(found) == set(groups)
    for key, scores in groups.items():
        values = np.array([s["value"] for s in scores])
        stderrs = [s["stderr"] for s in scores if s["stderr"] is not None]
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        row = found[key]
        assert row["n_runs"] == len(values)
        expected = {
            "value_median": median, "value_q25": q25, "value_q75": q75,
            "value_mean": values.mean(), "value_min": values.min(), "value_max": values.max(),
            "value_std": values.std(ddof=1) if len(values) > 1 else None,
            "stderr_mean": np.mean(stderrs) if stderrs else None,
        }  # fmt: skip
        for column, value in expected.items():
            assert row[column] == approx_or_none(value), (key, column)
    # the toy suite has three seeds at most checkpoints, two where evals are missing
    assert {r["n_runs"] for r in rows if r["suite"] == SUITE} == {2, 3}


# -- agreement -----------------------------------------------------------------------


def test_inter_seed_agreement_matches_sklearn(evals):
    items = evals.truth.eval_items
    rows = query(evals.db, "select * from fct_inter_seed_agreement")
    found = by_key(rows, "suite", "model_size", "step", "task", "seed")
    expected_keys = set()
    for suite, size, seed, step, task in items:
        if seed != min(SEEDS):
            expected_keys.add((suite, size, step, task, seed))
    assert set(found) == expected_keys
    for (suite, size, step, task, seed), row in found.items():
        reference = items[(suite, size, min(SEEDS), step, task)]
        a, b = shared(reference, items[(suite, size, seed, step, task)])
        assert row["reference_seed"] == min(SEEDS)
        assert row["n_items"] == len(a) > 0
        assert row["observed_agreement"] == pytest.approx(np.mean(np.equal(a, b)))
        assert row["kappa"] == approx_or_none(kappa(a, b)), (size, step, task, seed)
        seeds = [s for s in SEEDS if (suite, size, s, step, task) in items]
        pair_kappas = [
            kappa(*shared(items[(suite, size, s, step, task)], items[(suite, size, t, step, task)]))
            for s, t in itertools.combinations(seeds, 2)
        ]
        defined = [k for k in pair_kappas if k is not None]
        assert row["n_seed_pairs"] == len(defined)
        assert row["mean_pairwise_kappa"] == approx_or_none(np.mean(defined) if defined else None)
    # the copied run agrees perfectly with the run it copies
    copy = found[(SUITE, "14m", 100, "mc_task", 2)]
    assert copy["mean_pairwise_kappa"] is not None
    kappas = [r["kappa"] for r in rows if r["kappa"] is not None]
    assert kappas and all(-1 <= k <= 1 for k in kappas)
    assert len({round(k, 6) for k in kappas}) > 5  # not a constant


def test_ac1_and_raw_agreement_match_an_independent_computation(evals):
    items = evals.truth.eval_items
    rows = query(evals.db, "select * from fct_inter_seed_agreement")
    assert rows
    for row in rows:
        suite, size, step, task = row["suite"], row["model_size"], row["step"], row["task"]
        a, b = shared(items[(suite, size, min(SEEDS), step, task)],
                      items[(suite, size, row["seed"], step, task)])  # fmt: skip
        assert row["ac1"] == pytest.approx(gwet_ac1(a, b), rel=1e-9, abs=1e-12)
        pairs = [
            shared(items[(suite, size, s, step, task)], items[(suite, size, t, step, task)])
            for s, t in itertools.combinations(SEEDS, 2)
            if (suite, size, s, step, task) in items and (suite, size, t, step, task) in items
        ]
        # every pair has an AC1, also those whose κ is undefined
        assert row["mean_pairwise_ac1"] == pytest.approx(np.mean([gwet_ac1(*p) for p in pairs]))
        assert row["mean_pairwise_observed_agreement"] == pytest.approx(np.mean([np.mean(np.equal(*p)) for p in pairs]))
    assert len({round(r["ac1"], 6) for r in rows}) > 5  # not a constant

    for row in query(evals.db, "select * from fct_self_consistency"):
        run = (row["suite"], row["model_size"], row["seed"])
        a, b = shared(items[(*run, row["step"], row["task"])],
                      items[(*run, row["final_step"], row["task"])])  # fmt: skip
        assert row["ac1"] == pytest.approx(gwet_ac1(a, b), rel=1e-9, abs=1e-12)


def test_self_consistency_matches_sklearn(evals):
    items = evals.truth.eval_items
    rows = query(evals.db, "select * from fct_self_consistency")
    found = by_key(rows, "suite", "model_size", "seed", "step", "task")
    final_steps: dict[tuple, int] = {}
    for suite, size, seed, step, task in items:
        run = (suite, size, seed, task)
        final_steps[run] = max(step, final_steps.get(run, step))
    expected_keys = {
        (suite, size, seed, step, task)
        for (suite, size, seed, step, task) in items
        if step < final_steps[(suite, size, seed, task)]
    }
    assert set(found) == expected_keys and expected_keys
    for (suite, size, seed, step, task), row in found.items():
        final = final_steps[(suite, size, seed, task)]
        a, b = shared(items[(suite, size, seed, step, task)], items[(suite, size, seed, final, task)])
        assert row["final_step"] == final
        assert row["n_items"] == len(a)
        assert row["observed_agreement"] == pytest.approx(np.mean(np.equal(a, b)))
        assert row["kappa"] == approx_or_none(kappa(a, b)), (size, seed, step, task)


def test_item_stability_matches_numpy(evals):
    rows = query(evals.db, "select * from fct_item_stability")
    found = by_key(rows, "suite", "model_size", "step", "task", "doc_id")
    expected: dict[tuple, list[float]] = {}
    for (suite, size, _seed, step, task), answers in evals.truth.eval_items.items():
        for doc_id, (_prediction, acc) in answers.items():
            if acc is not None:
                expected.setdefault((suite, size, step, task, doc_id), []).append(acc)
    assert set(found) == set(expected)
    assert not {key[3] for key in found} - {"mc_task", "ll_task"}  # bias_task has no acc
    for key, accs in expected.items():
        row = found[key]
        assert row["n_seeds"] == len(accs)
        assert row["n_correct"] == int(np.sum(accs))
        assert row["fraction_correct"] == pytest.approx(np.mean(accs))
        assert row["doc_hash"] == f"{key[3]}-{key[4]:04d}"


# -- reruns and integrity --------------------------------------------------------------


def test_staging_marks_superseded_evaluations(evals):
    rows = query(
        evals.db,
        "select distinct suite, model_size, seed, step, task, extraction_id "
        "from staging.stg_lake__eval_results where is_superseded",
    )
    assert {tuple(r.values()) for r in rows} == evals.truth.superseded_evals
    # samples follow their evaluation
    samples = query(
        evals.db,
        "select distinct suite, model_size, seed, step, task, extraction_id "
        "from staging.stg_lake__eval_samples where is_superseded",
    )
    assert {tuple(r.values()) for r in samples} == evals.truth.superseded_evals
    visible = query(
        evals.db,
        "select distinct extraction_id from staging.stg_lake__eval_results "
        "union select distinct extraction_id from staging.stg_lake__eval_samples",
    )
    assert not {r["extraction_id"] for r in visible} & evals.truth.invisible_ids
    origins = query(
        evals.db,
        "select origin, count(distinct extraction_id) as n "
        "from staging.stg_lake__eval_results group by origin order by origin",
    )
    # 17 evaluated checkpoints plus the tied rerun; stale, newer and deduped ingests
    assert [(r["origin"], r["n"]) for r in origins] == [("extract", 18), ("ingest", 3)]


def test_integrity_findings_are_the_planted_ones(evals):
    rows = query(evals.db, "select * from fct_eval_integrity")
    found = {
        (r["finding"], r["suite"], r["model_size"], r["seed"], r["step"], r["other_seed"], r["path"]) for r in rows
    }
    assert len(rows) == len(found)
    assert found == evals.truth.eval_findings
    assert all(r["task"] is None and r["detail"] for r in rows)


def test_eval_tests_ran_and_passed(evals):
    results = json.loads((state_dir(evals.db) / "target" / "run_results.json").read_text())
    statuses = {r["unique_id"]: r["status"] for r in results["results"]}
    assert set(statuses.values()) <= {"pass", "success"}
    for mart in EVAL_MARTS:
        assert statuses[f"model.polypythias.{mart}"] == "success"
        assert sum(mart in uid and uid.startswith("test.") for uid in statuses) >= 3, mart
    # dbt's unit tests (the κ's hand-worked cases) run in test_dbt_unit_tests


# -- lakes without some eval datasets ----------------------------------------------------


def test_scores_build_without_samples_or_files(evals, results_only):
    scores = query(results_only.db, "select count(*) as n from fct_eval_scores")[0]["n"]
    assert scores == len(evals.truth.eval_scores)
    for mart in ("fct_inter_seed_agreement", "fct_self_consistency", "fct_item_stability"):
        assert query(results_only.db, f"select count(*) as n from {mart}")[0]["n"] == 0, mart
    # without files, every ingested score is `standard` (the deduped twin has no file row)
    variants = query(results_only.db, "select distinct variant from fct_eval_scores")
    assert [r["variant"] for r in variants] == ["standard"]
    # the empty stand-ins have the types the real datasets have
    for relation in [*(f"staging.{m}" for m in EVAL_STAGING), *EVAL_MARTS]:
        describe = f"select column_name, column_type from (describe {relation})"
        assert query(results_only.db, describe) == query(evals.db, describe), relation


def test_a_lake_without_evals_builds_empty_typed_eval_marts(evals, young_lake_warehouse):
    empty = young_lake_warehouse.db
    for relation in [*(f"staging.{m}" for m in EVAL_STAGING), *EVAL_MARTS]:
        count = query(empty, f"select count(*) as n from {relation}")
        assert count[0]["n"] == 0, relation
        describe = f"select column_name, column_type from (describe {relation})"
        assert query(empty, describe) == query(evals.db, describe), relation
