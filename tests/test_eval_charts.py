"""The performance and gender-bias charts: their data, facets, twins and step axis.

The warehouses are built here with plain DuckDB DDL in the marts' contract shape (the
dbt models are tested elsewhere). Expected values are recomputed from the inserted
rows with numpy, never taken from the chart code.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from polypythias.analyses import gender_bias, performance, report
from polypythias.analyses.report import build_report
from warehouse_mark import mark_as_warehouse

CONSISTENCY_DDL = """
create table fct_eval_consistency (
    suite varchar, model_size varchar, nominal_parameters double, step bigint,
    task varchar, metric varchar, filter varchar, num_fewshot integer, n_runs bigint,
    value_median double, value_q25 double, value_q75 double, value_mean double,
    value_std double, value_min double, value_max double, stderr_mean double
)
"""
SELF_DDL = """
create table fct_self_consistency (
    suite varchar, model_size varchar, nominal_parameters double, seed bigint, step bigint,
    final_step bigint, task varchar, filter varchar, num_fewshot integer, n_items bigint,
    observed_agreement double, kappa double
)
"""
INTER_DDL = """
create table fct_inter_seed_agreement (
    suite varchar, model_size varchar, nominal_parameters double, step bigint, task varchar,
    filter varchar, num_fewshot integer, seed bigint, reference_seed bigint, n_items bigint,
    observed_agreement double, kappa double, mean_pairwise_kappa double, n_seed_pairs bigint
)
"""

SUITES = ("polypythias", "polypythias-deduped")
# "160m" sorts before "70m" by name: colour order must follow parameters instead.
SIZES = (("70m", 7.0e7), ("160m", 1.6e8))
STEPS = (0, 1, 4, 64, 512, 1000)
SEEDS = (0, 1, 2, 3)

# task -> [(metric, filter, num_fewshot)] present in the consistency mart.
SERIES = {
    "arc_easy": [("acc", "none", 0), ("acc_norm", "none", 0), ("acc", "none", 5)],
    "lambada_openai": [("ppl", "none", 0), ("acc", "none", 0)],
    "logiqa": [("acc_norm", "none", 0)],  # no acc: falls back to the first metric
    "wsc": [("acc", "none", 5), ("acc", "none", 10)],  # few-shot only: fewest shots
    "blimp_anaphor_gender_agreement": [("acc", "none", 0)],
    "micro_verb_agreement": [("acc", "strict", 0), ("acc", "none", 0), ("acc_norm", "none", 0)],
    "crows_pairs_english_gender": [("likelihood_difference", "none", 0), ("pct_stereotype", "none", 0)],
    "simple_cooccurrence_bias": [("likelihood_diff", "none", 0), ("pct_male_preferred", "none", 0)],
    "micro_gender_agreement": [("acc", "none", 0)],
    "hendrycksTest-anatomy": [("acc", "none", 5)],
    "hendrycksTest-virology": [("acc", "none", 5)],
}
# What the performance chart must draw, worked out by hand from the rules.
EXPECTED_PERFORMANCE = [
    ("arc_easy", "acc", "none", 0, "arc_easy · acc"),
    ("lambada_openai", "acc", "none", 0, "lambada_openai · acc"),
    ("logiqa", "acc_norm", "none", 0, "logiqa · acc_norm"),
    ("wsc", "acc", "none", 5, "wsc · acc · 5-shot"),
    ("blimp_anaphor_gender_agreement", "acc", "none", 0, "blimp_anaphor_gender_agreement · acc"),
    ("micro_gender_agreement", "acc", "none", 0, "micro_gender_agreement · acc"),
    ("micro_verb_agreement", "acc", "none", 0, "micro_verb_agreement · acc"),
]
KAPPA_TASKS = ("arc_easy", "micro_verb_agreement")


def _insert(con, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        names = list(rows[0])
        con.executemany(
            f"insert into {table} ({', '.join(names)}) values ({', '.join('?' * len(names))})",
            [[row[n] for n in names] for row in rows],
        )


def eval_rows(seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """Rows for the three marts, from per-seed scores drawn at random."""
    rng = np.random.default_rng(seed)
    consistency, self_rows, inter_rows = [], [], []
    for suite in SUITES:
        for size, params in SIZES:
            key = dict(suite=suite, model_size=size, nominal_parameters=params)
            for step in STEPS:
                for task, series in SERIES.items():
                    for metric, filt, shots in series:
                        values = rng.uniform(0.2, 0.9, len(SEEDS))
                        q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75])
                        consistency.append(dict(
                            **key, step=step, task=task, metric=metric, filter=filt,
                            num_fewshot=shots, n_runs=len(SEEDS), value_median=med,
                            value_q25=q25, value_q75=q75, value_mean=values.mean(),
                            value_std=values.std(ddof=1), value_min=values.min(),
                            value_max=values.max(), stderr_mean=0.01,
                        ))  # fmt: skip
                for task in KAPPA_TASKS:
                    for filt in ("none", "strict"):
                        kappas = rng.uniform(-0.1, 1.0, len(SEEDS))
                        kappas[1] = np.nan if filt == "none" and step == 4 else kappas[1]
                        for seed, kappa in zip(SEEDS, kappas):
                            self_rows.append(dict(
                                **key, seed=seed, step=step, final_step=STEPS[-1], task=task,
                                filter=filt, num_fewshot=0, n_items=50, observed_agreement=0.8,
                                kappa=None if np.isnan(kappa) else float(kappa),
                            ))  # fmt: skip
                        pairwise = float(rng.uniform(0.0, 1.0))
                        for seed in SEEDS[1:]:
                            inter_rows.append(dict(
                                **key, step=step, task=task, filter=filt, num_fewshot=0,
                                seed=seed, reference_seed=0, n_items=50, observed_agreement=0.7,
                                kappa=float(rng.uniform(0, 1)), mean_pairwise_kappa=pairwise,
                                n_seed_pairs=6,
                            ))  # fmt: skip
    return {
        "fct_eval_consistency": consistency,
        "fct_self_consistency": self_rows,
        "fct_inter_seed_agreement": inter_rows,
    }


DDL = {
    "fct_eval_consistency": CONSISTENCY_DDL,
    "fct_self_consistency": SELF_DDL,
    "fct_inter_seed_agreement": INTER_DDL,
}


def make_eval_warehouse(path: Path, rows: dict[str, list[dict[str, Any]]]) -> Path:
    """A warehouse with the given marts (a mart absent from ``rows`` is not created)."""
    con = duckdb.connect(str(path))
    try:
        for table, table_rows in rows.items():
            con.execute(DDL[table])
            _insert(con, table, table_rows)
    finally:
        con.close()
    return path


def spec_of(db: Path, module) -> dict[str, Any] | None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        chart = module.chart(con)
    finally:
        con.close()
    return None if chart is None else chart.to_dict()


def chart_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    data = spec["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    rows = eval_rows()
    return make_eval_warehouse(tmp_path_factory.mktemp("evals") / "w.duckdb", rows), rows


@pytest.fixture(scope="module")
def perf_spec(warehouse) -> dict[str, Any]:
    return spec_of(warehouse[0], performance)


def header_labels(channel: dict[str, Any]) -> list[str]:
    """Facet header labels, in position order, from ``[labels...][datum.value]``."""
    expr = channel["header"]["labelExpr"]
    assert expr.endswith("[datum.value]")
    return json.loads(expr.removesuffix("[datum.value]"))


def by_key(rows, panel):
    return {(r["task"], r["suite"], r["model_size"], r["step"]): r for r in rows if r["panel"] == panel}


def test_performance_facets_are_the_expected_tasks_and_panels(perf_spec):
    facet = perf_spec["facet"]
    expected = [label for *_, label in EXPECTED_PERFORMANCE]
    panels = [performance.SCORE, performance.SELF_KAPPA, performance.INTER_KAPPA]
    assert facet["row"]["field"] == "task_index"
    assert header_labels(facet["row"]) == expected
    assert facet["column"]["field"] == "panel_index"
    assert header_labels(facet["column"]) == panels
    rows = chart_rows(perf_spec)
    # Each row sits in the cell its header names.
    assert all(expected[r["task_index"]] == r["task"] for r in rows)
    assert all(panels[r["panel_index"]] == r["panel"] for r in rows)
    labels = {r["task"] for r in rows}
    assert labels == set(expected)
    assert not any("hendrycks" in label or "crows" in label for label in labels)
    assert perf_spec["resolve"]["scale"]["y"] == "independent"


def test_performance_scores_are_the_chosen_series_rows(perf_spec, warehouse):
    inserted = warehouse[1]["fct_eval_consistency"]
    got = by_key(chart_rows(perf_spec), performance.SCORE)
    expected = {}
    for task, metric, filt, shots, label in EXPECTED_PERFORMANCE:
        for r in inserted:
            if (r["task"], r["metric"], r["filter"], r["num_fewshot"]) == (task, metric, filt, shots):
                expected[(label, r["suite"], r["model_size"], r["step"])] = r
    assert set(got) == set(expected)
    for key, row in expected.items():
        assert got[key]["value"] == pytest.approx(row["value_median"])
        assert got[key]["band_low"] == pytest.approx(row["value_q25"])
        assert got[key]["band_high"] == pytest.approx(row["value_q75"])


def test_performance_kappa_panels_are_means_over_seeds(perf_spec, warehouse):
    rows = chart_rows(perf_spec)
    label = {task: lab for task, *_, lab in EXPECTED_PERFORMANCE}
    for panel, mart, field in (
        (performance.SELF_KAPPA, "fct_self_consistency", "kappa"),
        (performance.INTER_KAPPA, "fct_inter_seed_agreement", "mean_pairwise_kappa"),
    ):
        got = by_key(rows, panel)
        groups: dict[tuple, list[float]] = {}
        for r in warehouse[1][mart]:
            if r["filter"] == "none" and r[field] is not None:
                key = (label[r["task"]], r["suite"], r["model_size"], r["step"])
                groups.setdefault(key, []).append(r[field])
        assert set(got) == set(groups)
        for key, values in groups.items():
            assert got[key]["value"] == pytest.approx(float(np.mean(values)))
            assert got[key]["band_low"] is None and got[key]["band_high"] is None
    # The seed with a null κ at step 4 is left out of the mean, not counted as 0.
    some = by_key(rows, performance.SELF_KAPPA)[("arc_easy · acc", "polypythias", "70m", 4)]
    assert some["basis"] == f"mean of {len(SEEDS) - 1} seeds"


def test_performance_twins_both_drawn_by_dash_and_sizes_in_parameter_order(perf_spec):
    rows = chart_rows(perf_spec)
    for size, _ in SIZES:
        assert {r["suite"] for r in rows if r["model_size"] == size} == set(SUITES)
    band, line = perf_spec["spec"]["layer"]
    assert band["mark"]["type"] == "area" and line["mark"]["type"] == "line"
    assert line["encoding"]["strokeDash"]["field"] == "suite"
    assert line["encoding"]["strokeDash"]["scale"]["domain"] == sorted(SUITES)
    assert band["encoding"]["detail"]["field"] == "suite"
    for layer in (band, line):
        assert layer["encoding"]["color"]["field"] == "model_size"
        assert layer["encoding"]["color"]["scale"]["domain"] == ["70m", "160m"]


def assert_log_step_axis(layer: dict[str, Any], transforms: list[dict[str, Any]]) -> None:
    x = layer["encoding"]["x"]
    assert x["field"] == "step_plus_one"
    assert x["scale"]["type"] == "log"
    assert "log scale" in x["title"] and "+ 1" in x["title"]
    assert {"calculate": "datum.step + 1", "as": "step_plus_one"} in transforms


def test_performance_step_axis_is_log_of_step_plus_one(perf_spec):
    assert 0 in {r["step"] for r in chart_rows(perf_spec)}
    for layer in perf_spec["spec"]["layer"]:
        assert_log_step_axis(layer, perf_spec["spec"]["transform"])


def test_performance_without_kappa_marts_draws_scores_only(tmp_path):
    rows = eval_rows()
    db = make_eval_warehouse(tmp_path / "w.duckdb", {"fct_eval_consistency": rows["fct_eval_consistency"]})
    spec = spec_of(db, performance)
    assert header_labels(spec["facet"]["column"]) == [performance.SCORE]
    assert {r["panel"] for r in chart_rows(spec)} == {performance.SCORE}


def test_performance_without_known_tasks_shows_the_first_tasks_by_name(tmp_path):
    names = [f"hendrycksTest-subject{i:02d}" for i in range(20)]
    rows = [
        dict(suite="polypythias", model_size="70m", nominal_parameters=7e7, step=step, task=task,
             metric=metric, filter="none", num_fewshot=5, n_runs=1, value_median=v, value_q25=v,
             value_q75=v, value_mean=v, value_std=None, value_min=v, value_max=v, stderr_mean=0.01)
        for task in names for step in (0, 1000) for metric, v in (("acc", 0.3), ("acc_norm", 0.4))
    ]  # fmt: skip
    db = make_eval_warehouse(tmp_path / "w.duckdb", {"fct_eval_consistency": rows})
    spec = spec_of(db, performance)
    expected = [f"{t} · acc · 5-shot" for t in sorted(names)[: performance.MAX_TASKS]]
    assert header_labels(spec["facet"]["row"]) == expected
    assert {r["task"] for r in chart_rows(spec)} == set(expected)
    assert {r["value"] for r in chart_rows(spec)} == {0.3}


def test_gender_bias_panels_and_values(warehouse):
    spec = spec_of(warehouse[0], gender_bias)
    wanted = [
        ("blimp_anaphor_gender_agreement", "acc"),
        ("crows_pairs_english_gender", "pct_stereotype"),
        ("simple_cooccurrence_bias", "pct_male_preferred"),
        ("micro_gender_agreement", "acc"),
    ]
    assert spec["facet"]["field"] == "panel_index"
    panels = header_labels(spec["facet"])
    assert len(panels) == len(wanted)
    for panel, (_task, metric) in zip(panels, wanted):
        assert metric in panel
    rows = chart_rows(spec)
    assert all(panels[r["panel_index"]] == r["panel"] for r in rows)
    for panel, (task, metric) in zip(panels, wanted):
        expected = {
            (r["suite"], r["model_size"], r["step"]): r
            for r in warehouse[1]["fct_eval_consistency"]
            if (r["task"], r["metric"], r["filter"], r["num_fewshot"]) == (task, metric, "none", 0)
        }
        got = {(r["suite"], r["model_size"], r["step"]): r for r in rows if r["panel"] == panel}
        assert set(got) == set(expected)
        for key, row in expected.items():
            assert got[key]["value"] == pytest.approx(row["value_median"])
            assert got[key]["band_low"] == pytest.approx(row["value_q25"])
            assert got[key]["band_high"] == pytest.approx(row["value_q75"])
    rule, band, line = spec["spec"]["layer"]
    assert rule["mark"]["type"] == "rule"
    assert rule["encoding"]["y"] == {"datum": 0.5}
    assert line["encoding"]["strokeDash"]["field"] == "suite"
    assert_log_step_axis(line, spec["spec"]["transform"])


def test_gender_bias_shows_only_measures_present(tmp_path):
    rows = [
        r for r in eval_rows()["fct_eval_consistency"]
        if r["task"] in ("crows_pairs_english_gender", "arc_easy")
    ]  # fmt: skip
    db = make_eval_warehouse(tmp_path / "w.duckdb", {"fct_eval_consistency": rows})
    spec = spec_of(db, gender_bias)
    panels = header_labels(spec["facet"])
    assert len(panels) == 1 and "pct_stereotype" in panels[0]


def test_report_draws_both_figures(tmp_path, warehouse):
    index = build_report(warehouse[0], tmp_path / "out")
    page = index.read_text(encoding="utf-8")
    for module in (performance, gender_bias):
        assert (index.parent / f"{module.NAME}.html").is_file()
        assert (index.parent / f"{module.NAME}.png").read_bytes()[:4] == b"\x89PNG"
        assert f'id="vis-{module.NAME}"' in page
        assert html.escape(module.DESCRIPTION) in page
    # Only the eval marts are here: every other figure says so.
    assert page.count("No data yet") == len(report.FIGURES) - 2


def test_report_without_gender_rows_says_what_is_missing(tmp_path):
    rows = [r for r in eval_rows()["fct_eval_consistency"] if r["task"] == "arc_easy"]
    db = make_eval_warehouse(tmp_path / "w.duckdb", {"fct_eval_consistency": rows})
    page = build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    assert (tmp_path / "out" / "performance.png").is_file()
    assert not (tmp_path / "out" / "gender_bias.png").exists()
    assert "has no rows for blimp_anaphor_gender_agreement acc" in page


@pytest.mark.parametrize("empty", [True, False])
def test_report_without_eval_marts(tmp_path, empty):
    rows = {"fct_eval_consistency": []} if empty else {}
    db = mark_as_warehouse(make_eval_warehouse(tmp_path / "w.duckdb", rows))
    page = build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    # Both eval figures say why; the loss mart is absent in both cases.
    if empty:
        assert page.count("fct_eval_consistency in the warehouse") == 2
        assert page.count("has no rows") == 2
    else:
        assert page.count("fct_eval_consistency is not in the warehouse") == 2
    assert page.count("No data yet") == len(report.FIGURES)
    assert not list((tmp_path / "out").glob("*.png"))


def test_registry_has_the_eval_figures():
    names = [f.name for f in report.FIGURES]
    assert names.index("gender_bias") == names.index("performance") + 1
