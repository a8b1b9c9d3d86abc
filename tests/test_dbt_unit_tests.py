"""dbt's unit tests (the SQL on fixed rows, with hand-worked expectations) and the
build of an empty lake: one build of every model, data test and unit test, fast
enough for `make test-fast`. The builds over toy lakes are in test_dbt_build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polypythias.warehouse.dbt import build, state_dir
from test_dbt_build import MARTS, query


@pytest.fixture(scope="module")
def empty_lake_warehouse(tmp_path_factory) -> Path:
    """The one build of the suite that runs dbt's unit tests: they do not read the lake."""
    root = tmp_path_factory.mktemp("empty")
    (root / "lake").mkdir()
    db = root / "warehouse" / "w.duckdb"
    build(str(root / "lake"), db, unit_tests=True)
    return db


def test_every_dbt_unit_test_ran_here_and_passed(empty_lake_warehouse):
    target = state_dir(empty_lake_warehouse) / "target"
    results = json.loads((target / "run_results.json").read_text())
    units = {r["unique_id"]: r["status"] for r in results["results"] if r["unique_id"].startswith("unit_test.")}
    assert sorted(units) == sorted(json.loads((target / "manifest.json").read_text())["unit_tests"])
    assert len(units) >= 45
    assert set(units.values()) == {"pass"}
    # the statistics with hand-worked cases: the eval κ and AC1 (shared macros), the probes'
    assert [u for u in units if "kappa" in u]
    assert [u for u in units if "ac1" in u]
    assert len([u for u in units if "probe" in u]) >= 8
    eval_pairs = "unit_test.polypythias.int_eval_prediction_pairs_agreed."
    assert sorted(u.removeprefix(eval_pairs) for u in units if u.startswith(eval_pairs)) == [
        "int_eval_prediction_pairs_agreed_computes_cohens_kappa",
        "int_eval_prediction_pairs_agreed_computes_gwet_ac1",
    ]


def test_an_empty_lake_builds_empty_marts(empty_lake_warehouse):
    for mart in MARTS:
        assert query(empty_lake_warehouse, f"select count(*) as n from {mart}")[0]["n"] == 0
