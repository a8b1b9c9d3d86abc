"""Writing synthetic lakes: the one writer the tests' toy lakes and the benchmark share.

Each caller generates the values its lake needs (toy token losses, planted outliers,
a full-size PolyPythias suite); this module writes them as `polypythias extract`
would, through the real ``Lake.write`` and the schemas of ``warehouse/``: partitions
keyed by suite, size, seed and step, time-sortable extraction ids, the data files of
an extraction and then its ``manifest`` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST, TRAINING_LOG, Dataset

_ID_TIME_FORMAT = "%Y%m%dT%H%M%S%f"


def extraction_id(moment: datetime, token: int | str) -> str:
    """A valid extraction id at ``moment`` (ids sort as their moments do); ``token``,
    a serial number or 8 hex digits, tells apart the ids of one moment."""
    suffix = f"{token:08x}" if isinstance(token, int) else token
    return f"{moment:{_ID_TIME_FORMAT}}Z-{suffix}"


def started_at(extraction: str) -> datetime:
    """The moment an id of ``extraction_id`` was made for."""
    return datetime.strptime(extraction[:21], _ID_TIME_FORMAT).replace(tzinfo=UTC)


def checkpoint_partition(suite: str, size: str, seed: int, step: int) -> dict[str, object]:
    """The partition of one checkpoint's datasets."""
    return {"suite": suite, "model_size": size, "seed": seed, "step": step}


def run_partition(suite: str, size: str, seed: int) -> dict[str, object]:
    """The partition of one training run's datasets (its training log)."""
    return {"suite": suite, "model_size": size, "seed": seed}


def manifest_table(
    extraction: str,
    extractors: Iterable[str],
    *,
    status: str = "success",
    error: str | None = None,
    started: datetime | None = None,
    duration_s: float = 1.0,
    rows: Mapping[str, Mapping[str, int]] | None = None,
    config_hash: str = "cafe",
    source: str = "local",
    device: str = "cpu",
    host: str = "synthetic",
) -> pa.Table:
    """The manifest rows of one extraction, one per extractor. ``started`` defaults to
    the id's moment; ``rows`` (extractor → dataset → rows written) to none recorded,
    so staging checks no file against it."""
    started = started or started_at(extraction)
    records = [
        {
            "extraction_id": extraction,
            "extractor": name,
            "status": status,
            "started_at": started,
            "finished_at": started + timedelta(seconds=duration_s),
            "duration_s": duration_s,
            "rows": dict((rows or {}).get(name, {})),
            "config_hash": config_hash,
            "source": source,
            "device": device,
            "host": host,
            "package_versions": {"polypythias": "0.1.0"},
            "error": error,
        }
        for name in extractors
    ]
    return pa.Table.from_pylist(records, schema=MANIFEST.schema)


def training_log_table(extraction: str, losses: Mapping[int, float], tokens_per_step: int = 1024) -> pa.Table:
    """A training log with ``losses`` (step → loss) at a constant learning rate."""
    steps = sorted(losses)
    return pa.table({
        "extraction_id": [extraction] * len(steps),
        "step": steps,
        "loss": [losses[s] for s in steps],
        "lr": [1e-3] * len(steps),
        "grad_norm": pa.nulls(len(steps), pa.float64()),
        "tokens_seen": [s * tokens_per_step for s in steps],
    })  # fmt: skip


class SyntheticLake:
    """A ``Lake`` that writes only the datasets asked for (all by default)."""

    def __init__(self, lake: Lake | str | Path, datasets: Iterable[str] | None = None) -> None:
        self.lake = lake if isinstance(lake, Lake) else Lake(lake)
        self.datasets = None if datasets is None else frozenset(datasets)

    def wants(self, dataset: Dataset) -> bool:
        return self.datasets is None or dataset.name in self.datasets

    def write(self, dataset: Dataset, partition: Mapping[str, object], extraction: str, table: pa.Table) -> None:
        """Write one partition file of ``dataset``, unless it is not asked for."""
        if self.wants(dataset):
            self.lake.write(dataset, dict(partition), extraction, table)

    def write_extraction(
        self,
        partition: Mapping[str, object],
        extraction: str,
        tables: Mapping[Dataset, pa.Table],
        extractors: Iterable[str] | None,
        **manifest: object,
    ) -> None:
        """Write one extraction of a checkpoint: its data files, then (as the runner
        does) the manifest rows of ``extractors`` (``None``: an orphan, no manifest),
        with ``manifest`` passed on to ``manifest_table``."""
        for dataset, table in tables.items():
            self.write(dataset, partition, extraction, table)
        if extractors is not None:
            self.write(MANIFEST, partition, extraction, manifest_table(extraction, extractors, **manifest))

    def write_training_log(self, partition: Mapping[str, object], extraction: str, losses: Mapping[int, float]) -> None:
        self.write(TRAINING_LOG, partition, extraction, training_log_table(extraction, losses))
