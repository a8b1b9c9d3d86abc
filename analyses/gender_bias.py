"""Gender agreement and gender bias over training, across seeds.

One panel per measure present in ``fct_eval_consistency`` (seed statistics computed
there): BLiMP anaphor gender agreement accuracy, CrowS-Pairs (English, gender) share of
stereotyped sentences preferred, the simple co-occurrence bias share of occupations
completed as male, and the micro suite's own agreement task. Each panel draws the median
over seeds with the 25th–75th percentile band per model size (dash per suite) over a
log-scaled ``step + 1`` axis, and a dotted rule at 0.5: chance for the two-choice
agreement tasks, no preference either way for the two bias shares.

Each measure uses the zero-shot, filter ``none`` rows when present (see
``performance.pick_series``).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import duckdb

from . import theme
from .marts import AnyChart, mart_relation
from .performance import (
    CONSISTENCY_COLUMNS,
    MART,
    available_series,
    band_and_line,
    pick_series,
    score_rows,
)

NAME = "gender_bias"
TITLE = "Gender agreement and gender bias across seeds"
DESCRIPTION = (
    "BLiMP anaphor gender agreement accuracy, CrowS-Pairs gender pct_stereotype, simple "
    "co-occurrence pct_male_preferred and the micro gender-agreement accuracy over training: "
    "median over seeds with 25th–75th percentile band; dotted line at 0.5."
)

# (task, metric, panel title); 0.5 is chance or "no preference" for each.
MEASURES = (
    ("blimp_anaphor_gender_agreement", "acc", "BLiMP anaphor gender agreement · acc"),
    ("crows_pairs_english_gender", "pct_stereotype", "CrowS-Pairs gender · pct_stereotype"),
    ("simple_cooccurrence_bias", "pct_male_preferred", "co-occurrence bias · pct_male_preferred"),
    ("micro_gender_agreement", "acc", "micro gender agreement · acc"),
)
REFERENCE = 0.5
CELL_WIDTH = 340
CELL_HEIGHT = 200


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The gender chart, or None when no measure above is in ``fct_eval_consistency``."""
    relation = mart_relation(con, MART, CONSISTENCY_COLUMNS)
    if relation is None:
        return None
    available = available_series(con, relation)
    rows: list[dict[str, Any]] = []
    panels: list[str] = []
    for task, metric, title in MEASURES:
        series = pick_series(available, task, metric)
        if series is None:
            continue
        found = score_rows(con, relation, series, title)
        if found:
            rows += found
            panels.append(title)
    if not rows:
        return None
    return gender_chart(rows, panels)


def gender_chart(rows: list[dict[str, Any]], panels: list[str]) -> AnyChart:
    """Rows are one per measure panel × suite × size × step (see ``score_rows``)."""
    # Under the band and the line. No data fields: one rule per panel.
    reference = (
        alt.Chart().mark_rule(strokeDash=[2, 3], color=theme.MUTED, strokeWidth=1.2).encode(y=alt.datum(REFERENCE))
    )
    # Faceted on the panel's position, headed with its title (see performance.task_panel_grid).
    rows = [{**row, "panel_index": panels.index(row["panel"])} for row in rows]
    layered = band_and_line(rows, y_title=None, under=(reference,))
    return (
        layered.properties(width=CELL_WIDTH, height=CELL_HEIGHT)
        .facet(
            facet=alt.Facet("panel_index:O", title=None, header=theme.column_header(panels)),
            columns=2,
            spacing={"row": 20, "column": 40},
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                TITLE,
                subtitle=(
                    "Median over seeds (line), 25th–75th percentile (band); colour: model size, "
                    "dash: suite. Dotted line: 0.5 (chance, or no preference)."
                ),
            )
        )
    )
