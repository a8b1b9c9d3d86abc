"""A small lake written through ``Lake`` for the dbt tests, and what the marts should see.

``write_lake`` writes a toy suite (2 sizes × 3 seeds × 3 steps, a few documents ×
positions, four weight matrices per checkpoint) with seeded random values, plus the
traps staging must get right:

- a superseded older success (its rows carry absurd values, so a leak shows),
- a failed attempt, newer than the success, that wrote token rows before failing,
- an orphan data file whose extraction id has no manifest row,
- an expected checkpoint (step 1000) that was never extracted, one with a failure,
- an older suite grid and older training-log files that newer ones replace.

It returns a ``Truth``: the rows the marts are built from (the current ones only),
so the tests can recompute every statistic independently with numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import (
    MANIFEST,
    SUITE_GRID,
    TOKEN_STATS,
    TRAINING_LOG,
    WEIGHT_STATS,
)

SUITE = "toy"
SIZES = ("14m", "1.4b")
SEEDS = (0, 1, 2)
STEPS = (0, 10, 100)
#: Expected by the suite grid for every run, never extracted.
MISSING_STEP = 1000
EXTRACTORS = ("token_stats", "weight_stats")
DATASETS = ("manifest", "token_stats", "weight_stats", "training_log", "suite_grid")
N_DOCS = 3
N_POSITIONS = 6

#: (size, seed, step) whose older successful extraction is superseded.
SUPERSEDED = ("14m", 1, 10)
#: (size, seed, step) with a failed attempt, newer than its success, that wrote rows.
FAILED_AFTER_SUCCESS = ("1.4b", 2, 100)
#: (size, seed, step) with an orphan file (no manifest row), newest of all.
ORPHAN = ("14m", 0, 100)
#: (size, seed) whose missing expected checkpoint was attempted and failed.
FAILED_MISSING = ("1.4b", 0)

# Tokens some seeds do not score, so the shared-token sets differ between pairs:
# (1, 3) only seed 0 scores (left out of the token spread); the last token of the
# last document seeds 0 and 1 score.
_ONLY_SEED_0 = (1, 3)
_DROPPED = {
    1: {_ONLY_SEED_0},
    2: {_ONLY_SEED_0, (N_DOCS - 1, N_POSITIONS - 1)},
}

_MATRICES = (  # tensor name, kind, layer, rows, cols
    ("layers.0.attention.query_key_value.weight[q]", "q", 0, 8, 8),
    ("layers.0.attention.query_key_value.weight[k]", "k", 0, 8, 8),
    ("layers.0.mlp.dense_h_to_4h.weight", "ffn_in", 0, 32, 8),
    ("embed_in.weight", "embed", None, 50, 8),
)

_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

Checkpoint = tuple[str, int, int]


def extraction_id(minutes: int, serial: int) -> str:
    """A deterministic, time-sortable extraction id ``minutes`` after the base time."""
    moment = _BASE_TIME + timedelta(minutes=minutes)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{serial:08x}"


@dataclass
class Truth:
    """What the marts should be built from: the current rows only."""

    #: (size, seed, step) → {(doc_id, position): token loss}
    token_losses: dict[Checkpoint, dict[tuple[int, int], float]] = field(default_factory=dict)
    #: (size, seed, step) → weight_stats rows (dicts in the schema's columns)
    weight_rows: dict[Checkpoint, list[dict]] = field(default_factory=dict)
    #: (size, seed) → {step: loss} of the newest training log
    training_losses: dict[tuple[str, int], dict[int, float]] = field(default_factory=dict)
    #: extraction ids whose data rows must never reach staging
    invisible_ids: set[str] = field(default_factory=set)
    #: the id of the current extraction of each checkpoint
    current_ids: dict[Checkpoint, str] = field(default_factory=dict)


def _manifest(
    extraction: str, status: str, error: str | None, extractors: Iterable[str] = EXTRACTORS
) -> pa.Table:
    started = datetime.strptime(extraction[:21], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    records = [
        {
            "extraction_id": extraction,
            "extractor": name,
            "status": status,
            "started_at": started,
            "finished_at": started + timedelta(seconds=3),
            "duration_s": 3.0,
            "rows": {},  # not read by the marts
            "config_hash": "cafe",
            "source": "local",
            "device": "cpu",
            "host": "test",
            "package_versions": {"polypythias": "0.1.0"},
            "error": error,
        }
        for name in extractors
    ]
    return pa.Table.from_pylist(records, schema=MANIFEST.schema)


def _token_table(extraction: str, losses: dict[tuple[int, int], float]) -> pa.Table:
    keys = sorted(losses)
    logprobs = np.array([-losses[k] for k in keys], dtype=np.float32)
    return pa.table(
        {
            "extraction_id": [extraction] * len(keys),
            "doc_id": [d for d, _ in keys],
            "position": [p for _, p in keys],
            "target_id": [7] * len(keys),
            "target_logprob": logprobs,
            "entropy": np.abs(logprobs) + np.float32(0.5),
            "target_rank": [1 + (d + p) % 4 for d, p in keys],
            "topk_ids": [[7, 3]] * len(keys),
            "topk_logprobs": [[float(lp), float(lp) - 1.0] for lp in logprobs],
        }
    )


def _weight_table(extraction: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"extraction_id": extraction, **row} for row in rows], schema=WEIGHT_STATS.schema
    )


def _random_weight_rows(rng: np.random.Generator, scale: float = 1.0) -> list[dict]:
    rows = []
    for name, kind, layer, n_rows, n_cols in _MATRICES:
        l2 = float(rng.uniform(1.0, 5.0)) * scale
        l1 = l2 * float(rng.uniform(2.0, 9.0))
        spectral = l2 * float(rng.uniform(0.3, 0.9))
        trace = float(rng.normal(0.0, 1.0)) * scale if n_rows == n_cols else None
        rows.append(
            {
                "tensor_name": name, "kind": kind, "layer": layer,
                "n_rows": n_rows, "n_cols": n_cols,
                "l1": l1, "l2": l2, "trace": trace, "spectral": spectral,
                "code_sparsity": l1 / l2,
                "computational_sparsity": trace / spectral if trace is not None else None,
                "sv_mean": spectral * float(rng.uniform(0.2, 0.6)),
                "sv_var": float(rng.uniform(0.01, 0.5)) * scale,
                "mean": float(rng.normal(0.0, 0.01)),
                "median": None,
                "var": float(rng.uniform(0.001, 0.05)),
                "weight_hash": f"{rng.integers(2**63):016x}",
            }
        )  # fmt: skip
    for kind in ("all_weights", "all_biases"):
        rows.append(
            {
                "tensor_name": kind, "kind": kind, "layer": None, "n_rows": 1000, "n_cols": 1,
                "l1": None, "l2": None, "trace": None, "spectral": None, "code_sparsity": None,
                "computational_sparsity": None, "sv_mean": None, "sv_var": None,
                "mean": float(rng.normal(0.0, 0.01)) * scale,
                "median": float(rng.normal(0.0, 0.01)),
                "var": float(rng.uniform(0.001, 0.05)) * scale,
                "weight_hash": None,
            }
        )  # fmt: skip
    return rows


def _losses(rng, difficulty, seed: int, step: int, shift: float = 0.0):
    losses = {}
    for (doc, pos), hard in difficulty.items():
        if (doc, pos) in _DROPPED.get(seed, set()):
            continue
        noise = rng.gamma(2.0, 0.25)
        # float32 on disk: keep the value the lake will hold
        losses[(doc, pos)] = float(np.float32(hard / (1 + step / 50) + noise + shift))
    return losses


def write_lake(
    root,
    datasets: Iterable[str] = DATASETS,
    seed: int = 0,
) -> Truth:
    """Write the toy lake under ``root`` (only ``datasets``) and return its truth."""
    wanted = set(datasets)
    lake = Lake(root)
    rng = np.random.default_rng(seed)
    truth = Truth()
    serial = iter(range(1, 10_000))

    def write(dataset, partition, extraction, table):
        if dataset.name in wanted:
            lake.write(dataset, partition, extraction, table)

    # Per size, how hard each token is, shared by every seed: seeds agree partly.
    difficulty = {
        size: {
            (doc, pos): float(rng.gamma(3.0, 1.0))
            for doc in range(N_DOCS)
            for pos in range(N_POSITIONS)
        }
        for size in SIZES
    }

    for size in SIZES:
        for seed_ in SEEDS:
            for step in STEPS:
                checkpoint = (size, seed_, step)
                partition = {"suite": SUITE, "model_size": size, "seed": seed_, "step": step}

                if checkpoint == SUPERSEDED:
                    old = extraction_id(10, next(serial))
                    stale = {k: 50.0 for k in difficulty[size]}
                    write(MANIFEST, partition, old, _manifest(old, "success", None))
                    write(TOKEN_STATS, partition, old, _token_table(old, stale))
                    stale_weights = _random_weight_rows(rng, 1e3)
                    write(WEIGHT_STATS, partition, old, _weight_table(old, stale_weights))
                    truth.invisible_ids.add(old)

                current = extraction_id(100 + step, next(serial))
                losses = _losses(rng, difficulty[size], seed_, step)
                weights = _random_weight_rows(rng)
                write(MANIFEST, partition, current, _manifest(current, "success", None))
                write(TOKEN_STATS, partition, current, _token_table(current, losses))
                write(WEIGHT_STATS, partition, current, _weight_table(current, weights))
                truth.token_losses[checkpoint] = losses
                truth.weight_rows[checkpoint] = weights
                truth.current_ids[checkpoint] = current

                if checkpoint == FAILED_AFTER_SUCCESS:
                    failed = extraction_id(500, next(serial))
                    write(TOKEN_STATS, partition, failed, _token_table(failed, {(0, 0): 40.0}))
                    write(MANIFEST, partition, failed,
                          _manifest(failed, "failed", "CUDA out of memory"))  # fmt: skip
                    truth.invisible_ids.add(failed)

                if checkpoint == ORPHAN:
                    orphan = extraction_id(900, next(serial))
                    write(TOKEN_STATS, partition, orphan, _token_table(orphan, {(0, 0): 30.0}))
                    write(WEIGHT_STATS, partition, orphan,
                          _weight_table(orphan, _random_weight_rows(rng, 1e3)))  # fmt: skip
                    truth.invisible_ids.add(orphan)

            # The training log: an older file replaced by a newer one.
            run = {"suite": SUITE, "model_size": size, "seed": seed_}
            older, newer = extraction_id(1, next(serial)), extraction_id(2, next(serial))
            log_steps = list(range(0, 101, 10))
            log = {s: float(5.0 / (1 + s / 20) + rng.uniform(0, 0.1)) for s in log_steps}
            for extraction, values in ((older, {s: 99.0 for s in log_steps}), (newer, log)):
                write(TRAINING_LOG, run, extraction, pa.table({
                    "extraction_id": [extraction] * len(log_steps),
                    "step": log_steps,
                    "loss": [values[s] for s in log_steps],
                    "lr": [1e-3] * len(log_steps),
                    "grad_norm": [None] * len(log_steps),
                    "tokens_seen": [s * 1024 for s in log_steps],
                }))  # fmt: skip
            truth.training_losses[(size, seed_)] = log

    # A failed attempt at a missing expected checkpoint.
    size, seed_ = FAILED_MISSING
    failed = extraction_id(600, next(serial))
    partition = {"suite": SUITE, "model_size": size, "seed": seed_, "step": MISSING_STEP}
    write(MANIFEST, partition, failed, _manifest(failed, "failed", "checkpoint not found"))

    # The suite grid: an older one (with a step 5 since dropped), then the current one.
    grids = (
        (extraction_id(0, next(serial)), (0, 5)),
        (extraction_id(5, next(serial)), (*STEPS, MISSING_STEP)),
    )
    for extraction, steps in grids:
        rows = [
            (size, seed_, step, name)
            for size in SIZES for seed_ in SEEDS for step in steps for name in EXTRACTORS
        ]  # fmt: skip
        write(SUITE_GRID, {"suite": SUITE}, extraction, pa.table({
            "extraction_id": [extraction] * len(rows),
            "model_size": [r[0] for r in rows],
            "seed": [r[1] for r in rows],
            "step": [r[2] for r in rows],
            "extractor": [r[3] for r in rows],
            "source": ["local"] * len(rows),
        }))  # fmt: skip
    return truth


def poison_token_stats(root, checkpoint: Checkpoint, extraction: str) -> None:
    """Add a newer successful token_stats extraction with an impossible row.

    Its one row has ``target_logprob`` = +0.5 (a probability above 1), which the
    staging invariant ``target_logprob <= 0`` must catch.
    """
    lake = Lake(root)
    size, seed, step = checkpoint
    partition = {"suite": SUITE, "model_size": size, "seed": seed, "step": step}
    table = _token_table(extraction, {(0, 0): -0.5})
    lake.write(TOKEN_STATS, partition, extraction, table)
    lake.write(MANIFEST, partition, extraction,
               _manifest(extraction, "success", None, extractors=("token_stats",)))  # fmt: skip
