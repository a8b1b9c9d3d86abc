"""What a suite expects against what the lake holds, per run.

Each expected (checkpoint, extractor) pair is exactly one of:

- ``done``: a successful extraction under the extractor's current configuration;
- ``diverged``: settled under the current configuration as diverged (NaN or inf
  weights or outputs): final, not retried;
- ``damaged``: settled under the current configuration, but the data files that
  manifest row records are missing, unreadable or hold other row counts
  (warehouse/verify.py): it will be redone;
- ``stale``: settled only under another configuration (it will be redone);
- ``failed``: the latest attempt failed and there is no current success;
- ``missing``: never attempted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from polypythias.extract.extractors import Extractor
from polypythias.extract.suite import Suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST
from polypythias.warehouse.verify import damaged_extractions

STATES = ("done", "diverged", "damaged", "stale", "failed", "missing")
#: Manifest statuses that settle a (checkpoint, extractor) pair: it is not redone.
SETTLED = ("success", "diverged")


@dataclass(frozen=True, slots=True)
class RunStatus:
    model_size: str
    seed: int
    counts: dict[str, int]
    #: The latest error of each failed pair, "step N extractor: error", and what
    #: is wrong with each damaged one.
    errors: tuple[str, ...]


def suite_manifest(lake: Lake, suite: str) -> tuple[pa.Table, dict[tuple, str]]:
    """The suite's manifest rows and its damaged extractions (see damaged_extractions)."""
    manifest = lake.read(MANIFEST)
    manifest = manifest.filter(pc.equal(manifest["suite"], suite))
    return manifest, damaged_extractions(lake, manifest)


def settled_extractions(manifest: pa.Table, suite: str, damaged: dict[tuple, str] | None = None) -> dict[tuple, str]:
    """(model_size, seed, step, extractor, config_hash) → status ("success" or
    "diverged") of every settled extraction whose data is intact (not in `damaged`,
    keyed as damaged_extractions keys it); success wins over diverged."""
    manifest = manifest.filter(
        pc.and_(pc.equal(manifest["suite"], suite), pc.is_in(manifest["status"], pa.array(SETTLED)))
    )
    columns = ["model_size", "seed", "step", "extractor", "config_hash", "extraction_id"]
    settled: dict[tuple, str] = {}
    for *key, extraction_id, status in zip(*(manifest[c].to_pylist() for c in [*columns, "status"]), strict=True):
        if damaged and (suite, *key[:4], extraction_id) in damaged:
            continue
        if settled.get(tuple(key)) != "success":
            settled[tuple(key)] = status
    return settled


def suite_status(suite: Suite, lake: Lake, extractors: dict[str, Extractor]) -> list[RunStatus]:
    manifest, damaged = suite_manifest(lake, suite.name)
    settled = settled_extractions(manifest, suite.name, damaged)
    #: (model_size, seed, step, extractor, config_hash) → what is wrong with its data
    damage = {
        (*key[1:5], config_hash): damaged[key]
        for key, config_hash in (
            ((suite.name, *row[:5]), row[5])
            for row in zip(
                *(
                    manifest[c].to_pylist()
                    for c in ["model_size", "seed", "step", "extractor", "extraction_id", "config_hash"]
                ),
                strict=True,
            )
        )
        if key in damaged
    }
    hashes = {name: e.config_hash() for name, e in extractors.items()}
    latest: dict[tuple, dict] = {}
    for row in manifest.sort_by("extraction_id").to_pylist():
        latest[(row["model_size"], row["seed"], row["step"], row["extractor"])] = row

    counts: dict[tuple, Counter] = {(s, k): Counter() for s in suite.sizes for k in suite.seeds}
    errors: dict[tuple, list[str]] = {run: [] for run in counts}
    for name in extractors:
        for checkpoint in suite.checkpoints_for(name):
            key = (checkpoint.model_size, checkpoint.seed, checkpoint.step, name)
            run = key[:2]
            last = latest.get(key)
            outcome = settled.get((*key, hashes[name]))
            if outcome:
                state = "done" if outcome == "success" else "diverged"
            elif (*key, hashes[name]) in damage:
                state = "damaged"
                errors[run].append(f"step {checkpoint.step} {name}: data damaged: {damage[(*key, hashes[name])]}")
            elif last is None:
                state = "missing"
            elif last["status"] in SETTLED:
                state = "stale"
            else:
                state = "failed"
                errors[run].append(f"step {checkpoint.step} {name}: {last['error']}")
            counts[run][state] += 1
    return [
        RunStatus(size, seed, {s: counts[(size, seed)][s] for s in STATES}, tuple(errors[(size, seed)]))
        for size, seed in counts
    ]
