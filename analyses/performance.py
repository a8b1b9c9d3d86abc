"""Downstream performance across seeds, with self-consistency and inter-seed agreement.

PolyPythias' first figure: for each task (one facet row), the score over training as the
median across seeds with the 25th–75th percentile band, one colour per model size; beside
it, Cohen's κ between each checkpoint and its run's final checkpoint (self-consistency,
mean over seeds) and the mean pairwise κ between seeds at the same step (inter-seed
agreement). Standard and deduplicated twins of a size share a colour and differ in dash.

Marts: ``fct_eval_consistency`` (seed statistics, computed there), and, when present,
``fct_self_consistency`` and ``fct_inter_seed_agreement``. A κ column is drawn only
where its mart has rows; no item-level samples (e.g. old lm-eval files) means no κ.

One series per task: zero-shot when the task has it (else its fewest shots), filter
``none`` when present, metric ``acc`` when present (else the first metric by name).
Tasks: those of the PolyPythias paper and the micro suite that are present, in that
order; a warehouse with none of them shows its first ``MAX_TASKS`` tasks by name.

The step axis is logarithmic over ``step + 1`` (step 0 cannot sit on a log scale),
as in the loss chart, and its title says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import duckdb

from . import theme
from .encodings import BAND_TEXT, band_tooltip, counted, series_encodings, step_axis
from .marts import AnyChart, mart_relation, query_rows

NAME = "performance"
TITLE = "Downstream performance and agreement across seeds"
DESCRIPTION = (
    "Per task: median score over seeds with its 25th–75th percentile band, self-consistency "
    "κ (each checkpoint vs its run's final one, mean over seeds) and inter-seed agreement "
    "(mean pairwise κ), against training step; colour = model size, dash = suite."
)
MART = "fct_eval_consistency"
SELF_MART = "fct_self_consistency"
INTER_MART = "fct_inter_seed_agreement"

PAPER_TASKS = (
    "arc_easy",
    "arc_challenge",
    "lambada_openai",
    "logiqa",
    "piqa",
    "sciq",
    "winogrande",
    "wsc",
    "blimp_anaphor_gender_agreement",
)
MICRO_TASKS = ("micro_gender_agreement", "micro_lambada", "micro_verb_agreement")
MAX_TASKS = 12

SCORE = "score across seeds"
SELF_KAPPA = "self-consistency κ"
INTER_KAPPA = "inter-seed agreement κ"

CONSISTENCY_COLUMNS = (
    "suite",
    "model_size",
    "nominal_parameters",
    "step",
    "task",
    "metric",
    "filter",
    "num_fewshot",
    "n_runs",
    "value_median",
    "value_q25",
    "value_q75",
)
SELF_COLUMNS = (
    "suite",
    "model_size",
    "nominal_parameters",
    "seed",
    "step",
    "task",
    "filter",
    "num_fewshot",
    "kappa",
)
INTER_COLUMNS = (
    "suite",
    "model_size",
    "nominal_parameters",
    "step",
    "task",
    "filter",
    "num_fewshot",
    "mean_pairwise_kappa",
    "n_seed_pairs",
)

CELL_WIDTH = 230
CELL_HEIGHT = 120


@dataclass(frozen=True, slots=True)
class Series:
    """The one (metric, filter, num_fewshot) drawn for a task."""

    task: str
    metric: str
    filter: str
    num_fewshot: int

    @property
    def label(self) -> str:
        """Facet label: task, metric, and shots or filter when not the default."""
        parts = [self.task, self.metric]
        if self.num_fewshot:
            parts.append(f"{self.num_fewshot}-shot")
        if self.filter != "none":
            parts.append(self.filter)
        return " · ".join(parts)


def pick_series(available: list[tuple[str, str, str, int]], task: str, metric: str | None = None) -> Series | None:
    """The series to draw for ``task`` among ``(task, metric, filter, num_fewshot)`` rows.

    Fewest shots first (zero-shot when present), then filter ``none``, then ``metric``
    when given (None when the task lacks it), else ``acc``, else the first metric by name.
    """
    rows = [r for r in available if r[0] == task]
    if not rows:
        return None
    shots = min(r[3] for r in rows)
    rows = [r for r in rows if r[3] == shots]
    filters = {r[2] for r in rows}
    chosen_filter = "none" if "none" in filters else min(filters)
    metrics = {r[1] for r in rows if r[2] == chosen_filter}
    if metric is not None:
        if metric not in metrics:
            return None
        chosen_metric = metric
    else:
        chosen_metric = "acc" if "acc" in metrics else min(metrics)
    return Series(task, chosen_metric, chosen_filter, shots)


def available_series(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple]:
    """Every (task, metric, filter, num_fewshot) in ``fct_eval_consistency``."""
    return con.execute(
        f"select distinct task, metric, filter, num_fewshot from {relation} "
        "where task is not null and metric is not null "
        "and filter is not null and num_fewshot is not null"
    ).fetchall()


def score_rows(con: duckdb.DuckDBPyConnection, relation: str, series: Series, panel: str) -> list[dict[str, Any]]:
    """The median/q25/q75 rows of one series, in the chart's long form."""
    rows = query_rows(
        con,
        f"""
        select suite, model_size, nominal_parameters, step, n_runs,
               value_median as value, value_q25 as band_low, value_q75 as band_high
        from {relation}
        where task = ? and metric = ? and filter = ? and num_fewshot = ?
        order by suite, nominal_parameters nulls last, model_size, step
        """,
        [series.task, series.metric, series.filter, series.num_fewshot],
    )
    for row in rows:
        row["basis"] = counted(row.pop("n_runs"), "seed")
    return [_tag(row, series, panel) for row in rows]


def _tag(row: dict[str, Any], series: Series, panel: str) -> dict[str, Any]:
    return {"task": series.label, "panel": panel, **row}


def _mean_kappa_rows(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    series: Series,
    panel: str,
    *,
    kappa: str,
    count: str,
    noun: str,
) -> list[dict[str, Any]]:
    """One row per suite × size × step of ``panel``: the mean of the column ``kappa``;
    its basis is ``count`` (an SQL aggregate: how many ``noun``s the mean is over)."""
    rows = query_rows(
        con,
        f"""
        select suite, model_size, min(nominal_parameters) as nominal_parameters, step,
               avg({kappa}) as value, {count} as n
        from {relation}
        where task = ? and filter = ? and num_fewshot = ?
        group by suite, model_size, step
        having count({kappa}) > 0
        order by suite, nominal_parameters nulls last, model_size, step
        """,
        [series.task, series.filter, series.num_fewshot],
    )
    for row in rows:
        basis = f"mean of {counted(row.pop('n'), noun)}"
        row.update(band_low=None, band_high=None, basis=basis)
    return [_tag(row, series, panel) for row in rows]


def chosen_tasks(series: list[Series]) -> list[Series]:
    """Paper and micro tasks present, in that order; else the first MAX_TASKS by name."""
    by_task = {s.task: s for s in series}
    preferred = [by_task[t] for t in PAPER_TASKS + MICRO_TASKS if t in by_task]
    if preferred:
        return preferred[:MAX_TASKS]
    return [by_task[t] for t in sorted(by_task)[:MAX_TASKS]]


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The performance chart, or None when ``fct_eval_consistency`` is missing or empty."""
    relation = mart_relation(con, MART, CONSISTENCY_COLUMNS)
    if relation is None:
        return None
    available = available_series(con, relation)
    picked = [pick_series(available, task) for task in sorted({r[0] for r in available})]
    tasks = chosen_tasks([s for s in picked if s is not None])
    if not tasks:
        return None
    self_relation = mart_relation(con, SELF_MART, SELF_COLUMNS)
    inter_relation = mart_relation(con, INTER_MART, INTER_COLUMNS)
    rows: list[dict[str, Any]] = []
    for series in tasks:
        rows += score_rows(con, relation, series, SCORE)
        if self_relation is not None:
            # Mean over seeds of each run's κ against its own final checkpoint.
            rows += _mean_kappa_rows(
                con, self_relation, series, SELF_KAPPA,
                kappa="kappa", count="count(kappa)", noun="seed",
            )  # fmt: skip
        if inter_relation is not None:
            # mean_pairwise_kappa repeats on every seed's row of a step; one value per step.
            rows += _mean_kappa_rows(
                con, inter_relation, series, INTER_KAPPA,
                kappa="mean_pairwise_kappa", count="max(n_seed_pairs)", noun="seed pair",
            )  # fmt: skip
    if not rows:
        return None
    panels = [p for p in (SCORE, SELF_KAPPA, INTER_KAPPA) if any(r["panel"] == p for r in rows)]
    return performance_chart(rows, [s.label for s in tasks], panels)


def band_and_line_layers(
    rows: list[dict[str, Any]], y_title: str | None, tooltip: list[alt.Tooltip]
) -> tuple[alt.Chart, alt.Chart]:
    """The q25–q75 band (``band_low``–``band_high``) and the line over it (``value``),
    colour per size and dash per suite, over log steps; scales fit ``rows``."""
    x = step_axis(rows)
    color, dash = series_encodings(rows)
    y = alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False), axis=alt.Axis(format=".2f"))
    band = (
        alt.Chart()
        .mark_area(opacity=theme.BAND_OPACITY, line=False)
        .encode(
            x=x,
            y=alt.Y("band_low:Q", title=y_title),
            y2="band_high:Q",
            color=color,
            detail="suite:N",
        )
    )
    line = (
        alt.Chart()
        .mark_line(strokeWidth=1.6, point=alt.OverlayMarkDef(size=10, filled=True))
        .encode(x=x, y=y, color=color, strokeDash=dash, tooltip=tooltip)
    )
    return band, line


def band_and_line(rows: list[dict[str, Any]], y_title: str | None, under: tuple[alt.Chart, ...] = ()) -> alt.LayerChart:
    """The q25–q75 band under the line, over log steps; rows need value/band_low/band_high.

    ``under`` are layers drawn first (reference lines).
    """
    keys = [
        alt.Tooltip("task:N", title="task"),
        alt.Tooltip("panel:N", title="measure"),
        alt.Tooltip("suite:N", title="suite"),
        alt.Tooltip("model_size:N", title="model size"),
    ]
    band, line = band_and_line_layers(rows, y_title, band_tooltip(keys, "value"))
    return alt.layer(*under, band, line, data=alt.Data(values=rows)).transform_calculate(
        step_plus_one="datum.step + 1", band=BAND_TEXT
    )


def task_panel_grid(
    layered: alt.LayerChart,
    task_labels: Sequence,
    panels: list[str],
    *,
    label_limit: int,
    row_spacing: int,
    title: alt.Title,
) -> alt.FacetChart:
    """``layered`` in one facet row per task and one column per measure panel, each cell
    with its own y scale.

    Faceted on the integer positions ``task_index`` and ``panel_index`` (natural order)
    and headed with the labels: a facet with both rows and columns and a custom ``sort``
    puts cells in the wrong places (Vega-Lite 6 through vl-convert).
    """
    return (
        layered.facet(
            row=alt.Row(
                "task_index:O",
                title=None,
                header=theme.row_header(task_labels, labelLimit=label_limit),
            ),
            column=alt.Column("panel_index:O", title=None, header=theme.column_header(panels)),
            spacing={"row": row_spacing, "column": 28},
        )
        .resolve_scale(y="independent")
        .properties(title=title)
    )


def performance_chart(rows: list[dict[str, Any]], task_labels: list[str], panels: list[str]) -> AnyChart:
    """Rows are one per task × measure panel × suite × size × step (see ``score_rows``),
    laid out by ``task_panel_grid``."""
    rows = [
        {
            **row,
            "task_index": task_labels.index(row["task"]),
            "panel_index": panels.index(row["panel"]),
        }
        for row in rows
    ]
    layered = band_and_line(rows, y_title=None).properties(width=CELL_WIDTH, height=CELL_HEIGHT)
    return task_panel_grid(
        layered,
        task_labels,
        panels,
        label_limit=240,
        row_spacing=12,
        title=alt.Title(
            TITLE,
            subtitle=[
                "Score: median over seeds (line), 25th–75th percentile (band). "
                "Self-consistency: κ against the run's final checkpoint, mean over seeds.",
                "Inter-seed agreement: mean κ over all pairs of seeds at the same step. "
                "Colour: model size; dash: suite.",
            ],
        ),
    )
