"""The extraction job: the suite's missing work, one model load per checkpoint.

Work = expected (checkpoint, extractor) pairs minus those with a successful
manifest row under the extractor's current config hash. Each checkpoint is
loaded once and every pending extractor runs on it. Data partitions are written
first and the checkpoint's manifest rows last, so an attempt that dies half-way
leaves files no reader ever sees (staging keeps only extractions with a success
row). A failure is recorded against its checkpoint and the job moves on.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from polypythias.extract.checkpoints import CheckpointError, load_model, load_tokenizer
from polypythias.extract.extractors import Extractor, ExtractorError, get_extractor
from polypythias.extract.status import successful_extractions
from polypythias.extract.suite import CheckpointId, Suite
from polypythias.warehouse.lake import Lake, LakeError, new_extraction_id
from polypythias.warehouse.schemas import MANIFEST, SUITE_GRID

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_VERSIONED_PACKAGES = ("polypythias", "torch", "transformers", "accelerate", "lm_eval", "pyarrow")


@dataclass(frozen=True, slots=True)
class Task:
    """One checkpoint and the extractors still to run on it."""

    checkpoint: CheckpointId
    extractors: tuple[str, ...]


@dataclass(slots=True)
class Loaded:
    """A checkpoint loaded for extraction, or why it could not be."""

    started: datetime
    model: PreTrainedModel | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    error: str | None = None


@dataclass(slots=True)
class Attempt:
    """One extraction attempt on a checkpoint: computed, not yet written."""

    checkpoint: CheckpointId
    extraction_id: str
    source: str
    #: extractor → dataset → table (extraction_id column included)
    outputs: dict[str, dict[str, pa.Table]] = field(default_factory=dict)
    #: extractor → its manifest row
    records: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failure:
    checkpoint: CheckpointId
    extractor: str
    error: str


@dataclass(slots=True)
class Summary:
    checkpoints: int = 0
    succeeded: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 ≤ i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def build_extractors(suite: Suite, names: list[str] | None) -> dict[str, Extractor]:
    """Instantiate the requested extractors (default: all the suite configures)."""
    names = names or list(suite.extractors)
    for name in names:
        get_extractor(name)
        if name not in suite.extractors:
            raise ExtractorError(
                f"extractor {name!r} is not configured in suite {suite.name!r} "
                f"(configured: {', '.join(suite.extractors)})"
            )
    return {
        name: get_extractor(name)(suite.extractor_options(name), suite) for name in names
    }


def plan(
    suite: Suite,
    lake: Lake,
    extractors: dict[str, Extractor],
    shard: tuple[int, int] = (0, 1),
) -> list[Task]:
    """The pending work of this shard, one task per checkpoint, in a stable order."""
    done = successful_extractions(lake.read(MANIFEST), suite.name)
    pending: dict[CheckpointId, list[str]] = defaultdict(list)
    for name, extractor in extractors.items():
        config_hash = extractor.config_hash()
        for checkpoint in suite.checkpoints_for(name):
            key = (checkpoint.model_size, checkpoint.seed, checkpoint.step, name, config_hash)
            if key not in done:
                pending[checkpoint].append(name)
    tasks = [Task(c, tuple(pending[c])) for c in sorted(pending)]
    index, count = shard
    return tasks[index::count]


def write_suite_grid(suite: Suite, lake: Lake) -> None:
    """Record the suite's expected checkpoints, when they changed since last time."""
    rows = [
        (c.model_size, c.seed, c.step, name, suite.source_of(c))
        for name in suite.extractors
        for c in suite.checkpoints_for(name)
    ]
    columns = ["model_size", "seed", "step", "extractor", "source"]
    current = lake.read(SUITE_GRID)
    current = current.filter(pc.equal(current["suite"], suite.name))
    if current.num_rows:
        latest = pc.max(current["extraction_id"]).as_py()
        latest_rows = current.filter(pc.equal(current["extraction_id"], latest))
        if set(zip(*(latest_rows[c].to_pylist() for c in columns), strict=True)) == set(rows):
            return
    extraction_id = new_extraction_id()
    table = pa.table(
        {
            "extraction_id": [extraction_id] * len(rows),
            **{c: [r[i] for r in rows] for i, c in enumerate(columns)},
        }
    )
    lake.write(SUITE_GRID, {"suite": suite.name}, extraction_id, table)


@cache
def package_versions() -> dict[str, str]:
    """The installed versions of the packages the output depends on (fixed for a process)."""
    versions = {}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


class Runner:
    """Runs planned tasks on one device and records every attempt in the manifest."""

    def __init__(
        self,
        suite: Suite,
        lake: Lake,
        extractors: dict[str, Extractor],
        device: torch.device,
        allow_pickle: bool = False,
    ) -> None:
        self.suite = suite
        self.lake = lake
        self.extractors = extractors
        self.device = device
        self.allow_pickle = allow_pickle
        self.versions = dict(package_versions())
        self.host = socket.gethostname()
        self.config_hashes = {name: e.config_hash() for name, e in extractors.items()}
        self._tokenizers: dict[str, object] = {}

    def load(self, task: Task) -> Loaded:
        """Load the checkpoint's model and tokenizer, or the reason it cannot be."""
        started = datetime.now(UTC)
        try:
            model = load_model(self.suite, task.checkpoint, self.device, self.allow_pickle)
            return Loaded(started, model, self._tokenizer(task.checkpoint))
        except CheckpointError as error:
            return Loaded(started, error=str(error))

    def extract(self, task: Task, loaded: Loaded) -> Attempt:
        """Run every pending extractor on the loaded checkpoint."""
        import torch

        checkpoint = task.checkpoint
        attempt = Attempt(checkpoint, new_extraction_id(), self.suite.source_of(checkpoint))
        if loaded.error is not None:
            for name in task.extractors:
                attempt.records[name] = self._record(attempt, name, loaded.started, loaded.error)
            return attempt
        for name in task.extractors:
            extractor_started = datetime.now(UTC)
            error = None
            try:
                tables = self.extractors[name].run(loaded.model, loaded.tokenizer, checkpoint, self.device)
                attempt.outputs[name] = self._with_extraction_id(name, attempt.extraction_id, tables)
            except Exception as exc:  # one extractor's failure must not stop the rest
                log.debug("extractor %s failed on %s:\n%s", name, checkpoint, traceback.format_exc())
                error = f"{type(exc).__name__}: {exc}"
            attempt.records[name] = self._record(attempt, name, extractor_started, error)
        loaded.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return attempt

    def write(self, attempt: Attempt) -> list[Failure]:
        """Write the attempt's data partitions, then its manifest rows; returns failures.

        An extractor whose data cannot be written is recorded as failed. If the
        manifest itself cannot be written the LakeError propagates: nothing of the
        attempt is visible and the checkpoint stays pending.
        """
        partition = attempt.checkpoint.partition()
        for name, tables in attempt.outputs.items():
            record = attempt.records[name]
            try:
                for dataset in self.extractors[name].outputs:
                    self.lake.write(dataset, partition, attempt.extraction_id, tables[dataset.name])
                    record["rows"].append((dataset.name, tables[dataset.name].num_rows))
            except LakeError as error:
                record.update(status="failed", error=str(error), rows=[])
        table = pa.Table.from_pylist(list(attempt.records.values()), schema=MANIFEST.schema)
        self.lake.write(MANIFEST, partition, attempt.extraction_id, table)
        return [
            Failure(attempt.checkpoint, r["extractor"], r["error"])
            for r in attempt.records.values()
            if r["status"] != "success"
        ]

    def run_task(self, task: Task) -> list[Failure]:
        """Load, extract and write one checkpoint; returns the failures."""
        return self.write(self.extract(task, self.load(task)))

    def _tokenizer(self, checkpoint: CheckpointId):
        key = self.suite.checkpoints.tokenizer or self.suite.source_of(checkpoint)
        if key not in self._tokenizers:
            # Only the shared tokenizer is worth keeping; per-checkpoint ones are not reused.
            if not self.suite.checkpoints.tokenizer:
                self._tokenizers.clear()
            self._tokenizers[key] = load_tokenizer(self.suite, checkpoint)
        return self._tokenizers[key]

    def _with_extraction_id(
        self, name: str, extraction_id: str, tables: dict[str, pa.Table]
    ) -> dict[str, pa.Table]:
        expected = {d.name for d in self.extractors[name].outputs}
        if set(tables) != expected:
            raise ExtractorError(f"{name} returned {sorted(tables)}, expected {sorted(expected)}")
        return {
            dataset: table.add_column(
                0, "extraction_id", pa.repeat(pa.scalar(extraction_id, pa.string()), table.num_rows)
            )
            for dataset, table in tables.items()
        }

    def _record(self, attempt: Attempt, name: str, started: datetime, error: str | None) -> dict:
        finished = datetime.now(UTC)
        return {
            "extraction_id": attempt.extraction_id,
            "extractor": name,
            "status": "failed" if error else "success",
            "started_at": started,
            "finished_at": finished,
            "duration_s": (finished - started).total_seconds(),
            "rows": [],
            "config_hash": self.config_hashes[name],
            "source": attempt.source,
            "device": str(self.device),
            "host": self.host,
            "package_versions": list(self.versions.items()),
            "error": error,
        }


def run_extraction(
    suite: Suite,
    lake: Lake,
    extractor_names: list[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    allow_pickle: bool = False,
    progress: bool = True,
) -> Summary:
    """Plan and run this process's share of the suite's missing work."""
    from accelerate import PartialState

    state = PartialState()
    extractors = build_extractors(suite, extractor_names)
    if state.is_main_process:
        write_suite_grid(suite, lake)
    tasks = plan(suite, lake, extractors, shard)
    # Under `accelerate launch`, each process takes every num_processes-th task.
    tasks = tasks[state.process_index :: state.num_processes]
    for name in sorted({name for task in tasks for name in task.extractors}):
        extractors[name].prepare()
    runner = Runner(suite, lake, extractors, state.device, allow_pickle)
    summary = Summary()
    with (
        _fewer_garbage_collections(),
        _progress(progress, len(tasks), state) as advance,
        ThreadPoolExecutor(1) as writer,
    ):

        def finish(task: Task, written: Future) -> None:
            failures = written.result()
            summary.checkpoints += 1
            summary.succeeded += len(task.extractors) - len(failures)
            summary.failures.extend(failures)
            advance(task, failures)

        # The previous checkpoint is written while this one is extracted; at most
        # one waits, so memory stays bounded. (Prefetching the next load in a
        # thread was measured slower on CPU: it contends for the GIL.)
        in_flight: tuple[Task, Future] | None = None
        for task in tasks:
            attempt = runner.extract(task, runner.load(task))
            if in_flight:
                finish(*in_flight)
            in_flight = (task, writer.submit(runner.write, attempt))
        if in_flight:
            finish(*in_flight)
    return summary


@contextmanager
def _fewer_garbage_collections() -> Iterator[None]:
    """Keep Python's collector off the libraries' heap while the job runs.

    torch and transformers leave millions of long-lived objects that every full
    collection walks again; each checkpoint allocates many short-lived ones. Freezing
    the heap the job starts with and collecting the young generation less often cut
    the collector's share of a micro-suite job from ~6% to ~2.5%.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextmanager
def _progress(enabled: bool, total: int, state) -> Iterator[Callable[[Task, list[Failure]], None]]:
    """A rich progress bar over checkpoints; yields the function that advances it."""
    if not enabled:
        yield lambda task, failures: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
    )
    label = "extract" if state.num_processes == 1 else f"extract [{state.process_index}]"
    bar_task = bar.add_task(label, total=total, rate="", current="")
    started = time.monotonic()
    done = 0

    def advance(task: Task, failures: list[Failure]) -> None:
        nonlocal done
        done += 1
        rate = done / max(time.monotonic() - started, 1e-9)
        mark = " [red]failed[/red]" if failures else ""
        bar.update(bar_task, advance=1, rate=f"{rate:.2f} ckpt/s", current=f"{task.checkpoint}{mark}")

    with bar:
        yield advance
