"""Loss over training: two figures.

``loss_curves`` — loss over training, per model size, with the spread across seeds.
Reads the mart ``fct_loss_consistency`` (grain: suite × model size × step; the seed
statistics are computed there). The chart draws the rows as they are — it never
aggregates: a ``mark_line`` of the median over seeds, on top of a ``mark_area`` band
from the 25th to the 75th percentile.

The step axis is logarithmic. Step 0 cannot sit on a log scale, so the chart plots
``step + 1`` (a ``calculate`` transform in the spec) and says so in the axis title.

``loss_spikes`` — each run's training loss at every logged step, one facet row per
suite × model size, outlier runs (``fct_run_outliers``) in colour, with every loss
spike marked: a dot at the spike's own logged step and loss, one per row of
``fct_loss_spikes`` (grain: one row per logged step that is a spike; the rule is
int_outlier_loss_spikes'). No mart keeps the loss per optimiser step, so the lines
read the staging view ``stg_lake__training_log``; a run's log is thinned to about
``MAX_POINTS_PER_RUN`` points on a log-spaced grid of steps, keeping each bin's first
step, its highest loss and every spike step, so that the line passes through each
marked spike (a selection of rows, not an aggregate). Log steps as above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import duckdb

from . import theme
from .encodings import STEP_TITLE, counted, decade_ticks, range_text, size_color, step_axis
from .marts import (
    AnyChart,
    MartError,
    database_path,
    mart_relation,
    query_rows,
    read_mart,
    run_status_sql,
    size_parameters,
    sizes_in_order,
)

NAME = "loss_curves"
TITLE = "Training loss across seeds"
DESCRIPTION = (
    "Median token loss over seeds against training step, one colour per model size; "
    "the shaded band is the interquartile range (25th–75th percentile) across seeds."
)
MART = "fct_loss_consistency"

COLUMNS = (
    "suite",
    "model_size",
    "nominal_parameters",
    "step",
    "n_seeds",
    "loss_median",
    "loss_q25",
    "loss_q75",
    "loss_mean",
    "loss_std",
    "loss_min",
    "loss_max",
)


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The loss chart, or None when ``fct_loss_consistency`` is missing or empty."""
    rows = read_mart(
        con,
        MART,
        COLUMNS,
        order_by="suite, nominal_parameters nulls last, model_size, step",
    )
    if rows is None:
        return None
    return loss_chart(rows)


def loss_chart(rows: list[dict[str, Any]]) -> AnyChart:
    """Build the chart from mart rows (one per suite × model size × step)."""
    suites = sorted({row["suite"] for row in rows})
    several_suites = len(suites) > 1

    # Ticks and grid lines at powers of ten only; the domain is the data's.
    x = alt.X(
        "step_plus_one:Q",
        title=STEP_TITLE,
        scale=alt.Scale(type="log", nice=False, padding=10),
        axis=alt.Axis(values=decade_ticks(max(row["step"] for row in rows)), format="~s"),
    )
    y_title = "mean token loss (nats)"
    # The band and the line share one colour scale, hence one legend.
    color = size_color(rows)
    tooltip = [
        alt.Tooltip("step:Q", title="step", format=","),
        alt.Tooltip("model_size:N", title="model size"),
        alt.Tooltip("loss_median:Q", title="median loss (nats)", format=".3f"),
        alt.Tooltip("iqr:N", title="IQR, 25th–75th pct"),
        alt.Tooltip("n_seeds:Q", title="seeds"),
    ]
    if several_suites:
        tooltip.insert(0, alt.Tooltip("suite:N", title="suite"))

    band = (
        alt.Chart()
        .mark_area(opacity=theme.BAND_OPACITY, line=False)
        .encode(
            x=x,
            y=alt.Y("loss_q25:Q", title=y_title, scale=alt.Scale(zero=False)),
            y2="loss_q75:Q",
            color=color,
        )
    )
    line = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=24, filled=True))
        .encode(
            x=x,
            y=alt.Y("loss_median:Q", title=y_title, scale=alt.Scale(zero=False)),
            color=color,
            tooltip=tooltip,
        )
    )
    layered = alt.layer(band, line, data=alt.Data(values=rows)).transform_calculate(
        step_plus_one="datum.step + 1", iqr=range_text("loss_q25", "loss_q75")
    )
    title = alt.Title(
        TITLE,
        subtitle="Line: median over seeds. Band: 25th–75th percentile across seeds.",
    )
    if several_suites:
        return layered.facet(
            facet=alt.Facet("suite:N", title=None, sort=suites),
            columns=2,
        ).properties(title=title)
    return layered.properties(title=title)


# ---------- training loss per run, with loss spikes marked

SPIKES_NAME = "loss_spikes"
SPIKES_TITLE = "Training loss per run, with loss spikes marked"
SPIKES_DESCRIPTION = (
    "Each run's training loss (from its training log) against training step, one panel per "
    "model size, outlier runs highlighted; a dot marks every loss spike at its own step "
    "and loss."
)
TRAINING_LOG = "stg_lake__training_log"
SPIKES_MART = "fct_loss_spikes"
OUTLIERS_MART = "fct_run_outliers"

LOG_COLUMNS = ("suite", "model_size", "seed", "step", "loss")
SPIKE_COLUMNS = (
    "suite", "model_size", "seed", "step", "loss", "window_median", "robust_deviation",
    "deviation", "threshold",
)  # fmt: skip
RUN_OUTLIER_COLUMNS = ("suite", "model_size", "seed", "is_outlier")
# A run's log is thinned to about this many points on a log-spaced grid of steps,
# keeping each bin's first step and its highest loss, and every spike step.
MAX_POINTS_PER_RUN = 400
SPIKE_COLOR = theme.CATEGORY[4]  # vermillion
RUN_COLORS = {"stable run": "#9a9a9a", "outlier run": theme.CATEGORY[0], "run": "#7a7a7a"}
SPIKES_HEIGHT = 170


def spikes_chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """Per-run training loss with every loss spike marked, or None when the training log
    (the staging view ``stg_lake__training_log``) is missing or empty.

    The lines read the staging view because no mart keeps the loss at every logged
    step; the spikes, each at its own step and loss, come from ``fct_loss_spikes`` (one
    row per spike, few), and which runs are outliers from ``fct_run_outliers``, when
    those exist.
    """
    log = mart_relation(con, TRAINING_LOG, LOG_COLUMNS)
    if log is None:
        return None
    spikes_relation = mart_relation(con, SPIKES_MART, SPIKE_COLUMNS)
    outliers = mart_relation(con, OUTLIERS_MART, RUN_OUTLIER_COLUMNS)
    if outliers is None:
        status, join = "'run'", ""
    else:
        status, join = run_status_sql(outliers, "t", outlier="outlier run", stable="stable run", unknown="run")
    # The spike steps, kept in the thinned lines (none without fct_loss_spikes).
    spike_steps = (
        f"select distinct suite, model_size, seed, step from {spikes_relation}"
        if spikes_relation is not None
        else "select null::varchar as suite, null::varchar as model_size, "
        "null::bigint as seed, null::bigint as step where false"
    )
    try:
        rows = query_rows(
            con,
            f"""
            with log as (
                select suite, model_size, seed, step, loss
                from {log}
                where suite is not null and model_size is not null and seed is not null
                  and step is not null and loss is not null
            ),
            spike_steps as ({spike_steps}),
            counted as (
                select log.*,
                       spike_steps.step is not null as is_spike,
                       count(*) over run as n_rows,
                       max(log.step) over run as last_step
                from log
                left join spike_steps
                    on log.suite = spike_steps.suite and log.model_size = spike_steps.model_size
                    and log.seed = spike_steps.seed and log.step = spike_steps.step
                window run as (partition by log.suite, log.model_size, log.seed)
            ),
            binned as (
                select *,
                       case when n_rows <= {MAX_POINTS_PER_RUN} then step
                            else cast(floor(
                                ln(greatest(step, 0) + 1) / ln(greatest(last_step, 1) + 1)
                                * {MAX_POINTS_PER_RUN}
                            ) as bigint)
                       end as bin
                from counted
            ),
            ranked as (
                select *,
                       row_number() over (
                           partition by suite, model_size, seed, bin order by loss desc, step
                       ) as by_loss,
                       row_number() over (
                           partition by suite, model_size, seed, bin order by step
                       ) as by_step
                from binned
            )
            select t.suite, t.model_size, t.seed, t.step, t.loss, {status} as status
            from ranked as t
            {join}
            where t.by_loss = 1 or t.by_step = 1 or t.step = t.last_step or t.is_spike
            order by t.suite, t.model_size, t.seed, t.step
            """,
        )
    except duckdb.IOException as exc:
        raise MartError(
            f"the training log view {TRAINING_LOG} in {database_path(con)} cannot read the "
            f"lake ({exc}); rebuild the warehouse (`polypythias build`) against the lake"
        ) from exc
    if not rows:
        return None
    spikes: list[dict[str, Any]] = []
    if spikes_relation is not None:
        spikes = query_rows(
            con,
            f"""
            select {", ".join(SPIKE_COLUMNS)}
            from {spikes_relation}
            where suite is not null and model_size is not null and seed is not null
              and step is not null and loss is not null
            order by suite, model_size, seed, step
            """,
        )
    return loss_spikes_chart(
        rows,
        spikes,
        spikes_assessed=spikes_relation is not None,
        parameters=size_parameters(con),
    )


def loss_spikes_chart(
    rows: list[dict[str, Any]],
    spikes: list[dict[str, Any]],
    *,
    spikes_assessed: bool = True,
    parameters: Mapping[str, float | None],
) -> AnyChart:
    """``rows``: a run's logged (thinned) loss per step with its ``status``; ``spikes``:
    ``fct_loss_spikes`` rows, each marked at its own ``step`` and ``loss``. A spike of a
    run without a training log has no line to sit on and is left out. ``parameters``
    order the sizes (``marts.size_parameters``)."""
    suites = sorted({r["suite"] for r in rows})
    sizes = sizes_in_order({r["model_size"] for r in rows}, parameters)
    panels = sorted({(r["suite"], r["model_size"]) for r in rows},
                    key=lambda p: (suites.index(p[0]), sizes.index(p[1])))  # fmt: skip
    labels = [f"{suite} · {size}" for suite, size in panels]
    panel_of = {p: i for i, p in enumerate(panels)}
    logged_runs = {(r["suite"], r["model_size"], r["seed"]) for r in rows}
    data = [{**r, "kind": "log", "panel_index": panel_of[(r["suite"], r["model_size"])]} for r in rows]
    marked = [s for s in spikes if (s["suite"], s["model_size"], s["seed"]) in logged_runs]
    data += [{**s, "kind": "spike", "panel_index": panel_of[(s["suite"], s["model_size"])]} for s in marked]
    statuses = [s for s in RUN_COLORS if any(r["status"] == s for r in rows)]
    x = step_axis(rows)
    y = alt.Y("loss:Q", title="training loss (nats)", scale=alt.Scale(zero=False))
    run_tooltip = [
        alt.Tooltip("suite:N", title="suite"),
        alt.Tooltip("model_size:N", title="model size"),
        alt.Tooltip("seed:Q", title="seed"),
        alt.Tooltip("status:N", title="run"),
        alt.Tooltip("step:Q", title="step", format=","),
        alt.Tooltip("loss:Q", title="loss (nats)", format=".3f"),
    ]
    spike_tooltip = [
        alt.Tooltip("suite:N", title="suite"),
        alt.Tooltip("model_size:N", title="model size"),
        alt.Tooltip("seed:Q", title="seed"),
        alt.Tooltip("step:Q", title="loss spike at step", format=","),
        alt.Tooltip("loss:Q", title="loss (nats)", format=".3f"),
        alt.Tooltip("window_median:Q", title="median of the previous steps", format=".3f"),
        alt.Tooltip("robust_deviation:Q", title="robust deviation (1.4826 × MAD)", format=".3g"),
        alt.Tooltip("deviation:Q", title="robust deviations above the median", format=".3g"),
        alt.Tooltip("threshold:Q", title="threshold", format=".3g"),
    ]
    lines = (
        alt.Chart()
        .mark_line(strokeWidth=1.2)
        .encode(
            x=x,
            y=y,
            detail="seed:N",
            color=alt.Color(
                "status:N",
                title="run",
                scale=alt.Scale(domain=statuses, range=[RUN_COLORS[s] for s in statuses]),
                sort=statuses,
                legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3),
            ),
            opacity=alt.condition("datum.status === 'outlier run'", alt.value(1.0), alt.value(0.6)),
            tooltip=run_tooltip,
        )
        .transform_filter("datum.kind === 'log'")
    )
    marks = (
        alt.Chart()
        .mark_point(
            shape="circle", filled=True, size=36, color=SPIKE_COLOR, opacity=1,
            stroke="white", strokeWidth=0.6,
        )
        .encode(x=x, y=y, tooltip=spike_tooltip)
        .transform_filter("datum.kind === 'spike'")
    )  # fmt: skip
    layered = (
        alt.layer(lines, marks, data=alt.Data(values=data))
        .transform_calculate(step_plus_one="datum.step + 1")
        .properties(width=theme.WIDTH, height=SPIKES_HEIGHT)
    )
    if not spikes_assessed:
        notes = [f"{SPIKES_MART} is not built yet: no loss spikes to mark."]
    elif not marked:
        notes = ["No run has a loss spike."]
    else:
        n_runs = len({(s["suite"], s["model_size"], s["seed"]) for s in marked})
        thresholds = sorted({s["threshold"] for s in marked if s["threshold"] is not None})
        k = f"{thresholds[0]:g}" if len(thresholds) == 1 else "loss_spike_k"
        notes = [
            f"Dots: the {counted(len(marked), 'loss spike')} of {counted(n_runs, 'run')}, "
            "each at its own step and loss.",
            f"A spike: after warm-up, a loss more than {k} robust deviations (1.4826 × MAD) "
            "above the median of the steps before.",
        ]
    return (
        layered.facet(
            row=alt.Row("panel_index:O", title=None, header=theme.row_header(labels, labelFontWeight="bold")),
            spacing={"row": 14},
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                SPIKES_TITLE,
                subtitle=[
                    "One line per run (its training log, thinned to about "
                    f"{MAX_POINTS_PER_RUN} points on log-spaced steps keeping each bin's "
                    "highest loss and every spike).",
                    *notes,
                ],
            )
        )
    )
