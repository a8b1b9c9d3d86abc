"""The runs the demo lists as outliers: every signal that fires, per run, from the mart."""

from __future__ import annotations

import stability_fixtures as fx
from polypythias.analyses.outliers import flagged_runs


def test_each_flagged_run_lists_the_signals_that_fire_in_order(tmp_path):
    rows = fx.run_outliers()
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_run_outliers": rows})
    expected: dict[tuple[str, int], list[tuple]] = {}
    for row in sorted(rows, key=lambda r: (r["model_size"], r["seed"], r["signal"])):
        if row["fires"]:
            expected.setdefault((row["model_size"], row["seed"]), []).append(
                (row["signal"], row["first_step"], row["reason"])
            )
    assert expected  # the fixture has outliers
    assert flagged_runs(db) == expected


def test_no_run_is_listed_when_no_signal_fires(tmp_path):
    rows = [row | {"fires": False, "first_step": None} for row in fx.run_outliers()]
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_run_outliers": rows})
    assert flagged_runs(db) == {}
