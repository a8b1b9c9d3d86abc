"""Linear probes per layer over training, across seeds: two figures.

``probe_accuracy`` — for each probing task (one facet row), the probe's test accuracy
over training as the median across seeds with the 25th–75th percentile band, one colour
per model size (dash per suite), beside the compression of the same probe (uniform
codelength / online codelength of the train labels, Voita & Titov 2020) at the same
layer. Each size is drawn at its *best layer* for the task: the layer with the highest
median accuracy at that size's final step (the task's last step at that size; ties go
to the lower layer), named in the row header and the tooltip. A dotted rule marks the
majority-class baseline (test accuracy of always answering the train split's most
frequent label) in the accuracy column, and compression 1 (no better than the uniform
code) in the compression column.

``probe_layers`` — a layer × step heatmap of the median accuracy across seeds for the
largest model size (by nominal parameter count; a size whose name states none counts
as smaller than any that does), one panel per task; one row of panels per suite
that has that size. Steps are one column per checkpoint, in order, not to scale.

Layers: 0 is the embeddings, layer ``i`` the output of block ``i`` (Hugging Face
``output_hidden_states``). In GPT-NeoX the last entry already has the final layer norm
applied, so the top layer is the normalised output of the last block.

Marts: ``fct_probe_consistency`` (seed statistics, computed there; metrics ``accuracy``
and ``compression``), and, when present, ``fct_probe_scores`` for the majority-class
baseline. The charts never aggregate rows; the best layer is a selection among mart
rows.

The step axis of the line chart is logarithmic over ``step + 1`` (step 0 cannot sit on
a log scale), as in the loss and performance charts, and its title says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import altair as alt
import duckdb

from . import theme
from .encodings import BAND_TEXT, band_tooltip, counted
from .marts import AnyChart, mart_relation, query_rows, size_order
from .performance import band_and_line_layers, task_panel_grid

NAME = "probe_accuracy"
TITLE = "Linear probes across seeds at each size's best layer"
DESCRIPTION = (
    "Per probing task: test accuracy of a linear probe and its compression (uniform / online "
    "codelength) over training, median over seeds with 25th–75th percentile band, one colour "
    "per model size, at the layer with the best median accuracy at the size's final step; "
    "dotted lines: majority-class accuracy and compression 1."
)
LAYERS_NAME = "probe_layers"
LAYERS_TITLE = "Probe accuracy by layer and step for the largest model size"
LAYERS_DESCRIPTION = (
    "Median test accuracy over seeds of a linear probe at every layer (0 = embeddings) and "
    "checkpoint of the largest model size, one panel per probing task."
)
MART = "fct_probe_consistency"
SCORES_MART = "fct_probe_scores"

ACCURACY = "accuracy"
COMPRESSION = "compression"
# Column headers of the line chart, in column order.
PANELS = {
    ACCURACY: "probe accuracy (test split)",
    COMPRESSION: "compression (uniform / online codelength)",
}
MAX_TASKS = 12

CONSISTENCY_COLUMNS = (
    "suite",
    "model_size",
    "nominal_parameters",
    "step",
    "task",
    "layer",
    "metric",
    "n_runs",
    "value_median",
    "value_q25",
    "value_q75",
)
SCORES_COLUMNS = ("suite", "task", "metric", "majority_accuracy")

CELL_WIDTH = 300
CELL_HEIGHT = 150
HEATMAP_WIDTH = 300
HEATMAP_ROW = 18  # pixels per layer, for deep models
HEATMAP_MIN_HEIGHT = 150
HEATMAP_SCHEME = "viridis"

# One line of the probe chart: (suite, model size).
RunKey = tuple[str, str]


def consistency_rows(con: duckdb.DuckDBPyConnection, relation: str, metrics: Iterable[str]) -> list[dict[str, Any]]:
    """Median/q25/q75 rows of ``metrics`` at every layer, in the charts' long form."""
    metrics = list(metrics)
    rows = query_rows(
        con,
        f"""
        select suite, model_size, nominal_parameters, step, task, layer, metric, n_runs,
               value_median as value, value_q25 as band_low, value_q75 as band_high
        from {relation}
        where metric in ({", ".join("?" * len(metrics))})
          and suite is not null and model_size is not null and step is not null
          and task is not null and layer is not null
        order by suite, nominal_parameters nulls last, model_size, task, layer, step
        """,
        metrics,
    )
    for row in rows:
        row["basis"] = counted(row.pop("n_runs"), "seed")
    return rows


def best_layers(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(suite, model_size, task) → the layer with the highest median accuracy at the
    last step that size has for the task; ties go to the lower layer.

    ``rows`` are accuracy rows (``value`` = median); rows without a median are ignored,
    and a (suite, size, task) whose last step has no median at any layer has no entry.
    """
    final: dict[tuple[str, str, str], int] = {}
    for row in rows:
        if row["value"] is None:
            continue
        key = (row["suite"], row["model_size"], row["task"])
        final[key] = max(final.get(key, row["step"]), row["step"])
    best: dict[tuple[str, str, str], tuple[float, int]] = {}
    for row in rows:
        key = (row["suite"], row["model_size"], row["task"])
        if row["value"] is None or row["step"] != final[key]:
            continue
        candidate = (row["value"], -row["layer"])
        if key not in best or candidate > best[key]:
            best[key] = candidate
    return {key: -negative_layer for key, (_, negative_layer) in best.items()}


def majority_rows(
    con: duckdb.DuckDBPyConnection, relation: str, tasks: list[str], suites: list[str]
) -> list[dict[str, Any]]:
    """One row per distinct (suite, task, majority_accuracy) among the drawn tasks.

    The baseline depends only on a task's train and test labels, so it is normally one
    value per task; a suite with other task files draws its own rule.
    """
    if not tasks or not suites:
        return []
    return query_rows(
        con,
        f"""
        select distinct suite, task, majority_accuracy as baseline
        from {relation}
        where metric = 'accuracy' and majority_accuracy is not null
          and task in ({", ".join("?" * len(tasks))})
          and suite in ({", ".join("?" * len(suites))})
        order by task, suite, baseline
        """,
        [*tasks, *suites],
    )


def _layers_label(task: str, layers: dict[tuple[str, str, str], int], runs: list[RunKey]) -> list[str]:
    """Row header lines: the task, then each size's best layer (one line per suite when
    there are several)."""
    by_suite: dict[str, list[str]] = {}
    for suite, size in runs:
        layer = layers.get((suite, size, task))
        if layer is not None:
            by_suite.setdefault(suite, []).append(f"{size}: {layer}")
    if len(by_suite) == 1:
        (parts,) = by_suite.values()
        return [task, "best layer · " + ", ".join(parts)]
    return [task, "best layer"] + [f"{s} · {', '.join(p)}" for s, p in by_suite.items()]


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The probe chart, or None when ``fct_probe_consistency`` is missing or has no
    accuracy rows."""
    relation = mart_relation(con, MART, CONSISTENCY_COLUMNS)
    if relation is None:
        return None
    rows = consistency_rows(con, relation, (ACCURACY, COMPRESSION))
    accuracy = [r for r in rows if r["metric"] == ACCURACY]
    layers = best_layers(accuracy)
    if not layers:
        return None
    tasks = sorted({task for _, _, task in layers})[:MAX_TASKS]
    series = []
    for row in rows:
        key = (row["suite"], row["model_size"], row["task"])
        if row["task"] in tasks and layers.get(key) == row["layer"]:
            series.append({**row, "kind": "series", "panel": PANELS[row["metric"]]})
    panels = [p for p in PANELS.values() if any(r["panel"] == p for r in series)]

    baselines: list[dict[str, Any]] = []
    scores = mart_relation(con, SCORES_MART, SCORES_COLUMNS)
    if scores is not None:
        suites = sorted({r["suite"] for r in series})
        for row in majority_rows(con, scores, tasks, suites):
            baselines.append({
                **row, "kind": "baseline", "panel": PANELS[ACCURACY],
                "reference": f"majority class ({row['suite']})",
            })  # fmt: skip
    if PANELS[COMPRESSION] in panels:
        for task in tasks:
            baselines.append({
                "task": task, "kind": "baseline", "panel": PANELS[COMPRESSION],
                "baseline": 1.0, "reference": "uniform code",
            })  # fmt: skip

    runs: list[RunKey] = []
    for suite in sorted({r["suite"] for r in series}):
        for size in size_order([r for r in series if r["suite"] == suite]):
            runs.append((suite, size))
    labels = [_layers_label(task, layers, runs) for task in tasks]
    return probe_chart(series, baselines, tasks, labels, panels)


def probe_chart(
    series: list[dict[str, Any]],
    baselines: list[dict[str, Any]],
    tasks: list[str],
    task_labels: list[list[str]],
    panels: list[str],
) -> AnyChart:
    """Series rows are one per task × panel × suite × size × step at the best layer;
    baseline rows one per reference rule (``baseline`` value, task and panel).

    Laid out by ``performance.task_panel_grid``.
    """
    rows = [
        {**row, "task_index": tasks.index(row["task"]), "panel_index": panels.index(row["panel"])}
        for row in series + baselines
        if row["panel"] in panels
    ]
    tooltip = band_tooltip(
        [
            alt.Tooltip("task:N", title="task"),
            alt.Tooltip("panel:N", title="measure"),
            alt.Tooltip("suite:N", title="suite"),
            alt.Tooltip("model_size:N", title="model size"),
            alt.Tooltip("layer:O", title="layer"),
        ],
        "median",
    )
    reference = (
        alt.Chart()
        .mark_rule(strokeDash=[2, 3], color=theme.MUTED, strokeWidth=1.2)
        .encode(
            y=alt.Y("baseline:Q", title=None),
            tooltip=[
                alt.Tooltip("reference:N", title="reference"),
                alt.Tooltip("baseline:Q", title="value", format=".3f"),
            ],
        )
        .transform_filter("datum.kind === 'baseline'")
    )
    band, line = band_and_line_layers([r for r in rows if r["kind"] == "series"], None, tooltip)
    series_only = "datum.kind === 'series'"
    layered = (
        alt.layer(
            reference,
            band.transform_filter(series_only),
            line.transform_filter(series_only),
            data=alt.Data(values=rows),
        )
        .transform_calculate(step_plus_one="datum.step + 1", band=BAND_TEXT)
        .properties(width=CELL_WIDTH, height=CELL_HEIGHT)
    )
    return task_panel_grid(
        layered,
        task_labels,
        panels,
        label_limit=300,
        row_spacing=14,
        title=alt.Title(
            TITLE,
            subtitle=[
                "Median over seeds (line), 25th–75th percentile (band); colour: model size, "
                "dash: suite. Each size at its best layer for the task (row header): the",
                "layer with the highest median accuracy at that size's final step "
                "(0 = embeddings). Dotted: majority-class accuracy; compression 1 = "
                "uniform code.",
            ],
        ),
    )


def largest_size(rows: list[dict[str, Any]]) -> str:
    """The size with the most nominal parameters; sizes stating none count as smaller,
    and among those the last by name."""
    return max(
        {(r["nominal_parameters"] is not None, r["nominal_parameters"] or 0.0, r["model_size"])
         for r in rows}
    )[2]  # fmt: skip


def layer_chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The layer × step heatmap, or None when ``fct_probe_consistency`` is missing or
    has no accuracy rows."""
    relation = mart_relation(con, MART, CONSISTENCY_COLUMNS)
    if relation is None:
        return None
    rows = [r for r in consistency_rows(con, relation, (ACCURACY,)) if r["value"] is not None]
    if not rows:
        return None
    size = largest_size(rows)
    rows = [r for r in rows if r["model_size"] == size]
    tasks = sorted({r["task"] for r in rows})[:MAX_TASKS]
    rows = [r for r in rows if r["task"] in tasks]
    return heatmap_chart(rows, size, tasks)


def heatmap_chart(rows: list[dict[str, Any]], size: str, tasks: list[str]) -> AnyChart:
    """Rows are one per suite × task × layer × step of one size (accuracy medians).

    One panel per task (columns) and suite (rows), faceted on integer positions and
    headed with the labels, as in ``probe_chart``.
    """
    suites = sorted({r["suite"] for r in rows})
    suite_labels = [f"{suite} · {size}" for suite in suites]
    steps = sorted({r["step"] for r in rows})
    layers = sorted({r["layer"] for r in rows}, reverse=True)  # embeddings at the bottom
    rows = [{**row, "task_index": tasks.index(row["task"]), "suite_index": suites.index(row["suite"])} for row in rows]
    heat = (
        alt.Chart(alt.Data(values=rows))
        .mark_rect()
        .encode(
            x=alt.X(
                "step:O",
                title="training step (one column per checkpoint, not to scale)",
                scale=alt.Scale(domain=steps),
                axis=alt.Axis(
                    format="~s",
                    formatType="number",
                    labelAngle=0,
                    labelOverlap="greedy",
                    labelSeparation=6,
                    labelFontSize=10,
                ),
            ),
            y=alt.Y(
                "layer:O",
                title="layer (0 = embeddings)",
                scale=alt.Scale(domain=layers),
            ),
            color=alt.Color(
                "value:Q",
                title="median accuracy",
                scale=alt.Scale(scheme=HEATMAP_SCHEME, zero=False),
                legend=alt.Legend(format=".2f", gradientLength=HEATMAP_MIN_HEIGHT),
            ),
            tooltip=band_tooltip(
                [
                    alt.Tooltip("task:N", title="task"),
                    alt.Tooltip("suite:N", title="suite"),
                    alt.Tooltip("model_size:N", title="model size"),
                    alt.Tooltip("layer:O", title="layer"),
                ],
                "median accuracy",
            ),
        )
    )
    cell = heat.transform_calculate(band=BAND_TEXT).properties(
        width=HEATMAP_WIDTH, height=max(HEATMAP_MIN_HEIGHT, HEATMAP_ROW * len(layers))
    )
    return cell.facet(
        row=alt.Row("suite_index:O", title=None, header=theme.row_header(suite_labels, labelLimit=240)),
        column=alt.Column("task_index:O", title=None, header=theme.column_header(tasks)),
        spacing={"row": 14, "column": 24},
    ).properties(
        title=alt.Title(
            LAYERS_TITLE,
            subtitle=(
                f"Model size {size} (the largest). Colour: median test accuracy over seeds of "
                "a linear probe on each layer's hidden states at each checkpoint."
            ),
        )
    )
