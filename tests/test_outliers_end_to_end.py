"""A real outlier, end to end: a micro suite with one run made unstable in training.

Five 200k seeds train for 64 steps; one of them gets a burst of a 50× learning rate
(`micro train --inject`). The suite is extracted (token and weight statistics and the
micro evaluations), the marts built and the report written, then:

- the injected run (known only from its run.json, which the marts never read) is
  flagged by at least one signal of fct_run_outliers, with a reason;
- no other run is flagged by the training-map signal, nor by any signal at any step of
  the forecast (signal_persistence: a one-checkpoint blip is no alarm);
- the report opens in headless Chromium with every chart drawn and no console error;
  its screenshot is written to reports/screenshot.png for the README.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from browser import check_report_in_browser
from polypythias.analyses import report
from polypythias.cli import app

pytestmark = pytest.mark.slow

SIZE, SEEDS, STEPS = "200k", 5, 64
INJECTED_SEED = 4
INJECTION = f"{SIZE}:{INJECTED_SEED}:lr_spike@24+8x50"
SCREENSHOT = Path(__file__).resolve().parents[1] / "reports" / "screenshot.png"


@pytest.fixture(scope="module")
def unstable_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("outliers")
    lake, db, reports, micro = root / "lake", root / "wh.duckdb", root / "reports", root / "micro"
    cli = CliRunner()

    def invoke(*args):
        result = cli.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    invoke(
        "micro",
        "train",
        "--out",
        micro,
        "--sizes",
        SIZE,
        "--seeds",
        SEEDS,
        "--steps",
        STEPS,
        "--inject",
        INJECTION,
        "--lake",
        lake,
        "--no-progress",
    )
    invoke(
        "extract",
        "--suite",
        micro / "suite.yaml",
        "--lake",
        lake,
        "--extractors",
        "token_stats,weight_stats,evals",
        "--no-progress",
    )
    built = invoke("build", "--lake", lake, "--db", db)
    # By default a build leaves dbt's unit tests out (they check the SQL, not the lake).
    said = " ".join(built.output.split())
    assert "data tests passed" in said and "unit tests passed" not in said and "--unit-tests" in said
    invoke("report", "--db", db, "--out", reports)
    return {"micro": micro, "db": db, "reports": reports}


def _rows(db: Path, sql: str) -> list[dict]:
    with duckdb.connect(str(db), read_only=True) as con:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _injected_runs(micro: Path) -> set[int]:
    """Seeds whose run.json records an injected instability (the test's ground truth)."""
    seeds = set()
    for info in (micro / SIZE).glob("seed*/run.json"):
        run = json.loads(info.read_text())
        if run.get("injected_instability"):
            seeds.add(run["seed"])
    return seeds


def test_the_injected_run_is_flagged_with_a_reason(unstable_suite):
    assert _injected_runs(unstable_suite["micro"]) == {INJECTED_SEED}
    fired = _rows(
        unstable_suite["db"],
        f"""
        select signal, reason from fct_run_outliers
        where model_size = '{SIZE}' and seed = {INJECTED_SEED} and fires
    """,
    )
    assert fired, "the injected run is not flagged by any signal"
    assert all(row["reason"] and len(row["reason"]) > 20 for row in fired), fired
    flagged = _rows(
        unstable_suite["db"], f"select distinct seed, is_outlier from fct_run_outliers where model_size = '{SIZE}'"
    )
    assert {row["seed"] for row in flagged if row["is_outlier"]} >= {INJECTED_SEED}


def test_no_uninjected_run_is_flagged_by_the_training_map(unstable_suite):
    rows = _rows(
        unstable_suite["db"],
        f"""
        select seed, fires, reason from fct_run_outliers
        where model_size = '{SIZE}' and signal = 'training_map'
    """,
    )
    assert {row["seed"] for row in rows} == set(range(SEEDS))  # every run was judged
    wrongly = [row for row in rows if row["fires"] and row["seed"] != INJECTED_SEED]
    assert not wrongly, wrongly


def test_no_uninjected_run_is_flagged_at_any_step_of_the_forecast(unstable_suite):
    rows = _rows(
        unstable_suite["db"],
        f"""
        select seed, signal, step from fct_stability_forecast
        where model_size = '{SIZE}' and flags and seed <> {INJECTED_SEED}
    """,
    )
    assert not rows, rows
    flagged = _rows(unstable_suite["db"], "select distinct seed from fct_stability_forecast where flags")
    assert flagged == [{"seed": INJECTED_SEED}]


def test_the_report_renders_in_chromium_and_leaves_a_screenshot(unstable_suite, tmp_path):
    index = unstable_suite["reports"] / "index.html"
    shot = tmp_path / "screenshot.png"
    marks = check_report_in_browser(index, shot)
    expected = {"loss_curves", "loss_spikes", "performance", "training_maps", "run_outliers", "warning_lead_time"}
    assert expected <= set(marks), sorted(marks)
    assert set(marks) <= {figure.name for figure in report.FIGURES}
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
