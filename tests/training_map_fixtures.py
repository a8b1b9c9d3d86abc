"""A lake whose weight statistics follow known training phases, for the training-map tests.

Each checkpoint gets a successful ``weight_stats`` extraction (manifest row + rows
written through ``Lake``) with one non-square matrix whose l1, l2, spectral and
sv_mean are ``BASE + x`` for a 4-vector x of the checkpoint, and constant everything
else (sv_var, code sparsity, the all_weights / all_biases rows), so
fct_weight_features varies in exactly those four features.

x is the mean of the checkpoint's regime plus small Gaussian noise:

- size ``a``: 4 runs, each A (steps 0-20), B (30-60), C (70-90);
- size ``b``: the same 4 runs, plus seed 4, whose last phase is D instead of C
  (C with its last feature reversed): an outlier run with a regime no other visits;
- size ``short``: 2 steps only (no training map: horizons start at the 3rd step);
- size ``flat``: 3 steps whose features never change (nothing to fit: one state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from polypythias.warehouse import synthetic
from polypythias.warehouse.schemas import WEIGHT_STATS
from polypythias.warehouse.synthetic import SyntheticLake, checkpoint_partition

SUITE = "maps"
STEPS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)
BASE = 10.0
NOISE = 0.1
REGIMES = {
    "A": (0.0, 0.0, 0.0, 0.0),
    "B": (2.0, 1.0, -1.0, 1.0),
    "C": (3.0, 3.0, 0.0, 2.0),
    "D": (3.0, 3.0, 0.0, -2.0),
}
NORMAL_PATH = ("A",) * 3 + ("B",) * 4 + ("C",) * 3
OUTLIER_PATH = ("A",) * 3 + ("B",) * 4 + ("D",) * 3
#: (size, seed) of the outlier run.
OUTLIER = ("b", 4)
#: The regime changes every normal run makes, at the step it enters the new regime.
NORMAL_CHANGES = {("A", "B"): 30, ("B", "C"): 70}

_BASE_TIME = datetime(2026, 2, 1, tzinfo=UTC)


@dataclass
class Written:
    """What the lake holds: per (size, seed, step), the 4 varying features and the regime."""

    features: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)
    regimes: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def runs(self, size: str) -> list[int]:
        return sorted({seed for s, seed, _ in self.features if s == size})

    def steps(self, size: str) -> list[int]:
        return sorted({step for s, _, step in self.features if s == size})


def _extraction_id(serial: int) -> str:
    return synthetic.extraction_id(_BASE_TIME + timedelta(seconds=serial), serial)


def write_checkpoint(lake: SyntheticLake, size: str, seed: int, step: int, serial: int, x: np.ndarray) -> None:
    """One successful weight_stats extraction whose varying features are ``BASE + x``."""
    extraction_id = _extraction_id(serial)
    lake.write_extraction(checkpoint_partition(SUITE, size, seed, step), extraction_id,
                          {WEIGHT_STATS: _weight_rows(extraction_id, x)}, ("weight_stats",))  # fmt: skip


def _weight_rows(extraction_id: str, x: np.ndarray) -> pa.Table:
    # Columns the schema has beyond these (e.g. added by a later extractor version)
    # are null: from_pylist fills missing keys.
    matrix = {
        "extraction_id": extraction_id, "tensor_name": "layers.0.mlp.dense_h_to_4h.weight",
        "kind": "ffn_in", "layer": 0, "n_rows": 32, "n_cols": 8,
        "l1": BASE + x[0], "l2": BASE + x[1], "spectral": BASE + x[2], "sv_mean": BASE + x[3],
        "trace": None, "code_sparsity": 2.0, "computational_sparsity": None, "sv_var": 1.0,
        "mean": 0.0, "median": None, "var": 1.0, "weight_hash": None,
    }  # fmt: skip
    aggregates = [
        {"extraction_id": extraction_id, "tensor_name": kind, "kind": kind, "layer": None,
         "n_rows": 1, "n_cols": 256, "mean": 0.5, "median": 0.25, "var": 2.0}
        for kind in ("all_weights", "all_biases")
    ]  # fmt: skip
    return pa.Table.from_pylist([matrix, *aggregates], schema=WEIGHT_STATS.schema)


def write_training_map_lake(root: Path, seed: int = 7) -> Written:
    """Write the lake described in the module's docstring; returns what it holds."""
    lake = SyntheticLake(root)
    rng = np.random.default_rng(seed)
    written = Written()
    plan = [("a", s, NORMAL_PATH, STEPS) for s in range(4)]
    plan += [("b", s, OUTLIER_PATH if ("b", s) == OUTLIER else NORMAL_PATH, STEPS) for s in range(5)]
    plan += [("short", s, ("A", "B"), STEPS[:2]) for s in range(2)]
    plan += [("flat", s, ("A", "A", "A"), STEPS[:3]) for s in range(2)]
    serial = 0
    for size, run, path, steps in plan:
        for step, regime in zip(steps, path, strict=True):
            noise = 0.0 if size == "flat" else rng.normal(0.0, NOISE, 4)
            x = np.asarray(REGIMES[regime]) + noise
            serial += 1
            write_checkpoint(lake, size, run, step, serial, x)
            written.features[size, run, step] = BASE + x
            written.regimes[size, run, step] = regime
    return written
