"""The one Altair theme every polypythias chart uses.

Importing this module registers the theme ``"polypythias"`` and enables it; chart
modules import it for that side effect, so it is enabled exactly once per process.
The theme is part of each chart's spec (Altair merges it in ``to_dict``), so the
HTML, the PNG and the report page all look the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import altair as alt

THEME_NAME = "polypythias"

FONT = "Helvetica Neue, Helvetica, Arial, Liberation Sans, DejaVu Sans, sans-serif"
INK = "#222222"
MUTED = "#555555"
GRID = "#e6e6e6"

# Colour-blind-safe categorical palette (Okabe-Ito, black dropped): one colour per
# model size, assigned in size order.
CATEGORY = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#F0E442",
]

WIDTH = 560
HEIGHT = 340
# Band (seed spread) opacity under the median line.
BAND_OPACITY = 0.25


@alt.theme.register(THEME_NAME, enable=True)
def polypythias_theme() -> alt.theme.ThemeConfig:
    """Plain, readable defaults: white background, light grid, larger text."""
    return {
        "background": "white",
        "padding": 8,
        "config": {
            "font": FONT,
            # Size through config.view so faceted charts size each cell.
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": None},
            "title": {
                "font": FONT,
                "fontSize": 16,
                "fontWeight": "bold",
                "color": INK,
                "subtitleFontSize": 12,
                "subtitleColor": MUTED,
                "anchor": "start",
                "offset": 10,
            },
            "axis": {
                "labelFont": FONT,
                "titleFont": FONT,
                "labelFontSize": 12,
                "titleFontSize": 13,
                "titleFontWeight": "normal",
                "labelColor": MUTED,
                "titleColor": INK,
                "gridColor": GRID,
                "domainColor": "#888888",
                "tickColor": "#888888",
            },
            "legend": {
                "labelFont": FONT,
                "titleFont": FONT,
                "labelFontSize": 12,
                "titleFontSize": 13,
                "titleFontWeight": "normal",
                "labelColor": INK,
                "titleColor": INK,
                "symbolStrokeWidth": 3,
            },
            "header": {
                "labelFont": FONT,
                "titleFont": FONT,
                "labelFontSize": 13,
                "titleFontSize": 13,
                "labelColor": INK,
            },
            "range": {"category": CATEGORY},
            "line": {"strokeWidth": 2},
            "point": {"size": 28, "filled": True},
            "area": {"opacity": BAND_OPACITY},
        },
    }


def labels_by_index(labels: Sequence) -> str:
    """A header ``labelExpr`` naming facets laid out on integer indexes.

    Facets are keyed by index, not by label, because vl-convert sorts string facet
    values its own way; this turns index ``i`` back into ``labels[i]``.
    """
    return f"{json.dumps(list(labels), ensure_ascii=False)}[datum.value]"


def row_header(labels: Sequence, **style: Any) -> alt.Header:
    """The header of facet rows on integer indexes: ``labels`` beside the rows, left
    aligned; ``style`` adds or overrides header properties (e.g. ``labelLimit``)."""
    return alt.Header(
        labelExpr=labels_by_index(labels),
        labelAngle=0,
        labelAlign="left",
        labelFontSize=12,
        **style,
    )


def column_header(labels: Sequence) -> alt.Header:
    """The header of facet columns (or wrapped facets) on integer indexes: ``labels``
    in bold above each cell."""
    return alt.Header(labelExpr=labels_by_index(labels), labelFontSize=13, labelFontWeight="bold")
