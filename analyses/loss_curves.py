"""Loss over training, per model size, with the spread across seeds.

Reads the mart ``fct_loss_consistency`` (grain: suite × model size × step; the seed
statistics are computed there). The chart draws the rows as they are — it never
aggregates: a ``mark_line`` of the median over seeds, on top of a ``mark_area`` band
from the 25th to the 75th percentile.

The step axis is logarithmic. Step 0 cannot sit on a log scale, so the chart plots
``step + 1`` (a ``calculate`` transform in the spec) and says so in the axis title.
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import duckdb

from . import theme
from .marts import AnyChart, read_mart, size_order

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
    sizes = size_order(rows)
    suites = sorted({row["suite"] for row in rows})
    several_suites = len(suites) > 1

    # Ticks and grid lines at powers of ten only; the domain is the data's.
    last = max(row["step"] for row in rows) + 1
    decades = [10**k for k in range(0, max(1, math.ceil(math.log10(last))) + 1)]
    x = alt.X(
        "step_plus_one:Q",
        title="training step + 1 (log scale)",
        scale=alt.Scale(type="log", nice=False, padding=10),
        axis=alt.Axis(values=decades, format="~s"),
    )
    y_title = "mean token loss (nats)"
    # The band and the line share one colour scale, hence one legend.
    color = alt.Color(
        "model_size:N",
        title="model size",
        scale=alt.Scale(domain=sizes),
        sort=sizes,
        # Legend entries look like the lines, not like the pale bands.
        legend=alt.Legend(symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3),
    )
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
        step_plus_one="datum.step + 1",
        iqr=(
            "isValid(datum.loss_q25) && isValid(datum.loss_q75)"
            " ? format(datum.loss_q25, '.3f') + ' – ' + format(datum.loss_q75, '.3f')"
            " : 'n/a'"
        ),
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
