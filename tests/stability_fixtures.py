"""Hand-built marts of issue 5 (training maps, outliers, early warning, integrity) for
the chart and browser tests, in the contract's columns and DuckDB types.

A micro-like suite: sizes 200k and 1m (alphabetical order is not size order), five
seeds, the micro checkpoint schedule. Seed 3 of 1m is the outlier: its training loss
spikes at steps 100–102 (its fct_loss_spikes rows), it visits a state the other runs
never visit, and three signals flag it. Seed 1 of 200k is a false alarm of the
performance signal at step 8. The training log is a staging view in schema
``staging``, as dbt builds it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

SUITE = "micro"
SIZES = ("1m", "200k")
SEEDS = (0, 1, 2, 3, 4)
STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256)
FINAL = STEPS[-1]
OUTLIER = ("1m", 3)
SPIKE_STEPS = (100, 101, 102)
SIGNALS = ("training_map", "performance", "loss_spikes", "final_loss", "agreement")
# signal → first checkpoint step it flags the outlier (None: never).
OUTLIER_FIRST_FLAG = {
    "training_map": 160,
    "performance": 224,
    "loss_spikes": 128,
    "final_loss": None,
    "agreement": None,
}
FALSE_ALARM = ("200k", 1, "performance", 8)
# What dim_runs states for each size (the charts order sizes by it).
NOMINAL_PARAMETERS = {"1m": 1e6, "200k": 2e5}

DDL = {
    "dim_runs": """
        create table dim_runs (
            suite varchar, model_size varchar, seed bigint, nominal_parameters double,
            n_expected_checkpoints bigint, n_present_checkpoints bigint
        )""",
    "fct_training_phases": """
        create table fct_training_phases (
            suite varchar, model_size varchar, map_source varchar, seed bigint, step bigint,
            state integer, state_probability double, score double, n_states integer
        )""",
    "fct_run_outliers": """
        create table fct_run_outliers (
            suite varchar, model_size varchar, seed bigint, signal varchar, score double,
            threshold double, fires boolean, first_step bigint, reason varchar,
            is_outlier boolean, n_signals_firing integer
        )""",
    "fct_stability_forecast": """
        create table fct_stability_forecast (
            suite varchar, model_size varchar, seed bigint, signal varchar, step bigint,
            score double, threshold double, flags boolean, final_step bigint,
            is_outlier_at_end boolean, first_flag_step bigint, lead_steps bigint,
            is_false_alarm boolean
        )""",
    "fct_checkpoint_integrity": """
        create table fct_checkpoint_integrity (
            finding varchar, suite varchar, model_size varchar, seed bigint, step bigint,
            other_model_size varchar, other_seed bigint, other_step bigint, score double,
            threshold double, detail varchar
        )""",
    "fct_loss_spikes": """
        create table fct_loss_spikes (
            suite varchar, model_size varchar, seed bigint, step bigint, loss double,
            window_median double, robust_deviation double, deviation double,
            threshold double, is_after_warmup boolean
        )""",
    "stg_lake__training_log": """
        create schema if not exists staging;
        create table staging.stg_lake__training_log (
            suite varchar, model_size varchar, seed bigint, step bigint, extraction_id varchar,
            loss double, lr double, grad_norm double, tokens_seen bigint
        )""",
}
TABLE = {"stg_lake__training_log": "staging.stg_lake__training_log"}


def is_outlier(size: str, seed: int) -> bool:
    return (size, seed) == OUTLIER


def state_of(size: str, seed: int, step: int) -> int:
    """Stable runs: 0 until step 8, 1 until 64, 2 after; 1m has a fourth state (3) that
    only the outlier enters, from step 160."""
    if is_outlier(size, seed) and step >= 160:
        return 3
    return 0 if step < 8 else 1 if step < 64 else 2


def training_phases(rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for seed in SEEDS:
            for step in STEPS:
                state = state_of(size, seed, step)
                score = math.log1p(step) / math.log1p(FINAL) + float(rng.normal(0, 0.03))
                if state == 3:
                    score -= 0.4
                rows.append(dict(
                    suite=SUITE, model_size=size, map_source="hmm", seed=seed, step=step,
                    state=state, state_probability=float(rng.uniform(0.6, 1.0)), score=score,
                    n_states=4 if size == "1m" else 3,
                ))  # fmt: skip
    # An imported map of 200k without scores: drawn with its state on the y axis.
    for seed in SEEDS:
        for step in STEPS[::2]:
            rows.append(dict(
                suite=SUITE, model_size="200k", map_source="imported", seed=seed, step=step,
                state=0 if step < 32 else 1, state_probability=None, score=None, n_states=None,
            ))  # fmt: skip
    return rows


REASONS = {
    "training_map": (
        "visits state 3, which 1 of 5 runs of 1m visit; enters state 3 at step 160 "
        "(the other runs stay in state 2 from step 64 to the end)"
    ),
    "performance": "mean z-score across 3 tasks is -2.6 at step 224, below the threshold -2",
    "loss_spikes": ("3 loss spikes, the largest 9.1 robust deviations above the rolling median at step 100"),
}


def run_outliers() -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for seed in SEEDS:
            fired = []
            for signal in SIGNALS:
                first = OUTLIER_FIRST_FLAG[signal] if is_outlier(size, seed) else None
                fired.append((signal, first))
            n_firing = sum(first is not None for _, first in fired)
            for signal, first in fired:
                fires = first is not None
                rows.append(dict(
                    suite=SUITE, model_size=size, seed=seed, signal=signal,
                    score=4.2 if fires else 0.5, threshold=3.0, fires=fires, first_step=first,
                    reason=REASONS[signal] if fires else "within threshold",
                    is_outlier=n_firing > 0, n_signals_firing=n_firing,
                ))  # fmt: skip
    return rows


def stability_forecast() -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for seed in SEEDS:
            outlier = is_outlier(size, seed)
            for signal in SIGNALS:
                first = OUTLIER_FIRST_FLAG[signal] if outlier else None
                for step in STEPS:
                    flags = first is not None and step >= first
                    if (size, seed, signal, step) == FALSE_ALARM:
                        flags = True
                    rows.append(dict(
                        suite=SUITE, model_size=size, seed=seed, signal=signal, step=step,
                        score=4.0 if flags else 0.4, threshold=3.0, flags=flags,
                        final_step=FINAL, is_outlier_at_end=outlier,
                        first_flag_step=(
                            first if outlier
                            else 8 if (size, seed, signal) == FALSE_ALARM[:3] else None
                        ),
                        lead_steps=FINAL - first if outlier and first is not None else None,
                        is_false_alarm=flags and not outlier,
                    ))  # fmt: skip
    return rows


INTEGRITY = [
    # As D's mart lists them: both checkpoints of an identical pair, each naming the other;
    # score and threshold only for lineage breaks; other_* null for a missing checkpoint.
    dict(finding="duplicate_weights", suite=SUITE, model_size="1m", seed=2, step=64,
         other_model_size="1m", other_seed=2, other_step=32, score=None, threshold=None,
         detail="all 14 weight matrices are identical to those of 1m seed 2 step 32"),
    dict(finding="duplicate_weights", suite=SUITE, model_size="1m", seed=2, step=32,
         other_model_size="1m", other_seed=2, other_step=64, score=None, threshold=None,
         detail="all 14 weight matrices are identical to those of 1m seed 2 step 64"),
    dict(finding="duplicate_weights", suite=SUITE, model_size="200k", seed=0, step=128,
         other_model_size="200k", other_seed=1, other_step=128, score=None, threshold=None,
         detail="all 14 weight matrices are identical to those of 200k seed 1 step 128"),
    dict(finding="duplicate_weights", suite=SUITE, model_size="200k", seed=1, step=128,
         other_model_size="200k", other_seed=0, other_step=128, score=None, threshold=None,
         detail="all 14 weight matrices are identical to those of 200k seed 0 step 128"),
    dict(finding="missing_checkpoint", suite=SUITE, model_size="200k", seed=4, step=192,
         other_model_size=None, other_seed=None, other_step=None, score=None, threshold=None,
         detail="expected by the suite grid; never attempted"),
    dict(finding="lineage_break", suite=SUITE, model_size="1m", seed=3, step=128,
         other_model_size="1m", other_seed=3, other_step=96, score=5.2, threshold=2.5,
         detail="5.2× farther from step 96 than the run's path allows (path ratio)"),
]  # fmt: skip


def training_log(rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for seed in SEEDS:
            for step in range(1, FINAL + 1):
                loss = 2.3 + 2.8 * math.exp(-step / 40) + float(rng.normal(0, 0.02))
                if is_outlier(size, seed) and step in SPIKE_STEPS:
                    loss += 1.5
                rows.append(dict(
                    suite=SUITE, model_size=size, seed=seed, step=step,
                    extraction_id="20260101T000000000000Z-00000001", loss=loss, lr=1e-3,
                    grad_norm=None, tokens_seen=step * 4096,
                ))  # fmt: skip
    return rows


SPIKE_WINDOW = 32
SPIKE_K = 8.0


def loss_spikes(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fct_loss_spikes rows for the outlier's spikes: each loss against the median and
    1.4826 × MAD of the previous SPIKE_WINDOW logged losses of its run."""
    losses = {r["step"]: r["loss"] for r in log if (r["model_size"], r["seed"]) == OUTLIER}
    steps = sorted(losses)
    rows = []
    for step in SPIKE_STEPS:
        i = steps.index(step)
        window = np.array([losses[s] for s in steps[i - SPIKE_WINDOW : i]])
        median = float(np.median(window))
        robust = 1.4826 * float(np.median(np.abs(window - median)))
        rows.append(dict(
            suite=SUITE, model_size=OUTLIER[0], seed=OUTLIER[1], step=step, loss=losses[step],
            window_median=median, robust_deviation=robust,
            deviation=(losses[step] - median) / robust, threshold=SPIKE_K, is_after_warmup=True,
        ))  # fmt: skip
    return rows


def runs() -> list[dict[str, Any]]:
    return [
        dict(suite=SUITE, model_size=size, seed=seed, nominal_parameters=NOMINAL_PARAMETERS[size],
             n_expected_checkpoints=len(STEPS), n_present_checkpoints=len(STEPS))
        for size in SIZES for seed in SEEDS
    ]  # fmt: skip


def stability_marts(seed: int = 5) -> dict[str, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    phases = training_phases(rng)
    log = training_log(rng)
    return {
        "dim_runs": runs(),
        "fct_training_phases": phases,
        "fct_run_outliers": run_outliers(),
        "fct_stability_forecast": stability_forecast(),
        "fct_checkpoint_integrity": [dict(r) for r in INTEGRITY],
        "fct_loss_spikes": loss_spikes(log),
        "stg_lake__training_log": log,
    }


def make_stability_warehouse(path: Path, rows: dict[str, list[dict[str, Any]]]) -> Path:
    """Create the given marts in the warehouse at ``path`` (created or added to); a mart
    absent from ``rows`` is not created."""
    con = duckdb.connect(str(path))
    try:
        for name, table_rows in rows.items():
            con.execute(DDL[name])
            if table_rows:
                con.register("new_rows", pa.Table.from_pylist(table_rows))
                con.execute(f"insert into {TABLE.get(name, name)} by name select * from new_rows")
                con.unregister("new_rows")
    finally:
        con.close()
    return path
