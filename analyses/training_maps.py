"""Training maps: each run's path through the latent training states, per model size.

As in the PolyPythias paper (after Hu et al. 2023): the one-dimensional map score of
every checkpoint against training step, each point coloured by its HMM state, a thin
line joining the checkpoints of a run. Per model size (and map source: fitted here or
imported) one facet row holds the runs that end stable and one the outlier runs, so an
outlier's detour through other states stands out against the common path.

Marts: ``fct_training_phases`` (the states at the final horizon: one row per
checkpoint) and, when present, ``fct_run_outliers`` for which runs are outliers (a run
is an outlier when any of its signals fires). Without the outlier mart every run sits
in one row per size, headed "runs (outliers not assessed)"; a run missing from the
outlier mart goes to a row of its own, "not assessed".

States are labelled per size (0 = the state whose checkpoints come earliest on
average), so colours mean "phase order within the size", not the same state across
sizes. An imported map without scores is drawn with its state on the y axis, as the
row header says. The step axis is logarithmic over ``step + 1``, as in the other
charts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import duckdb

from . import theme
from .encodings import step_axis
from .marts import (
    AnyChart,
    mart_relation,
    query_rows,
    run_status_sql,
    size_parameters,
    sizes_in_order,
)

NAME = "training_maps"
TITLE = "Training maps: latent states over training, stable runs vs outliers"
DESCRIPTION = (
    "Per model size, each checkpoint's training-map score (first principal component of the "
    "weight features) against training step, coloured by its HMM state; one row for the runs "
    "that end stable and one for the outlier runs."
)
MART = "fct_training_phases"
OUTLIERS_MART = "fct_run_outliers"

PHASE_COLUMNS = (
    "suite",
    "model_size",
    "map_source",
    "seed",
    "step",
    "state",
    "state_probability",
    "score",
    "n_states",
)
OUTLIER_COLUMNS = ("suite", "model_size", "seed", "is_outlier")

# Row of a size: runs by how they end.
STABLE = "stable"
OUTLIER = "outlier"
UNASSESSED = "unassessed"
STATUS_ORDER = (STABLE, OUTLIER, UNASSESSED)
SOURCE_LABELS = {"hmm": "HMM fitted here", "imported": "imported map"}

# One colour per state (up to the 8 states the BIC search allows): Okabe-Ito and wine,
# the pale yellow last (it is hard to see on white).
STATE_COLORS = [*theme.CATEGORY[:6], "#882255", theme.CATEGORY[6]]
PATH_COLOR = "#9a9a9a"
CELL_WIDTH = theme.WIDTH
CELL_HEIGHT = 130


def chart(con: duckdb.DuckDBPyConnection) -> AnyChart | None:
    """The training-map chart, or None when ``fct_training_phases`` is missing or empty."""
    relation = mart_relation(con, MART, PHASE_COLUMNS)
    if relation is None:
        return None
    outliers = mart_relation(con, OUTLIERS_MART, OUTLIER_COLUMNS)
    if outliers is None:
        status = "null::varchar"
        join = ""
    else:
        status, join = run_status_sql(outliers, "p", outlier=OUTLIER, stable=STABLE, unknown=UNASSESSED)
    rows = query_rows(
        con,
        f"""
        select p.suite, p.model_size, p.map_source, p.seed, p.step, p.state,
               p.state_probability, p.score, p.n_states, {status} as status
        from {relation} as p
        {join}
        where p.suite is not null and p.model_size is not null and p.map_source is not null
          and p.seed is not null and p.step is not null and p.state is not null
        order by p.suite, p.model_size, p.map_source, p.seed, p.step
        """,
    )
    if not rows:
        return None
    return map_chart(rows, assessed=outliers is not None, parameters=size_parameters(con))


def _seeds(seeds: set[int]) -> str:
    ordered = sorted(seeds)
    return ("seed " if len(ordered) == 1 else "seeds ") + ", ".join(str(s) for s in ordered)


def map_chart(rows: list[dict[str, Any]], *, assessed: bool = True, parameters: Mapping[str, float | None]) -> AnyChart:
    """Rows are one per checkpoint of fct_training_phases with a ``status`` (stable,
    outlier, unassessed, or None when the outlier mart is missing); ``parameters`` order
    the sizes (``marts.size_parameters``)."""
    suites = sorted({r["suite"] for r in rows})
    sizes = sizes_in_order({r["model_size"] for r in rows}, parameters)
    sources = sorted({r["map_source"] for r in rows}, key=lambda s: (s != "hmm", s))
    maps = sorted(
        {(r["suite"], r["model_size"], r["map_source"]) for r in rows},
        key=lambda m: (suites.index(m[0]), sizes.index(m[1]), sources.index(m[2])),
    )
    # y is the score; a map without any score (imported without one) plots its state.
    scored = {m for m in maps if any(
        r["score"] is not None for r in rows if (r["suite"], r["model_size"], r["map_source"]) == m
    )}  # fmt: skip

    groups: list[tuple[tuple[str, str, str], str | None]] = []
    labels: list[list[str]] = []
    drawn: list[dict[str, Any]] = []
    for m in maps:
        suite, size, source = m
        of_map = [r for r in rows if (r["suite"], r["model_size"], r["map_source"]) == m]
        n_states = max((r["n_states"] for r in of_map if r["n_states"] is not None), default=None)
        states = n_states if n_states is not None else len({r["state"] for r in of_map})
        head = f"{suite} · {size} · {SOURCE_LABELS.get(source, source)} ({states} states)"
        y_note = [] if m in scored else ["y: state (this map has no score)"]
        statuses = sorted({r["status"] for r in of_map}, key=lambda s: STATUS_ORDER.index(s) if s else -1)
        all_seeds = {r["seed"] for r in of_map}
        for status in statuses:
            seeds = {r["seed"] for r in of_map if r["status"] == status}
            if status is None:
                line = f"runs (outliers not assessed): {_seeds(seeds)}"
            elif status == STABLE:
                line = f"stable runs ({len(seeds)} of {len(all_seeds)}): {_seeds(seeds)}"
            elif status == OUTLIER:
                line = f"outlier runs ({len(seeds)} of {len(all_seeds)}): {_seeds(seeds)}"
            else:
                line = f"runs not in {OUTLIERS_MART}: {_seeds(seeds)}"
            if status == STABLE and OUTLIER not in statuses:
                line += " · no outliers"
            index = len(groups)
            groups.append((m, status))
            labels.append([head, line, *y_note])
            for r in of_map:
                if r["status"] != status:
                    continue
                y = r["score"] if m in scored else r["state"]
                if y is None:
                    continue  # a checkpoint without a score in a scored map
                drawn.append({**r, "y": y, "group_index": index, "run": f"seed {r['seed']}"})

    states = sorted({r["state"] for r in drawn})
    color = alt.Color(
        "state:N",
        title="state",
        scale=alt.Scale(domain=states, range=[STATE_COLORS[i % len(STATE_COLORS)] for i in range(len(states))]),
        sort=states,
        legend=alt.Legend(symbolType="circle", symbolSize=80),
    )
    x = step_axis(drawn)
    y = alt.Y("y:Q", title="training-map score", scale=alt.Scale(zero=False), axis=alt.Axis(format=".2~f"))
    tooltip = [
        alt.Tooltip("suite:N", title="suite"),
        alt.Tooltip("model_size:N", title="model size"),
        alt.Tooltip("map_source:N", title="map"),
        alt.Tooltip("seed:Q", title="seed"),
        alt.Tooltip("step:Q", title="step", format=","),
        alt.Tooltip("state:N", title="state"),
        alt.Tooltip("state_probability:Q", title="posterior of the state", format=".3f"),
        alt.Tooltip("score:Q", title="score", format=".3f"),
    ]
    path = alt.Chart().mark_line(color=PATH_COLOR, strokeWidth=1, opacity=0.7).encode(x=x, y=y, detail="seed:N")
    points = alt.Chart().mark_point(size=34, filled=True, opacity=0.9).encode(x=x, y=y, color=color, tooltip=tooltip)
    layered = (
        alt.layer(path, points, data=alt.Data(values=drawn))
        .transform_calculate(step_plus_one="datum.step + 1")
        .properties(width=CELL_WIDTH, height=CELL_HEIGHT)
    )
    outlier_note = (
        "Rows: per model size, the runs that end stable and the outlier runs (any signal fires in fct_run_outliers)."
        if assessed
        else "fct_run_outliers is not built yet: all runs of a size share one row."
    )
    return (
        layered.facet(
            row=alt.Row(
                "group_index:O",
                title=None,
                header=theme.row_header(labels, labelOrient="top", labelAnchor="start", labelLimit=CELL_WIDTH),
            ),
            spacing={"row": 10},
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.Title(
                TITLE,
                subtitle=[
                    "Each point is a checkpoint, coloured by its latent state (states are "
                    "numbered per size in order of appearance); a grey line joins a run's "
                    "checkpoints.",
                    outlier_note,
                ],
            )
        )
    )
