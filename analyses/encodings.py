"""Chart pieces several figures share: the log-scaled step axis, colour per model size
with dash per suite, the tooltip text of a 25th–75th percentile band, counted nouns.

A log step axis plots ``step + 1`` (each chart adds the ``step_plus_one`` calculate
transform), because step 0 cannot sit on a log scale; its title says so.
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt

from .marts import size_order

STEP_TITLE = "training step + 1 (log scale)"
# Dash per suite, in suite order: solid for the first (normally the standard suite).
DASHES = [[1, 0], [7, 3], [2, 2], [10, 3, 2, 3]]


def decade_ticks(last_step: int) -> list[int]:
    """Powers of ten from 1 to the first that reaches ``last_step + 1`` (at least 10)."""
    return [10**k for k in range(0, max(1, math.ceil(math.log10(last_step + 1))) + 1)]


def step_axis(rows: list[dict[str, Any]]) -> alt.X:
    """Log-scaled ``step + 1``, ticks at powers of ten (the field comes from a calculate)."""
    return alt.X(
        "step_plus_one:Q",
        title=STEP_TITLE,
        scale=alt.Scale(type="log", nice=False, padding=6),
        axis=alt.Axis(values=decade_ticks(max(row["step"] for row in rows)), format="~s", labelFlush=True),
    )


def size_color(rows: list[dict[str, Any]]) -> alt.Color:
    """Colour by model size, in parameter order (rows need ``nominal_parameters``)."""
    sizes = size_order(rows)
    return alt.Color(
        "model_size:N",
        title="model size",
        scale=alt.Scale(domain=sizes),
        sort=sizes,
        # Legend entries look like the lines, not like the pale bands.
        legend=alt.Legend(symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3),
    )


def series_encodings(rows: list[dict[str, Any]]) -> tuple[alt.Color, alt.StrokeDash]:
    """Colour by model size (parameter order) and dash by suite, with line-like legends."""
    suites = sorted({row["suite"] for row in rows})
    color = size_color(rows)
    dash = alt.StrokeDash(
        "suite:N",
        title="suite",
        scale=alt.Scale(domain=suites, range=[DASHES[i % len(DASHES)] for i in range(len(suites))]),
        sort=suites,
        legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2, symbolSize=400, labelLimit=320),
    )
    return color, dash


def range_text(low: str, high: str) -> str:
    """A calculate expression: fields ``low`` and ``high`` as "low – high" to three
    decimals, or "n/a" when either is missing."""
    return (
        f"isValid(datum.{low}) && isValid(datum.{high})"
        f" ? format(datum.{low}, '.3f') + ' – ' + format(datum.{high}, '.3f')"
        " : 'n/a'"
    )


# Tooltip text of the seed band drawn from ``band_low`` to ``band_high``.
BAND_TEXT = range_text("band_low", "band_high")


def band_tooltip(keys: list[alt.Tooltip], value_title: str) -> list[alt.Tooltip]:
    """``keys``, then the step, the ``value`` (titled ``value_title``), its seed band
    (``band``, from a calculate of ``BAND_TEXT``) and what it is over (``basis``)."""
    return [
        *keys,
        alt.Tooltip("step:Q", title="step", format=","),
        alt.Tooltip("value:Q", title=value_title, format=".3f"),
        alt.Tooltip("band:N", title="25th–75th pct"),
        alt.Tooltip("basis:N", title="over"),
    ]


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: "1 seed", "3 seeds"."""
    return f"{n} {noun}{'s' if n != 1 else ''}"
