"""Checkpoint integrity findings: duplicated weights, missing checkpoints, lineage breaks.

One row per run (suite · size · seed) that has a finding, training step across (log
scale over ``step + 1``, as in the other charts): a mark per finding at its checkpoint,
shape and colour by kind. A duplicate is joined by a dashed line to its twin (open
mark: the checkpoint with the same weights, possibly in another run, which then gets a
row too); the mart lists both checkpoints of an identical pair, so both ends are
findings. A lineage break is joined to the previous step it is compared with. The
tooltip carries the mart's plain-language detail, the score and the threshold.

Mart: ``fct_checkpoint_integrity`` (grain: one row per finding). The mart holds only
findings, so an empty mart — nothing found, or nothing checked yet — shows "no data
yet" with the reason, like the other figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import altair as alt
import duckdb

from . import theme
from .encodings import STEP_TITLE, counted, decade_ticks
from .marts import AnyChart, mart_relation, query_rows, size_parameters, sizes_in_order

NAME = "checkpoint_integrity"
TITLE = "Checkpoint integrity findings"
DESCRIPTION = (
    "Checkpoints whose weights duplicate another checkpoint's, checkpoints the suite expects "
    "but does not have, and breaks in lineage (a step much farther from the previous one than "
    "the run's trend allows), per run against training step."
)
MART = "fct_checkpoint_integrity"
CHECKED_MART = "dim_checkpoints"  # the checkpoints the suite expects or has

COLUMNS = (
    "finding",
    "suite",
    "model_size",
    "seed",
    "step",
    "other_model_size",
    "other_seed",
    "other_step",
    "score",
    "threshold",
    "detail",
)

FINDINGS = ("duplicate_weights", "missing_checkpoint", "lineage_break")
FINDING_LABELS = {
    "duplicate_weights": "duplicate weights",
    "missing_checkpoint": "missing checkpoint",
    "lineage_break": "lineage break",
}
FINDING_COLORS = [theme.CATEGORY[0], theme.CATEGORY[1], theme.CATEGORY[4]]
FINDING_SHAPES = ["circle", "square", "triangle-up"]
ROW_HEIGHT = 26
MIN_HEIGHT = 90


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The findings chart; a one-line "no findings" chart when the mart is empty but
    checkpoints were checked; None when the mart is missing or nothing was checked."""
    relation = mart_relation(con, MART, COLUMNS)
    if relation is None:
        return None
    rows = query_rows(
        con,
        f"""
        select {", ".join(COLUMNS)}
        from {relation}
        where finding is not null and suite is not null and model_size is not null
        order by suite, model_size, seed nulls first, step nulls first, finding
        """,
    )
    if rows:
        return findings_chart(rows, size_parameters(con))
    checked = mart_relation(con, CHECKED_MART, ("is_present",))
    if checked is None:
        return None
    n_checked = query_rows(con, f"select count(*) filter (where is_present) as n from {checked}")[0]["n"]
    return no_findings_chart(n_checked) if n_checked else None


def no_findings_chart(n_checkpoints: int) -> AnyChart:
    """One line saying the checked checkpoints had no finding (an empty mart is a result)."""
    text = (
        f"No findings: none of the {n_checkpoints} checkpoints present duplicates another's weights "
        "or breaks its run's lineage, and no expected checkpoint is missing."
    )
    return (
        alt.Chart(alt.Data(values=[{"text": text}]))
        .mark_text(align="left", baseline="middle", fontSize=14)
        .encode(text="text:N")
        .properties(title=TITLE, width=900, height=30)
    )


def _run(suite: str, size: str | None, seed: Any) -> str:
    parts = [suite, size or "?"]
    parts.append("all seeds" if seed is None else f"seed {seed}")
    return " · ".join(parts)


def findings_chart(rows: list[dict[str, Any]], parameters: Mapping[str, float | None]) -> AnyChart:
    """Rows are fct_checkpoint_integrity rows (one per finding); ``parameters`` order
    the sizes (``marts.size_parameters``)."""
    kinds = [f for f in FINDINGS if any(r["finding"] == f for r in rows)]
    kinds += sorted({r["finding"] for r in rows} - set(FINDINGS))
    labels = [FINDING_LABELS.get(k, k) for k in kinds]

    drawn, links = [], []
    for r in rows:
        run = _run(r["suite"], r["model_size"], r["seed"])
        label = FINDING_LABELS.get(r["finding"], r["finding"])
        base = {**r, "run": run, "finding_label": label}
        if r["step"] is not None:
            drawn.append(base)
        if r["other_step"] is None:
            continue
        if r["finding"] == "lineage_break" or (r["other_model_size"] is None and r["other_seed"] is None):
            other_run = run  # the previous step of the same run
        else:
            other_run = _run(
                r["suite"],
                r["other_model_size"] or r["model_size"],
                r["other_seed"] if r["other_seed"] is not None else r["seed"],
            )
        if r["step"] is not None:
            links.append({**base, "other_run": other_run})

    all_runs = {(r["suite"], r["model_size"], r["seed"]) for r in drawn}
    for link in links:
        other_seed = link["other_seed"] if link["other_seed"] is not None else link["seed"]
        all_runs.add((link["suite"], link["other_model_size"] or link["model_size"], other_seed))
    sizes = sizes_in_order({size or "?" for _, size, _ in all_runs}, parameters)
    runs = [
        _run(*key)
        for key in sorted(all_runs, key=lambda k: (k[0], sizes.index(k[1] or "?"), k[2] is not None, k[2] or 0))
    ]
    steps = [r["step"] for r in drawn] + [link["other_step"] for link in links]
    last = max(steps) if steps else 1
    # From step 0: where in training a finding sits matters.
    x_scale = alt.Scale(type="log", domain=[1, last + 1], nice=False, padding=12)
    x_axis = alt.Axis(values=decade_ticks(last), format="~s", labelFlush=True)
    x = alt.X("step_plus_one:Q", title=STEP_TITLE, scale=x_scale, axis=x_axis)
    y_scale = alt.Scale(domain=runs)
    y_axis = alt.Axis(labelLimit=260, ticks=False)
    y = alt.Y("run:N", title=None, sort=runs, scale=y_scale, axis=y_axis)
    color_scale = alt.Scale(domain=labels, range=(FINDING_COLORS + theme.CATEGORY[5:])[: len(labels)])
    color = alt.Color("finding_label:N", title="finding", scale=color_scale, sort=labels)
    shape_scale = alt.Scale(domain=labels, range=(FINDING_SHAPES + ["diamond", "cross"])[: len(labels)])
    shape = alt.Shape("finding_label:N", title="finding", scale=shape_scale, sort=labels)
    tooltip = [
        alt.Tooltip("finding_label:N", title="finding"),
        alt.Tooltip("run:N", title="run"),
        alt.Tooltip("step:Q", title="step", format=","),
        alt.Tooltip("other:N", title="compared with"),
        alt.Tooltip("score:Q", title="score", format=".4g"),
        alt.Tooltip("threshold:Q", title="threshold", format=".4g"),
        alt.Tooltip("detail:N", title="detail"),
    ]
    other_text = (
        "isValid(datum.other_step) ? "
        "(isValid(datum.other_model_size) ? datum.other_model_size + ' · ' : '')"
        " + (isValid(datum.other_seed) ? 'seed ' + datum.other_seed + ' · ' : '')"
        " + 'step ' + format(datum.other_step, ',') : '–'"
    )
    points = (
        alt.Chart(alt.Data(values=drawn))
        .mark_point(filled=True, size=110, opacity=0.9, stroke="white", strokeWidth=0.8)
        .encode(x=x, y=y, color=color, shape=shape, tooltip=tooltip)
        .transform_calculate(step_plus_one="datum.step + 1", other=other_text)
    )
    layers = [points]
    if links:
        # Both ends of a link: the finding's step and the one it is compared with.
        link_fields = dict(step_plus_one="datum.step + 1", other_plus_one="datum.other_step + 1", other=other_text)
        link = (
            alt.Chart(alt.Data(values=links))
            .mark_rule(strokeWidth=1.5, opacity=0.6, strokeDash=[4, 3])
            .encode(
                x=x,
                x2="other_plus_one:Q",
                y=y,
                y2="other_run:N",
                color=color,
                tooltip=tooltip,
            )
            .transform_calculate(**link_fields)
        )
        twin = (
            alt.Chart(alt.Data(values=links))
            .mark_point(filled=False, size=90, strokeWidth=1.5, opacity=0.9)
            .encode(
                x=alt.X("other_plus_one:Q", title=STEP_TITLE, scale=x_scale, axis=x_axis),
                y=alt.Y("other_run:N", title=None, sort=runs, scale=y_scale, axis=y_axis),
                color=color,
                shape=shape,
                tooltip=tooltip,
            )
            .transform_calculate(**link_fields)
        )
        layers[:0] = [link, twin]
    counts = Counter(r["finding"] for r in rows)
    summary = ", ".join(
        f"{counts[k]} {FINDING_LABELS.get(k, k)}"
        + (" (both checkpoints of each identical pair)" if k == "duplicate_weights" else "")
        for k in kinds
    )
    unplaced = sum(1 for r in rows if r["step"] is None)
    subtitle = [
        f"{counted(len(rows), 'finding')}: {summary}. Dashed lines join a "
        "duplicate to its twin (open mark) and a lineage break to the step it is compared with.",
    ]
    if unplaced:
        subtitle.append(f"{unplaced} finding(s) without a step are not drawn; see {MART}.")
    return alt.layer(*layers).properties(
        width=theme.WIDTH,
        height=max(MIN_HEIGHT, ROW_HEIGHT * len(runs)),
        title=alt.Title(TITLE, subtitle=subtitle),
    )
