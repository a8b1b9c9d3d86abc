"""The issue-5 charts: training maps, outlier table, lead time, loss spikes, integrity.

The warehouses are hand-built with DuckDB DDL in the marts' contract columns and types
(tests/stability_fixtures.py; the dbt models are tested elsewhere). Expected values are
worked out from the inserted rows and the fixture's stated design, never taken from
the chart code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stability_fixtures as fx
from polypythias.analyses import integrity, loss_curves, marts, outliers, report, training_maps
from polypythias.analyses.report import build_report
from warehouse_mark import mark_as_warehouse

MY_FIGURES = {
    loss_curves.SPIKES_NAME: loss_curves.spikes_chart,
    training_maps.NAME: training_maps.chart,
    outliers.NAME: outliers.chart,
    outliers.LEAD_NAME: outliers.lead_chart,
    integrity.NAME: integrity.chart,
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    rows = fx.stability_marts()
    path = tmp_path_factory.mktemp("stability") / "w.duckdb"
    return fx.make_stability_warehouse(path, rows), rows


def spec_of(db: Path, build) -> dict[str, Any] | None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        chart = build(con)
    finally:
        con.close()
    return None if chart is None else chart.to_dict()


def values_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    data = spec["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def header_labels(channel: dict[str, Any]) -> list[Any]:
    expr = channel["header"]["labelExpr"]
    assert expr.endswith("[datum.value]")
    return json.loads(expr.removesuffix("[datum.value]"))


def assert_log_step_axis(x: dict[str, Any]) -> None:
    assert x["field"] == "step_plus_one"
    assert x["scale"]["type"] == "log"
    assert "log scale" in x["title"] and "+ 1" in x["title"]


def outlier_runs(rows: dict[str, list[dict[str, Any]]]) -> set[tuple[str, int]]:
    """Runs with any firing signal, from the inserted fct_run_outliers rows."""
    return {(r["model_size"], r["seed"]) for r in rows["fct_run_outliers"] if r["fires"]}


# ---------- training maps


def test_training_map_rows_split_stable_and_outlier_runs_per_size(warehouse):
    db, rows = warehouse
    spec = spec_of(db, training_maps.chart)
    labels = header_labels(spec["facet"]["row"])
    # Sizes in parameter order (200k before 1m), the fitted map before the imported one,
    # stable runs before outliers; a size without outliers has only a stable row.
    every_seed = "seeds 0, 1, 2, 3, 4 · no outliers"
    assert [label[:2] for label in labels] == [
        ["micro · 200k · HMM fitted here (3 states)", f"stable runs (5 of 5): {every_seed}"],
        ["micro · 200k · imported map (2 states)", f"stable runs (5 of 5): {every_seed}"],
        ["micro · 1m · HMM fitted here (4 states)", "stable runs (4 of 5): seeds 0, 1, 2, 4"],
        ["micro · 1m · HMM fitted here (4 states)", "outlier runs (1 of 5): seed 3"],
    ]  # fmt: skip
    assert labels[1][2] == "y: state (this map has no score)"
    assert outlier_runs(rows) == {fx.OUTLIER}
    drawn = values_of(spec)
    # Every checkpoint of the mart is drawn once, in the row of its run's status.
    assert len(drawn) == len(rows["fct_training_phases"])
    by_key = {(r["model_size"], r["map_source"], r["seed"], r["step"]): r for r in drawn}
    for r in rows["fct_training_phases"]:
        got = by_key[(r["model_size"], r["map_source"], r["seed"], r["step"])]
        status = "outlier" if (r["model_size"], r["seed"]) == fx.OUTLIER else "stable"
        index = {("200k", "hmm"): 0, ("200k", "imported"): 1}.get(
            (r["model_size"], r["map_source"]), 3 if status == "outlier" else 2
        )
        assert got["group_index"] == index
        assert got["state"] == r["state"]
        assert got["y"] == (r["score"] if r["map_source"] == "hmm" else r["state"])


def test_training_map_points_coloured_by_state_on_log_steps(warehouse):
    spec = spec_of(warehouse[0], training_maps.chart)
    path, points = spec["spec"]["layer"]
    assert path["mark"]["type"] == "line" and path["encoding"]["detail"]["field"] == "seed"
    assert points["mark"]["type"] == "point"
    color = points["encoding"]["color"]
    assert color["field"] == "state"
    states = sorted({r["state"] for r in warehouse[1]["fct_training_phases"]})
    assert color["scale"]["domain"] == states == [0, 1, 2, 3]
    for layer in (path, points):
        assert_log_step_axis(layer["encoding"]["x"])
    assert {"calculate": "datum.step + 1", "as": "step_plus_one"} in spec["spec"]["transform"]
    assert spec["resolve"]["scale"]["y"] == "independent"


def test_training_map_without_outlier_mart_has_one_row_per_map(tmp_path):
    rows = fx.stability_marts()
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_training_phases": rows["fct_training_phases"]})
    spec = spec_of(db, training_maps.chart)
    labels = header_labels(spec["facet"]["row"])
    assert len(labels) == 3
    assert all(label[1].startswith("runs (outliers not assessed)") for label in labels)
    assert "not built" in " ".join(spec["title"]["subtitle"])


# ---------- outlier table


def table_cells(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((r for r in values_of(spec) if r["kind"] == "cell"), key=lambda r: (r["y"], r["x"]))


def column_text(spec: dict[str, Any], header: str) -> list[str]:
    x = next(x for name, x, _ in outliers.TABLE_COLUMNS if name == header)
    return [c["text"] for c in table_cells(spec) if c["x"] == x]


def test_outlier_table_lists_each_firing_signal_with_its_reason(warehouse):
    db, rows = warehouse
    spec = spec_of(db, outliers.chart)
    headers = [r["text"] for r in values_of(spec) if r["kind"] == "header"]
    assert headers == ["run", "signal", "score", "threshold", "first fires at step", "reason"]
    fired = [r for r in rows["fct_run_outliers"] if r["fires"]]
    order = list(fx.SIGNALS)
    fired.sort(key=lambda r: order.index(r["signal"]))
    assert column_text(spec, "signal") == [r["signal"] for r in fired]
    assert column_text(spec, "first fires at step") == [f"{r['first_step']:,}" for r in fired]
    # The wrapped reason lines read back as the reasons, in order; no "within threshold".
    assert " ".join(column_text(spec, "reason")) == " ".join(r["reason"] for r in fired)
    assert column_text(spec, "run") == ["micro · 1m · seed 3", f"{len(fired)} of 5 signals fire"]
    # One shaded band per run block, covering its lines.
    bands = [r for r in values_of(spec) if r["kind"] == "band"]
    assert len(bands) == 1
    cell_ys = {c["y"] for c in table_cells(spec)}
    assert all(bands[0]["y"] < y < bands[0]["y2"] for y in cell_ys)


def test_outlier_table_when_nothing_fires_says_so(tmp_path):
    quiet = [{**r, "fires": False, "is_outlier": False, "n_signals_firing": 0,
              "first_step": None} for r in fx.run_outliers()]  # fmt: skip
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_run_outliers": quiet})
    spec = spec_of(db, outliers.chart)
    (cell,) = table_cells(spec)
    assert cell["text"].startswith("No run fires any signal: 10 runs × 5 signals")


# ---------- lead time


def test_lead_time_per_outlier_signal_and_false_alarms(warehouse):
    db, rows = warehouse
    spec = spec_of(db, outliers.lead_chart)
    panel, alarms = spec["vconcat"]
    assert header_labels(panel["facet"]["row"]) == ["micro · 1m · seed 3"]
    leads = {r["signal"]: r for r in panel["data"]["values"]}
    assert set(leads) == set(fx.SIGNALS)
    for signal, first in fx.OUTLIER_FIRST_FLAG.items():
        got = leads[signal]
        assert got["first_flag_step"] == first
        assert got["final_step"] == fx.FINAL
        if first is None:
            assert got["label"] == "never flags this run"
        else:
            assert got["label"].startswith(f"lead {fx.FINAL - first:,} steps")
            # The score at the first flag is the mart's row at that step.
            at = next(r for r in rows["fct_stability_forecast"]
                      if (r["model_size"], r["seed"], r["signal"], r["step"])
                      == (*fx.OUTLIER, signal, first))  # fmt: skip
            assert got["flag_score"] == at["score"]
    # False alarms, counted here from the per-step rows: stable runs flagged at some step.
    expected: dict[tuple[str, str], tuple[int, set[int]]] = {}
    for r in rows["fct_stability_forecast"]:
        if r["is_outlier_at_end"]:
            continue
        seeds, flagged = expected.setdefault((r["model_size"], r["signal"]), (set(), set()))
        seeds.add(r["seed"])
        if r["flags"]:
            flagged.add(r["seed"])
    cells = {(c["model_size"], c["signal"]): c for c in alarms["data"]["values"]}
    assert set(cells) == set(expected)
    for key, (seeds, flagged) in expected.items():
        assert cells[key]["text"] == f"{len(flagged)} of {len(seeds)}"
    assert cells[("200k", "performance")]["text"] == "1 of 5"


def test_lead_time_needs_an_outlier_run(tmp_path):
    stable = [{**r, "is_outlier_at_end": False} for r in fx.stability_forecast()]
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_stability_forecast": stable})
    assert spec_of(db, outliers.lead_chart) is None


# ---------- loss spikes


def test_every_loss_spike_is_marked_at_its_own_step_and_loss(warehouse):
    db, rows = warehouse
    spec = spec_of(db, loss_curves.spikes_chart)
    data = values_of(spec)
    log = [r for r in data if r["kind"] == "log"]
    marked = [r for r in data if r["kind"] == "spike"]
    # The micro log is short: every row is drawn, with its run's status.
    assert len(log) == len(rows["stg_lake__training_log"])
    assert {r["status"] for r in log if (r["model_size"], r["seed"]) == fx.OUTLIER} == {"outlier run"}
    assert {r["status"] for r in log if (r["model_size"], r["seed"]) != fx.OUTLIER} == {"stable run"}
    # One mark per fct_loss_spikes row: the outlier's spikes at steps 100, 101, 102, each
    # at its logged loss, with the mart's window and score for the tooltip.
    assert [(r["model_size"], r["seed"], r["step"]) for r in marked] == [(*fx.OUTLIER, step) for step in fx.SPIKE_STEPS]
    logged = {(r["model_size"], r["seed"], r["step"]): r["loss"] for r in rows["stg_lake__training_log"]}
    inserted = {r["step"]: r for r in rows["fct_loss_spikes"]}
    for mark in marked:
        assert mark["loss"] == logged[(*fx.OUTLIER, mark["step"])]
        for column in ("window_median", "robust_deviation", "deviation", "threshold"):
            assert mark[column] == inserted[mark["step"]][column]
    labels = header_labels(spec["facet"]["row"])
    assert labels == ["micro · 200k", "micro · 1m"]
    lines, marks = spec["spec"]["layer"]
    assert lines["mark"]["type"] == "line" and marks["mark"]["type"] == "point"
    assert marks["transform"] == [{"filter": "datum.kind === 'spike'"}]
    assert marks["encoding"]["x"]["field"] == "step_plus_one"
    assert marks["encoding"]["y"]["field"] == "loss"
    assert_log_step_axis(lines["encoding"]["x"])
    assert spec["title"]["subtitle"][1:] == [
        "Dots: the 3 loss spikes of 1 run, each at its own step and loss.",
        "A spike: after warm-up, a loss more than 8 robust deviations (1.4826 × MAD) above the "
        "median of the steps before.",
    ]


def log_row(seed: int, step: int, loss: float) -> dict[str, Any]:
    return dict(suite="s", model_size="1m", seed=seed, step=step, extraction_id="e", loss=loss,
                lr=0.001, grad_norm=None, tokens_seen=None)  # fmt: skip


def spike_row(seed: int, step: int, loss: float, size: str = "1m") -> dict[str, Any]:
    return dict(suite="s", model_size=size, seed=seed, step=step, loss=loss, window_median=3.0,
                robust_deviation=0.1, deviation=(loss - 3.0) / 0.1, threshold=8.0,
                is_after_warmup=True)  # fmt: skip


def test_spikes_without_a_log_or_a_spike_mart(tmp_path):
    log = [log_row(seed, s, 3.0 + seed + 1.0 / s) for seed in (0, 1) for s in range(1, 41)]
    # Run 1 spikes twice; a 7m run has spikes but no training log: nothing to mark them on.
    spikes = [spike_row(1, 20, 9.0), spike_row(1, 33, 8.5), spike_row(0, 25, 7.0, size="7m")]
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {
        "fct_loss_spikes": spikes, "stg_lake__training_log": log,
    })  # fmt: skip
    spec = spec_of(db, loss_curves.spikes_chart)
    data = values_of(spec)
    marked = [(r["model_size"], r["seed"], r["step"], r["loss"])
              for r in data if r["kind"] == "spike"]  # fmt: skip
    assert marked == [("1m", 1, 20, 9.0), ("1m", 1, 33, 8.5)]
    # Without fct_run_outliers every run is just "run".
    assert {r["status"] for r in data if r["kind"] == "log"} == {"run"}
    assert spec["title"]["subtitle"][1] == ("Dots: the 2 loss spikes of 1 run, each at its own step and loss.")

    # No spike: the lines alone, and the subtitle says so.
    none = fx.make_stability_warehouse(tmp_path / "n.duckdb", {
        "fct_loss_spikes": [], "stg_lake__training_log": log,
    })  # fmt: skip
    spec = spec_of(none, loss_curves.spikes_chart)
    assert not [r for r in values_of(spec) if r["kind"] == "spike"]
    assert spec["title"]["subtitle"][1:] == ["No run has a loss spike."]

    # fct_loss_spikes not built: the lines alone, and the subtitle names the mart.
    missing = fx.make_stability_warehouse(tmp_path / "m.duckdb", {"stg_lake__training_log": log})
    spec = spec_of(missing, loss_curves.spikes_chart)
    assert len(values_of(spec)) == len(log)
    assert spec["title"]["subtitle"][1:] == ["fct_loss_spikes is not built yet: no loss spikes to mark."]

    # fct_loss_spikes without its columns: an error naming the warehouse file.
    stale = fx.make_stability_warehouse(tmp_path / "s.duckdb", {"stg_lake__training_log": log})
    con = duckdb.connect(str(stale))
    con.execute("create table fct_loss_spikes (suite varchar, model_size varchar)")
    con.close()
    with pytest.raises(marts.MartError, match=r"fct_loss_spikes in .*s\.duckdb lacks column"):
        spec_of(stale, loss_curves.spikes_chart)


def test_long_logs_are_thinned_keeping_spikes_and_ends(tmp_path):
    n = 20_000
    spike = 12_345
    # Two spikes in the same bin: the bin's highest loss is kept anyway, the lower
    # spike because it is in fct_loss_spikes.
    log = [log_row(0, s, 10.0 if s == spike else 9.0 if s == spike + 1 else 3.0 + 1.0 / s) for s in range(1, n + 1)]
    spikes = [spike_row(0, spike, 10.0), spike_row(0, spike + 1, 9.0)]
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {
        "fct_loss_spikes": spikes, "stg_lake__training_log": log,
    })  # fmt: skip
    data = values_of(spec_of(db, loss_curves.spikes_chart))
    drawn = [r for r in data if r["kind"] == "log"]
    steps = [r["step"] for r in drawn]
    assert len(steps) == len(set(steps))
    # At most two rows per bin plus the last step and the spikes.
    assert len(steps) <= 2 * loss_curves.MAX_POINTS_PER_RUN + 1 + len(spikes)
    assert {1, spike, spike + 1, n} <= set(steps)
    assert next(r["loss"] for r in drawn if r["step"] == spike) == 10.0
    assert next(r["loss"] for r in drawn if r["step"] == spike + 1) == 9.0
    assert [r["step"] for r in data if r["kind"] == "spike"] == [spike, spike + 1]


def test_training_log_view_that_cannot_read_the_lake_names_the_warehouse(tmp_path):
    parquet = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pylist([log_row(0, 1, 3.0)]), parquet)
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema staging")
    con.execute(f"create view staging.stg_lake__training_log as select * from read_parquet('{parquet}')")
    con.close()
    parquet.unlink()  # the lake moved away
    with pytest.raises(
        marts.MartError,
        match=r"w\.duckdb.*stg_lake__training_log|stg_lake__training_log.*w\.duckdb",
    ):
        spec_of(db, loss_curves.spikes_chart)


# ---------- integrity


def test_integrity_findings_with_twins_and_previous_steps(warehouse):
    db, rows = warehouse
    spec = spec_of(db, integrity.chart)
    layers = spec["layer"]
    assert [layer["mark"]["type"] for layer in layers] == ["rule", "point", "point"]
    link, _twin, points = layers
    findings = rows["fct_checkpoint_integrity"]
    key = ("finding", "model_size", "seed", "step")
    assert sorted(tuple(r[k] for k in key) for r in points["data"]["values"]) == sorted(
        tuple(r[k] for k in key) for r in findings
    )
    links = {(r["finding"], r["run"], r["other_run"], r["step"], r["other_step"])
             for r in link["data"]["values"]}  # fmt: skip
    assert links == {
        ("duplicate_weights", "micro · 1m · seed 2", "micro · 1m · seed 2", 64, 32),
        ("duplicate_weights", "micro · 1m · seed 2", "micro · 1m · seed 2", 32, 64),
        ("duplicate_weights", "micro · 200k · seed 0", "micro · 200k · seed 1", 128, 128),
        ("duplicate_weights", "micro · 200k · seed 1", "micro · 200k · seed 0", 128, 128),
        ("lineage_break", "micro · 1m · seed 3", "micro · 1m · seed 3", 128, 96),
    }
    # Runs by suite, size in parameter order, seed.
    assert points["encoding"]["y"]["scale"]["domain"] == [
        "micro · 200k · seed 0", "micro · 200k · seed 1", "micro · 200k · seed 4",
        "micro · 1m · seed 2", "micro · 1m · seed 3",
    ]  # fmt: skip
    assert_log_step_axis(points["encoding"]["x"])
    assert points["encoding"]["shape"]["field"] == "finding_label"
    assert spec["title"]["subtitle"][0].startswith(
        "6 findings: 4 duplicate weights (both checkpoints of each identical pair), "
        "1 missing checkpoint, 1 lineage break."
    )


# ---------- the report


def test_empty_or_missing_marts_are_no_data_yet(tmp_path):
    empty = {name: [] for name in fx.DDL}
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", empty)
    for name, build in MY_FIGURES.items():
        assert spec_of(db, build) is None, name
    page = build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    for name in MY_FIGURES:
        section = page[page.index(f'<section id="{name}">') :]
        section = section[: section.index("</section>")]
        assert "No data yet" in section, name
    assert page.count("in the warehouse") == len(report.FIGURES)

    missing = build_report(mark_as_warehouse(fx.make_stability_warehouse(tmp_path / "m.duckdb", {})), tmp_path / "m")
    text = missing.read_text(encoding="utf-8")
    for mart in ("fct_training_phases", "fct_run_outliers", "fct_stability_forecast",
                 "fct_checkpoint_integrity", "stg_lake__training_log"):  # fmt: skip
        assert f"mart {mart} is not in the warehouse" in text


def test_integrity_without_findings_says_how_many_checkpoints_were_checked(tmp_path):
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_checkpoint_integrity": []})
    con = duckdb.connect(str(db))
    con.execute("create table dim_checkpoints (step bigint, is_present boolean)")
    con.execute("insert into dim_checkpoints values (0, true), (1, true), (2, false), (4, true)")
    con.close()
    spec = spec_of(db, integrity.chart)
    [line] = values_of(spec)
    assert line["text"].startswith("No findings: none of the 3 checkpoints present")


def test_lead_time_without_outliers_says_what_is_missing(tmp_path):
    stable = [{**r, "is_outlier_at_end": False} for r in fx.stability_forecast()]
    db = fx.make_stability_warehouse(tmp_path / "w.duckdb", {"fct_stability_forecast": stable})
    page = build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    assert "has no run that is an outlier at the end (is_outlier_at_end)" in page


@pytest.mark.parametrize(
    "mart,build",
    [
        ("fct_training_phases", training_maps.chart),
        ("fct_run_outliers", outliers.chart),
        ("fct_stability_forecast", outliers.lead_chart),
        ("fct_checkpoint_integrity", integrity.chart),
    ],
)
def test_mart_without_its_columns_names_the_file(tmp_path, mart, build):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute(f"create table {mart} (suite varchar, model_size varchar)")
    con.close()
    with pytest.raises(marts.MartError, match=rf"{mart} in .*w\.duckdb lacks column"):
        spec_of(db, build)


def test_registry_has_the_new_figures():
    names = [f.name for f in report.FIGURES]
    assert set(MY_FIGURES) <= set(names)
    assert names.index("loss_spikes") == names.index("loss_curves") + 1
    for figure in report.FIGURES:
        if figure.name in MY_FIGURES:
            assert figure.build is MY_FIGURES[figure.name]


def test_sizes_in_parameter_order_from_dim_runs(warehouse, tmp_path):
    db, _ = warehouse
    bare = fx.make_stability_warehouse(tmp_path / "bare.duckdb", {})
    found = {}
    for name, path in (("built", db), ("bare", bare)):
        con = duckdb.connect(str(path), read_only=True)
        try:
            found[name] = marts.size_parameters(con)
        finally:
            con.close()
    assert found["built"] == fx.NOMINAL_PARAMETERS
    assert marts.sizes_in_order(["1m", "big", "200k"], found["built"]) == ["200k", "1m", "big"]
    # Without dim_runs nothing states a size's parameters: sizes go by name.
    assert found["bare"] == {}
    assert marts.sizes_in_order(["200k", "big", "1m"], found["bare"]) == ["1m", "200k", "big"]
