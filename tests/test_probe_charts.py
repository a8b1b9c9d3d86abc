"""The probe charts: best layer, baselines, facets, heatmap, and the report entries.

The warehouses are built here with plain DuckDB DDL in the marts' contract shape (the
dbt models are tested elsewhere), from per-seed probe scores drawn at random around
learning curves; the seed statistics are computed here with numpy, and the expected
best layers and largest size are worked out from the per-seed values, never taken
from the chart code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from polypythias.analyses import marts, probes, report
from polypythias.analyses.report import build_report
from warehouse_mark import mark_as_warehouse

CONSISTENCY_DDL = """
create table fct_probe_consistency (
    suite varchar, model_size varchar, nominal_parameters double, step bigint,
    task varchar, layer integer, metric varchar, n_runs bigint,
    value_median double, value_q25 double, value_q75 double, value_mean double,
    value_std double, value_min double, value_max double
)
"""
SCORES_DDL = """
create table fct_probe_scores (
    suite varchar, model_size varchar, nominal_parameters double, seed bigint, step bigint,
    task varchar, level varchar, layer integer, metric varchar, value double,
    majority_accuracy double, codelength double, uniform_codelength double,
    n_classes integer, n_train bigint, n_test bigint, extraction_id varchar
)
"""
DDL = {"fct_probe_consistency": CONSISTENCY_DDL, "fct_probe_scores": SCORES_DDL}

SUITE = "micro"
# "1m" sorts before "200k" by name: colours and "largest" must follow parameters.
SIZES = (("1m", 1.0e6), ("200k", 2.0e5))
SEEDS = (0, 1, 2, 3, 4)
STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256)  # the micro schedule
LAYERS = (0, 1, 2, 3, 4)
# task -> (level, n_classes, n_train, majority accuracy, layer profile peak, steepness)
TASKS = {
    "pos": ("token", 9, 2000, 0.28, 2.0, 1.0),
    "antecedent": ("sequence", 4, 600, 0.42, 3.5, 1.6),
}


def learned(task: str, size: str, layer: int, step: int) -> float:
    """Mean probe accuracy: rises with log steps, peaks at a task's middle layers."""
    _, _, _, majority, peak, slow = TASKS[task]
    ceiling = (0.95 if size == "1m" else 0.85) - 0.07 * abs(layer - peak)
    mid = 3.0 * slow + (0.5 if size == "200k" else 0.0)
    progress = 1.0 / (1.0 + math.exp(-(math.log(step + 1) - mid) * 1.6))
    start = majority + (0.15 if layer == 0 and task == "pos" else 0.03)
    return start + (ceiling - start) * progress


def per_seed(seed: int = 11) -> list[dict[str, Any]]:
    """fct_probe_scores rows: accuracy, macro_f1 and compression per checkpoint."""
    rng = np.random.default_rng(seed)
    rows = []
    for size, params in SIZES:
        for seed_ in SEEDS:
            for step in STEPS:
                for task, (level, n_classes, n_train, majority, *_) in TASKS.items():
                    uniform = n_train * math.log2(n_classes)
                    for layer in LAYERS:
                        acc = float(np.clip(learned(task, size, layer, step)
                                            + rng.normal(0, 0.02), 0, 1))  # fmt: skip
                        compression = 1.0 + 3.0 * (acc - majority) + float(rng.normal(0, 0.05))
                        codelength = uniform / max(compression, 0.5)
                        key = dict(
                            suite=SUITE, model_size=size, nominal_parameters=params, seed=seed_,
                            step=step, task=task, level=level, layer=layer,
                            majority_accuracy=majority, codelength=codelength,
                            uniform_codelength=uniform, n_classes=n_classes, n_train=n_train,
                            n_test=n_train // 3,
                        )  # fmt: skip
                        for metric, value in (
                            ("accuracy", acc),
                            ("macro_f1", acc * 0.9),
                            ("compression", uniform / codelength),
                        ):
                            rows.append({**key, "metric": metric, "value": value})
    return rows


def consistency(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fct_probe_consistency from fct_probe_scores, with numpy (linear quantiles)."""
    groups: dict[tuple, list[float]] = {}
    first: dict[tuple, dict[str, Any]] = {}
    for r in scores:
        key = (r["suite"], r["model_size"], r["step"], r["task"], r["layer"], r["metric"])
        groups.setdefault(key, []).append(r["value"])
        first.setdefault(key, r)
    rows = []
    for key, values in groups.items():
        v = np.array(values)
        q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
        r = first[key]
        rows.append(dict(
            suite=r["suite"], model_size=r["model_size"],
            nominal_parameters=r["nominal_parameters"], step=r["step"], task=r["task"],
            layer=r["layer"], metric=r["metric"], n_runs=len(v), value_median=float(med),
            value_q25=float(q25), value_q75=float(q75), value_mean=float(v.mean()),
            value_std=float(v.std(ddof=1)) if len(v) > 1 else None,
            value_min=float(v.min()), value_max=float(v.max()),
        ))  # fmt: skip
    return rows


def probe_marts(seed: int = 11) -> dict[str, list[dict[str, Any]]]:
    scores = per_seed(seed)
    return {"fct_probe_scores": scores, "fct_probe_consistency": consistency(scores)}


def make_probe_warehouse(path: Path, rows: dict[str, list[dict[str, Any]]]) -> Path:
    """A warehouse with the given marts (a mart absent from ``rows`` is not created)."""
    con = duckdb.connect(str(path))
    try:
        for table, table_rows in rows.items():
            con.execute(DDL[table])
            if table_rows:
                # Through Arrow: executemany takes seconds for a few thousand rows.
                con.register("new_rows", pa.Table.from_pylist(table_rows))
                con.execute(f"insert into {table} by name select * from new_rows")
                con.unregister("new_rows")
    finally:
        con.close()
    return path


def spec_of(db: Path, build) -> dict[str, Any] | None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        chart = build(con)
    finally:
        con.close()
    return None if chart is None else chart.to_dict()


def chart_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    data = spec["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def header_labels(channel: dict[str, Any]) -> list[Any]:
    """Facet header labels, in position order, from ``[labels...][datum.value]``."""
    expr = channel["header"]["labelExpr"]
    assert expr.endswith("[datum.value]")
    return json.loads(expr.removesuffix("[datum.value]"))


def expected_best_layers(scores: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(size, task) → argmax over layers of the median accuracy over seeds at the last step."""
    best = {}
    for size, _ in SIZES:
        for task in TASKS:
            medians = [
                np.median([r["value"] for r in scores if r["metric"] == "accuracy"
                           and r["model_size"] == size and r["task"] == task
                           and r["step"] == STEPS[-1] and r["layer"] == layer])
                for layer in LAYERS
            ]  # fmt: skip
            best[(size, task)] = LAYERS[int(np.argmax(medians))]
    return best


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    rows = probe_marts()
    return make_probe_warehouse(tmp_path_factory.mktemp("probes") / "w.duckdb", rows), rows


@pytest.fixture(scope="module")
def probe_spec(warehouse) -> dict[str, Any]:
    return spec_of(warehouse[0], probes.chart)


@pytest.fixture(scope="module")
def layer_spec(warehouse) -> dict[str, Any]:
    return spec_of(warehouse[0], probes.layer_chart)


def series_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in chart_rows(spec) if r["kind"] == "series"]


def test_each_size_is_drawn_at_its_best_layer(probe_spec, warehouse):
    best = expected_best_layers(warehouse[1]["fct_probe_scores"])
    # The data exercise the rule: the best layer differs between tasks and sizes.
    assert len(set(best.values())) > 1
    inserted = warehouse[1]["fct_probe_consistency"]
    for metric in ("accuracy", "compression"):
        panel = probes.PANELS[metric]
        got = {
            (r["model_size"], r["task"], r["step"]): r
            for r in series_of(probe_spec) if r["panel"] == panel
        }  # fmt: skip
        expected = {
            (r["model_size"], r["task"], r["step"]): r
            for r in inserted
            if r["metric"] == metric and r["layer"] == best[(r["model_size"], r["task"])]
        }
        assert set(got) == set(expected)
        for key, row in expected.items():
            assert got[key]["layer"] == row["layer"]
            assert got[key]["value"] == pytest.approx(row["value_median"])
            assert got[key]["band_low"] == pytest.approx(row["value_q25"])
            assert got[key]["band_high"] == pytest.approx(row["value_q75"])
            assert got[key]["basis"] == f"{len(SEEDS)} seeds"
    # The row header names each size's layer, smaller size first.
    labels = header_labels(probe_spec["facet"]["row"])
    assert [label[0] for label in labels] == sorted(TASKS)
    for task, label in zip(sorted(TASKS), labels):
        small, large = best[("200k", task)], best[("1m", task)]
        assert label == [task, f"best layer · 200k: {small}, 1m: {large}"]


def test_facets_are_tasks_by_measure(probe_spec):
    facet = probe_spec["facet"]
    assert facet["row"]["field"] == "task_index"
    assert facet["column"]["field"] == "panel_index"
    panels = header_labels(facet["column"])
    assert panels == [probes.PANELS["accuracy"], probes.PANELS["compression"]]
    labels = header_labels(facet["row"])
    # Each row sits in the cell its headers name.
    for r in chart_rows(probe_spec):
        assert labels[r["task_index"]][0] == r["task"]
        assert panels[r["panel_index"]] == r["panel"]
    assert probe_spec["resolve"]["scale"]["y"] == "independent"
    # No macro-F1 in this chart.
    assert {r["metric"] for r in series_of(probe_spec)} == {"accuracy", "compression"}


def test_baselines_are_majority_accuracy_and_uniform_code(probe_spec):
    rows = [r for r in chart_rows(probe_spec) if r["kind"] == "baseline"]
    got = {(r["task"], r["panel"]): r["baseline"] for r in rows}
    expected = {}
    for task, (*_, majority, _, _) in TASKS.items():
        expected[(task, probes.PANELS["accuracy"])] = majority
        expected[(task, probes.PANELS["compression"])] = 1.0
    assert got == pytest.approx(expected)
    assert len(rows) == len(expected)  # one rule per panel, not one per step or seed
    rule, band, line = probe_spec["spec"]["layer"]
    assert rule["mark"]["type"] == "rule" and rule["mark"]["strokeDash"]
    assert rule["encoding"]["y"]["field"] == "baseline"
    assert rule["transform"] == [{"filter": "datum.kind === 'baseline'"}]
    for layer in (band, line):
        assert layer["transform"] == [{"filter": "datum.kind === 'series'"}]


def test_band_under_line_colours_in_parameter_order(probe_spec):
    _, band, line = probe_spec["spec"]["layer"]
    assert band["mark"]["type"] == "area" and line["mark"]["type"] == "line"
    assert band["encoding"]["y"]["field"] == "band_low"
    assert band["encoding"]["y2"]["field"] == "band_high"
    assert line["encoding"]["y"]["field"] == "value"
    for layer in (band, line):
        assert layer["encoding"]["color"]["field"] == "model_size"
        assert layer["encoding"]["color"]["scale"]["domain"] == ["200k", "1m"]
    assert line["encoding"]["strokeDash"]["field"] == "suite"
    tooltips = {t["field"] for t in line["encoding"]["tooltip"]}
    assert {"task", "model_size", "layer", "step", "value", "band", "basis"} <= tooltips
    # The chart draws the mart's rows: nothing in it summarises rows.
    text = json.dumps(probe_spec)
    for word in ('"aggregate"', '"joinaggregate"', '"window"', '"bin"', '"density"'):
        assert word not in text


def test_step_axis_is_log_of_step_plus_one(probe_spec):
    assert 0 in {r["step"] for r in series_of(probe_spec)}
    for layer in probe_spec["spec"]["layer"][1:]:
        x = layer["encoding"]["x"]
        assert x["field"] == "step_plus_one"
        assert x["scale"]["type"] == "log"
        assert "log scale" in x["title"] and "+ 1" in x["title"]
    assert {"calculate": "datum.step + 1", "as": "step_plus_one"} in probe_spec["spec"]["transform"]


def hand_rows(cells: list[tuple]) -> list[dict[str, Any]]:
    """Consistency rows from (size, params, step, task, layer, metric, median)."""
    return [
        dict(suite=SUITE, model_size=size, nominal_parameters=params, step=step, task=task,
             layer=layer, metric=metric, n_runs=3, value_median=v, value_q25=v, value_q75=v,
             value_mean=v, value_std=0.0, value_min=v, value_max=v)
        for size, params, step, task, layer, metric, v in cells
    ]  # fmt: skip


def test_best_layer_ties_go_low_and_missing_medians_are_ignored(tmp_path):
    cells = [
        # Step 10 is the last: layers 1 and 2 tie (0.8), layer 3 has no median.
        ("s", 1e6, 10, "t", 0, "accuracy", 0.5),
        ("s", 1e6, 10, "t", 1, "accuracy", 0.8),
        ("s", 1e6, 10, "t", 2, "accuracy", 0.8),
        ("s", 1e6, 10, "t", 3, "accuracy", None),
        # Layer 0 is best earlier on: only the final step counts.
        ("s", 1e6, 5, "t", 0, "accuracy", 0.9),
        ("s", 1e6, 5, "t", 1, "accuracy", 0.6),
        ("s", 1e6, 5, "t", 2, "accuracy", 0.7),
        # A step where only the layer without a final median has a value.
        ("s", 1e6, 7, "t", 1, "accuracy", 0.55),
        # Macro-F1 is not what "best" means.
        ("s", 1e6, 10, "t", 0, "macro_f1", 0.99),
    ]
    db = make_probe_warehouse(tmp_path / "w.duckdb", {"fct_probe_consistency": hand_rows(cells)})
    spec = spec_of(db, probes.chart)
    drawn = series_of(spec)
    assert {r["layer"] for r in drawn} == {1}
    assert sorted((r["step"], r["value"]) for r in drawn) == [(5, 0.6), (7, 0.55), (10, 0.8)]
    # No compression rows and no scores mart: one column, no rules.
    assert header_labels(spec["facet"]["column"]) == [probes.PANELS["accuracy"]]
    assert not [r for r in chart_rows(spec) if r["kind"] == "baseline"]
    assert header_labels(spec["facet"]["row"]) == [["t", "best layer · s: 1"]]


def test_best_layer_uses_each_sizes_own_last_step(tmp_path):
    cells = [
        ("small", 2e5, 100, "t", 0, "accuracy", 0.9),
        ("small", 2e5, 100, "t", 1, "accuracy", 0.4),
        ("big", 1e6, 100, "t", 0, "accuracy", 0.9),
        ("big", 1e6, 100, "t", 1, "accuracy", 0.4),
        ("big", 1e6, 200, "t", 0, "accuracy", 0.5),
        ("big", 1e6, 200, "t", 1, "accuracy", 0.95),
    ]
    db = make_probe_warehouse(tmp_path / "w.duckdb", {"fct_probe_consistency": hand_rows(cells)})
    drawn = series_of(spec_of(db, probes.chart))
    assert {(r["model_size"], r["layer"]) for r in drawn} == {("small", 0), ("big", 1)}


def test_several_suites_name_their_layers_on_separate_lines(tmp_path):
    rows = hand_rows([
        ("70m", 7e7, 10, "t", 0, "accuracy", 0.9),
        ("70m", 7e7, 10, "t", 1, "accuracy", 0.4),
    ]) + [
        {**r, "suite": "deduped", "layer": 1 - r["layer"]}
        for r in hand_rows([
            ("70m", 7e7, 10, "t", 0, "accuracy", 0.9),
            ("70m", 7e7, 10, "t", 1, "accuracy", 0.4),
        ])
    ]  # fmt: skip
    db = make_probe_warehouse(tmp_path / "w.duckdb", {"fct_probe_consistency": rows})
    spec = spec_of(db, probes.chart)
    assert header_labels(spec["facet"]["row"]) == [["t", "best layer", "deduped · 70m: 1", f"{SUITE} · 70m: 0"]]
    assert {(r["suite"], r["layer"]) for r in series_of(spec)} == {("deduped", 1), (SUITE, 0)}
    assert spec["spec"]["layer"][2]["encoding"]["strokeDash"]["scale"]["domain"] == ["deduped", SUITE]


def test_layer_heatmap_is_the_largest_size_at_every_layer(layer_spec, warehouse):
    inserted = warehouse[1]["fct_probe_consistency"]
    largest = max(SIZES, key=lambda s: s[1])[0]
    assert largest == "1m" and max(s for s, _ in SIZES) != largest  # name order would differ
    got = {(r["task"], r["layer"], r["step"]): r for r in chart_rows(layer_spec)}
    expected = {
        (r["task"], r["layer"], r["step"]): r
        for r in inserted if r["metric"] == "accuracy" and r["model_size"] == largest
    }  # fmt: skip
    assert set(got) == set(expected)
    assert len(got) == len(TASKS) * len(LAYERS) * len(STEPS)
    for key, row in expected.items():
        assert got[key]["value"] == pytest.approx(row["value_median"])
        assert got[key]["model_size"] == largest
    facet = layer_spec["facet"]
    tasks = header_labels(facet["column"])
    assert tasks == sorted(TASKS)
    assert header_labels(facet["row"]) == [f"{SUITE} · {largest}"]
    assert all(tasks[r["task_index"]] == r["task"] for r in chart_rows(layer_spec))
    enc = layer_spec["spec"]["encoding"]
    assert layer_spec["spec"]["mark"]["type"] == "rect"
    assert enc["color"]["field"] == "value"
    # Embeddings at the bottom; every checkpoint a column, in step order.
    assert enc["y"]["field"] == "layer"
    assert enc["y"]["scale"]["domain"] == sorted(LAYERS, reverse=True)
    assert enc["x"]["field"] == "step" and enc["x"]["scale"]["domain"] == list(STEPS)
    assert largest in layer_spec["title"]["subtitle"]


def test_largest_size_without_parameters_counts_as_smallest(tmp_path):
    cells = [
        ("custom", None, 1, "t", 0, "accuracy", 0.5),
        ("70m", 7e7, 1, "t", 0, "accuracy", 0.6),
        ("160m", 1.6e8, 1, "t", 0, "accuracy", 0.7),
    ]
    db = make_probe_warehouse(tmp_path / "w.duckdb", {"fct_probe_consistency": hand_rows(cells)})
    assert {r["model_size"] for r in chart_rows(spec_of(db, probes.layer_chart))} == {"160m"}


@pytest.mark.parametrize("build", [probes.chart, probes.layer_chart])
def test_no_chart_without_accuracy_rows(tmp_path, build):
    missing = make_probe_warehouse(tmp_path / "a.duckdb", {})
    empty = make_probe_warehouse(tmp_path / "b.duckdb", {"fct_probe_consistency": []})
    f1_only = make_probe_warehouse(
        tmp_path / "c.duckdb",
        {"fct_probe_consistency": hand_rows([("s", 1e6, 1, "t", 0, "macro_f1", 0.5)])},
    )
    for db in (missing, empty, f1_only):
        assert spec_of(db, build) is None


def test_mart_without_layer_names_the_file(tmp_path):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table fct_probe_consistency (suite varchar, step bigint)")
    con.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        with pytest.raises(marts.MartError, match=r"w\.duckdb.*layer"):
            probes.chart(con)
    finally:
        con.close()


def test_report_draws_both_probe_figures(tmp_path, warehouse):
    index = build_report(warehouse[0], tmp_path / "out")
    page = index.read_text(encoding="utf-8")
    for name in (probes.NAME, probes.LAYERS_NAME):
        assert (index.parent / f"{name}.html").is_file()
        assert (index.parent / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f'id="vis-{name}"' in page
    section = page[page.index(f'<section id="{probes.NAME}">') :]
    assert "No data yet" not in section[: section.index("</section>")]


def test_report_without_probe_rows_says_so(tmp_path):
    f1_only = hand_rows([("s", 1e6, 1, "t", 0, "macro_f1", 0.5)])
    for name, rows, reason in (
        ("missing", {}, "fct_probe_consistency is not in the warehouse"),
        ("empty", {"fct_probe_consistency": []}, "fct_probe_consistency in the warehouse"),
        ("f1", {"fct_probe_consistency": f1_only}, "has no accuracy rows"),
    ):
        db = mark_as_warehouse(make_probe_warehouse(tmp_path / f"{name}.duckdb", rows))
        out = tmp_path / name
        page = build_report(db, out).read_text(encoding="utf-8")
        for figure in (probes.NAME, probes.LAYERS_NAME):
            section = page[page.index(f'<section id="{figure}">') :]
            section = section[: section.index("</section>")]
            assert "No data yet" in section and reason in section
            assert not (out / f"{figure}.png").exists()


def test_registry_has_the_probe_figures():
    figures = {f.name: f for f in report.FIGURES}
    assert figures[probes.NAME].build is probes.chart
    assert figures[probes.LAYERS_NAME].build is probes.layer_chart
    for name in (probes.NAME, probes.LAYERS_NAME):
        assert figures[name].mart == "fct_probe_consistency"
        assert figures[name].needs == "accuracy rows"
