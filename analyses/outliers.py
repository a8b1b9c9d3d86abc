"""Outlier runs and early warning: two figures.

``run_outliers`` — a table of the signals that fire, one block per outlier run: the
signal, its score and threshold, the first step it fires (using only data up to that
step) and the mart's plain-language reason. Read from ``fct_run_outliers`` (grain: run
× signal); a warehouse where no signal fires shows one line saying so, with how many
runs and signals were checked. Drawn as an Altair text table (pixel positions, no
axes) so the page, the chart's own HTML and the PNG show the same table.

``warning_lead_time`` — for each run that is an outlier at the end, one line per
signal from the first step the signal flags the run (a dot) to the run's final
checkpoint (a black tick), labelled with the lead time; a signal that never flags the
run says so. Below it, the false alarms: per model size and signal, how many of the
runs that end stable the signal flags at some step. Read from
``fct_stability_forecast`` (grain: run × signal × step); the figure needs at least
one run that is an outlier at the end. The step axis is linear, unlike the other
charts': a lead time is a difference of steps, read as a length.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import altair as alt
import duckdb

from ..warehouse.sql import query
from . import theme
from .marts import AnyChart, mart_relation, query_rows, size_parameters, sizes_in_order

NAME = "run_outliers"
TITLE = "Outlier runs and why"
DESCRIPTION = (
    "Every signal that fires for a run (training map, performance, loss spikes, final loss, "
    "agreement, diverged), with its score, threshold, the first step it fires and the "
    "reason in words."
)
MART = "fct_run_outliers"

LEAD_NAME = "warning_lead_time"
LEAD_TITLE = "Early warning: how long before the end each signal flags the outlier runs"
LEAD_DESCRIPTION = (
    "For each run that is an outlier at the end: the first step each signal flags it, using "
    "only data up to that step, and the lead time to the run's final checkpoint; below, the "
    "false alarms (runs that end stable but a signal flags at some step)."
)
FORECAST_MART = "fct_stability_forecast"

# The signals in the order the marts define them; any other signal follows by name.
SIGNALS = ("training_map", "performance", "loss_spikes", "final_loss", "agreement", "diverged")

OUTLIER_COLUMNS = (
    "suite",
    "model_size",
    "seed",
    "signal",
    "score",
    "threshold",
    "fires",
    "first_step",
    "reason",
    "is_outlier",
    "n_signals_firing",
)
FORECAST_COLUMNS = (
    "suite",
    "model_size",
    "seed",
    "signal",
    "step",
    "score",
    "threshold",
    "flags",
    "final_step",
    "is_outlier_at_end",
    "first_flag_step",
    "lead_steps",
    "is_false_alarm",
)

# The text table: (header, x position in pixels, wrap width in characters).
TABLE_COLUMNS = (
    ("run", 0, 22),
    ("signal", 150, 16),
    ("score", 262, 10),
    ("threshold", 332, 10),
    ("first fires at step", 412, 12),
    ("reason", 540, 72),
)
TABLE_WIDTH = 980
LINE_HEIGHT = 18
MAX_LINES = 150
SHADE = "#f3f3f3"

LEAD_COLOR = theme.CATEGORY[4]  # vermillion
LEAD_WIDTH = theme.WIDTH
SIGNAL_ROW = 22  # pixels per signal in a run's panel
ALARM_CELL = 96


FLAGGED_RUNS_SQL = """
select model_size, seed, signal, first_step, reason
from fct_run_outliers
where fires
order by suite, model_size, seed, signal
"""


def flagged_runs(db_path: Path) -> dict[tuple[str, int], list[tuple[str, int | None, str]]]:
    """The runs some signal flags, in the mart's order: (model_size, seed) → each
    firing signal as (signal, first step, reason). Raises WarehouseError."""
    _, rows = query(db_path, FLAGGED_RUNS_SQL)
    runs: dict[tuple[str, int], list[tuple[str, int | None, str]]] = {}
    for size, seed, signal, first_step, reason in rows:
        runs.setdefault((size, seed), []).append((signal, first_step, reason))
    return runs


def signal_order(signals: set[str]) -> list[str]:
    """The known signals in their fixed order, then any others by name."""
    return [s for s in SIGNALS if s in signals] + sorted(signals - set(SIGNALS))


def run_label(suite: str, model_size: str, seed: Any) -> str:
    return f"{suite} · {model_size} · seed {seed}"


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.2e}"


def _step(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


# ---------- the outlier table


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The outlier table, or None when ``fct_run_outliers`` is missing or empty."""
    relation = mart_relation(con, MART, OUTLIER_COLUMNS)
    if relation is None:
        return None
    rows = query_rows(
        con,
        f"""
        select {", ".join(OUTLIER_COLUMNS)}
        from {relation}
        where suite is not null and model_size is not null and seed is not null
          and signal is not null
        order by suite, model_size, seed, signal
        """,
    )
    if not rows:
        return None
    return table_chart(rows, size_parameters(con))


def table_lines(
    rows: list[dict[str, Any]], parameters: Mapping[str, float | None]
) -> tuple[list[list[str]], list[list[list[str]]]]:
    """The table's body: every line as its cells' texts (long cells wrapped onto the
    lines below), and the same lines grouped in one block per run.

    Only signals that fire are listed, runs by suite, size (by parameters) and seed,
    signals in ``SIGNALS`` order; a run's first line names it, its second says how many
    of its signals fire.
    """
    firing = [r for r in rows if r["fires"]]
    sizes = sizes_in_order({r["model_size"] for r in rows}, parameters)
    signals = signal_order({r["signal"] for r in rows})
    firing.sort(key=lambda r: (r["suite"], sizes.index(r["model_size"]), r["seed"],
                               signals.index(r["signal"])))  # fmt: skip
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for r in firing:
        runs.setdefault((r["suite"], r["model_size"], r["seed"]), []).append(r)
    n_signals = {(r["suite"], r["model_size"], r["seed"]): set() for r in rows}
    for r in rows:
        n_signals[(r["suite"], r["model_size"], r["seed"])].add(r["signal"])
    blocks: list[list[list[str]]] = []
    for run, fired in runs.items():
        block: list[list[str]] = []
        for i, r in enumerate(fired):
            cells = [
                run_label(*run) if i == 0 else "",
                r["signal"],
                _number(r["score"]),
                _number(r["threshold"]),
                _step(r["first_step"]),
                r["reason"] or "(no reason given)",
            ]
            wrapped = [
                textwrap.wrap(text, width=width, break_long_words=True) or [""]
                for text, (_, _, width) in zip(cells, TABLE_COLUMNS)
            ]
            if i == 0:
                wrapped[0].append(f"{len(fired)} of {len(n_signals[run])} signals fire")
            depth = max(len(w) for w in wrapped)
            for k in range(depth):
                block.append([w[k] if k < len(w) else "" for w in wrapped])
        blocks.append(block)
    lines = [line for block in blocks for line in block]
    return lines, blocks


def table_chart(rows: list[dict[str, Any]], parameters: Mapping[str, float | None]) -> AnyChart:
    """Rows are fct_run_outliers rows (every signal of every run); ``parameters`` order
    the sizes (``marts.size_parameters``)."""
    lines, blocks = table_lines(rows, parameters)
    n_runs = len({(r["suite"], r["model_size"], r["seed"]) for r in rows})
    n_signals = len({r["signal"] for r in rows})
    truncated = len(lines) > MAX_LINES
    if truncated:
        kept, count = [], 0
        for block in blocks:
            if count + len(block) > MAX_LINES:
                break
            kept.append(block)
            count += len(block)
        blocks = kept
        lines = [line for block in blocks for line in block]

    data: list[dict[str, Any]] = []
    header_y = LINE_HEIGHT / 2
    for header, x, _ in TABLE_COLUMNS:
        data.append({"kind": "header", "x": x, "y": header_y, "text": header})
    top = LINE_HEIGHT * 1.5
    if not lines:
        data.append({
            "kind": "cell", "x": 0, "y": top + LINE_HEIGHT / 2,
            "text": f"No run fires any signal: {n_runs} runs × {n_signals} signals are all "
                    "within their thresholds.",
        })  # fmt: skip
        n_lines = 1
    else:
        y = top
        for b, block in enumerate(blocks):
            if b % 2 == 0:
                data.append({
                    "kind": "band", "x": 0, "x2": TABLE_WIDTH, "y": y,
                    "y2": y + LINE_HEIGHT * len(block),
                })  # fmt: skip
            for line in block:
                for (_, x, _), text in zip(TABLE_COLUMNS, line):
                    if text:
                        data.append({"kind": "cell", "x": x, "y": y + LINE_HEIGHT / 2, "text": text})
                y += LINE_HEIGHT
        n_lines = len(lines)
    height = math.ceil(top + LINE_HEIGHT * n_lines + 4)

    def pixels(field: str) -> dict[str, Any]:
        return {"field": field, "type": "quantitative", "scale": None, "axis": None}

    band = (
        alt.Chart()
        .mark_rect(color=SHADE)
        .encode(x=alt.X(**pixels("x")), x2="x2:Q", y=alt.Y(**pixels("y")), y2="y2:Q")
        .transform_filter("datum.kind === 'band'")
    )
    rule = (
        alt.Chart()
        .mark_rule(color=theme.MUTED, strokeWidth=1)
        .encode(y=alt.datum(LINE_HEIGHT * 1.25, scale=None))
        .transform_filter("datum.kind === 'header'")
    )
    header = (
        alt.Chart()
        .mark_text(align="left", baseline="middle", fontWeight="bold", fontSize=12, color=theme.INK)
        .encode(x=alt.X(**pixels("x")), y=alt.Y(**pixels("y")), text="text:N")
        .transform_filter("datum.kind === 'header'")
    )
    cells = (
        alt.Chart()
        .mark_text(align="left", baseline="middle", fontSize=12, color=theme.INK)
        .encode(x=alt.X(**pixels("x")), y=alt.Y(**pixels("y")), text="text:N")
        .transform_filter("datum.kind === 'cell'")
    )
    subtitle = [
        f"Signals that fire, per run ({len(blocks)} of {n_runs} runs; {n_signals} signals "
        "checked per run). Score and threshold as in fct_run_outliers; the first step uses "
        "only data up to that step."
    ]
    if truncated:
        subtitle.append(f"Only the first {len(blocks)} runs are shown; see fct_run_outliers for all.")
    return alt.layer(band, rule, header, cells, data=alt.Data(values=data)).properties(
        width=TABLE_WIDTH,
        height=height,
        title=alt.Title(TITLE, subtitle=subtitle),
        # No frame or grid behind a table.
        view=alt.ViewConfig(stroke=None),
    )


# ---------- the lead-time chart


def lead_chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The lead-time chart, or None when ``fct_stability_forecast`` is missing or has no
    run that is an outlier at the end."""
    relation = mart_relation(con, FORECAST_MART, FORECAST_COLUMNS)
    if relation is None:
        return None
    keys = "suite is not null and model_size is not null and seed is not null and signal is not null"
    leads = query_rows(
        con,
        f"""
        with per_signal as (
            select suite, model_size, seed, signal,
                   max(final_step) as final_step,
                   min(first_flag_step) as first_flag_step,
                   max(lead_steps) as lead_steps
            from {relation}
            where is_outlier_at_end and {keys}
            group by suite, model_size, seed, signal
        )
        select p.*, f.score as flag_score, f.threshold as flag_threshold
        from per_signal as p
        left join {relation} as f
            on f.suite = p.suite and f.model_size = p.model_size and f.seed = p.seed
            and f.signal = p.signal and f.step = p.first_flag_step
        order by p.suite, p.model_size, p.seed, p.signal
        """,
    )
    if not leads:
        return None
    alarms = query_rows(
        con,
        f"""
        with per_run as (
            select suite, model_size, seed, signal,
                   bool_or(is_false_alarm) as false_alarm
            from {relation}
            where not is_outlier_at_end and {keys}
            group by suite, model_size, seed, signal
        )
        select suite, model_size, signal,
               count(*) as stable_runs,
               count(*) filter (where false_alarm) as false_alarms
        from per_run
        group by suite, model_size, signal
        order by suite, model_size, signal
        """,
    )
    return lead_time_chart(leads, alarms, size_parameters(con))


def lead_time_chart(
    leads: list[dict[str, Any]],
    alarms: list[dict[str, Any]],
    parameters: Mapping[str, float | None],
) -> AnyChart:
    """``leads``: one row per outlier run × signal (final_step, first_flag_step,
    lead_steps, flag_score, flag_threshold); ``alarms``: per suite × size × signal the
    number of stable runs and of those flagged at some step."""
    sizes = sizes_in_order({r["model_size"] for r in leads + alarms}, parameters)
    signals = signal_order({r["signal"] for r in leads + alarms})
    runs = sorted(
        {(r["suite"], r["model_size"], r["seed"]) for r in leads},
        key=lambda k: (k[0], sizes.index(k[1]), k[2]),
    )
    run_labels = [run_label(*run) for run in runs]
    rows = []
    for r in leads:
        first, final = r["first_flag_step"], r["final_step"]
        if first is None:
            label = "never flags this run"
        else:
            lead = r["lead_steps"] if r["lead_steps"] is not None else (final - first if final is not None else None)
            share = f" ({lead / final:.0%} of training)" if lead is not None and final else ""
            label = f"lead {lead:,} steps{share}" if lead is not None else "flags it"
        rows.append({
            **r, "run_index": runs.index((r["suite"], r["model_size"], r["seed"])),
            "signal_index": signals.index(r["signal"]), "label": label,
            "flagged": first is not None,
        })  # fmt: skip
    # Linear steps: the lead time is a difference of steps, read as a length.
    last = max((r["final_step"] or 0) for r in rows)
    x_scale = alt.Scale(domain=[0, max(last, 1)], nice=False)
    x_axis = alt.Axis(format="~s", tickCount=8)
    first_x = alt.X("first_flag_step:Q", title="training step", scale=x_scale, axis=x_axis)
    final_x = alt.X("final_step:Q", title="training step", scale=x_scale, axis=x_axis)
    y = alt.Y(
        "signal:N",
        title=None,
        sort=signals,
        scale=alt.Scale(domain=signals),
        axis=alt.Axis(labelFontSize=12, ticks=False, domain=False),
    )
    tooltip = [
        alt.Tooltip("suite:N", title="suite"),
        alt.Tooltip("model_size:N", title="model size"),
        alt.Tooltip("seed:Q", title="seed"),
        alt.Tooltip("signal:N", title="signal"),
        alt.Tooltip("first_flag_step:Q", title="first flagged at step", format=","),
        alt.Tooltip("final_step:Q", title="final step", format=","),
        alt.Tooltip("label:N", title="lead time"),
        alt.Tooltip("flag_score:Q", title="score at first flag", format=".3g"),
        alt.Tooltip("flag_threshold:Q", title="threshold", format=".3g"),
    ]
    flagged = "datum.flagged"
    lead = (
        alt.Chart()
        .mark_rule(color=LEAD_COLOR, strokeWidth=3, opacity=0.55)
        .encode(x=first_x, x2="final_step:Q", y=y, tooltip=tooltip)
        .transform_filter(flagged)
    )
    first = (
        alt.Chart()
        .mark_point(filled=True, size=90, color=LEAD_COLOR, opacity=1)
        .encode(x=first_x, y=y, tooltip=tooltip)
        .transform_filter(flagged)
    )
    final = alt.Chart().mark_tick(color=theme.INK, thickness=2, size=14).encode(x=final_x, y=y, tooltip=tooltip)
    text = (
        alt.Chart()
        .mark_text(align="left", baseline="middle", dx=10, fontSize=11)
        .encode(
            x=final_x,
            y=y,
            text="label:N",
            color=alt.condition(flagged, alt.value(theme.INK), alt.value(theme.MUTED)),
        )
    )
    panel = (
        alt.layer(lead, first, final, text, data=alt.Data(values=rows))
        .properties(width=LEAD_WIDTH, height=SIGNAL_ROW * len(signals))
        .facet(
            row=alt.Row(
                "run_index:O",
                title=None,
                header=theme.row_header(run_labels, labelFontWeight="bold", labelLimit=240),
            ),
            spacing={"row": 12},
        )
    )
    parts: list[Any] = [panel]
    if alarms:
        parts.append(false_alarm_chart(alarms, sizes, signals))
    subtitle = [
        "Dot: the first step the signal flags the run, using only data up to that step; line: "
        "the lead time to the run's final checkpoint (black tick).",
    ]
    if alarms:
        total = sum(a["false_alarms"] for a in alarms)
        subtitle.append(
            f"Below: false alarms — runs that end stable but a signal flags at some step "
            f"({total} run × signal pairs in all)."
        )
    return alt.vconcat(*parts, spacing=24).properties(title=alt.Title(LEAD_TITLE, subtitle=subtitle))


def false_alarm_chart(alarms: list[dict[str, Any]], sizes: list[str], signals: list[str]) -> alt.LayerChart:
    """Per suite × size (rows) and signal (columns): "k of n" stable runs flagged."""
    groups = sorted({(a["suite"], a["model_size"]) for a in alarms},
                    key=lambda g: (g[0], sizes.index(g[1])))  # fmt: skip
    labels = [f"{suite} · {size}" for suite, size in groups]
    cells = [
        {**a, "group": f"{a['suite']} · {a['model_size']}",
         "rate": a["false_alarms"] / a["stable_runs"] if a["stable_runs"] else None,
         "text": f"{a['false_alarms']} of {a['stable_runs']}"}
        for a in alarms
    ]  # fmt: skip
    x = alt.X(
        "signal:N",
        title="false alarms: stable runs flagged at some step",
        sort=signals,
        scale=alt.Scale(domain=[s for s in signals if any(a["signal"] == s for a in alarms)]),
        axis=alt.Axis(orient="top", labelAngle=0, ticks=False, domain=False, titleFontSize=12),
    )
    y = alt.Y(
        "group:N",
        title=None,
        sort=labels,
        scale=alt.Scale(domain=labels),
        axis=alt.Axis(ticks=False, domain=False),
    )
    tooltip = [
        alt.Tooltip("group:N", title="suite · size"),
        alt.Tooltip("signal:N", title="signal"),
        alt.Tooltip("text:N", title="stable runs flagged"),
    ]
    rect = (
        alt.Chart()
        .mark_rect(stroke="white", strokeWidth=2)
        .encode(
            x=x,
            y=y,
            color=alt.Color(
                "rate:Q",
                title="share flagged",
                scale=alt.Scale(domain=[0, 1], range=["#f4f4f4", LEAD_COLOR]),
                legend=alt.Legend(format=".0%", gradientLength=80),
            ),
            tooltip=tooltip,
        )
    )
    text = (
        alt.Chart()
        .mark_text(baseline="middle", fontSize=11)
        .encode(
            x=x,
            y=y,
            text="text:N",
            color=alt.condition("datum.rate > 0.5", alt.value("white"), alt.value(theme.INK)),
        )
    )
    return alt.layer(rect, text, data=alt.Data(values=cells)).properties(
        width=ALARM_CELL * len({a["signal"] for a in alarms}),
        height=26 * len(groups),
    )
