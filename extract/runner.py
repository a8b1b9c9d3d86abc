"""The extraction job: the suite's missing work, one model load per checkpoint.

Work = expected (checkpoint, extractor) pairs minus those settled (a success or
diverged manifest row) under the extractor's current config hash. Each checkpoint
is claimed (extract/claims.py: concurrent jobs never share work), loaded once, and
every pending extractor runs on it. Data partitions are written first and the
checkpoint's manifest rows last, so an attempt that dies half-way leaves files no
reader ever sees (staging keeps only extractions with a manifest row). A failure is
recorded against its checkpoint and the job moves on; so is a diverged checkpoint
(NaN or inf weights or outputs), with what could still be computed.
"""

from __future__ import annotations

import errno
import gc
import logging
import multiprocessing
import queue
import socket
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from polypythias.extract.checkpoints import (
    CheckpointError,
    load_model,
    load_tokenizer,
    quiet_transformers,
)
from polypythias.extract.claims import DEFAULT_LEASE_S, Claim, ClaimStore
from polypythias.extract.extractors import Diverged, Extractor, ExtractorError, get_extractor, nonfinite_values
from polypythias.extract.status import SETTLED, settled_extractions, suite_manifest
from polypythias.extract.suite import CheckpointId, Suite
from polypythias.warehouse.lake import Lake, LakeError, new_extraction_id
from polypythias.warehouse.schemas import MANIFEST, SUITE_GRID
from polypythias.warehouse.verify import data_damage

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Errors of the lake itself, not of one partition: every later write would fail alike.
_LAKE_WIDE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

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
    #: Why the weights count as diverged (some are NaN or inf), else None.
    diverged: str | None = None
    #: "safetensors" or "bin" (pickle, read weights-only): the file the weights came from.
    weights_format: str | None = None


@dataclass(slots=True)
class Attempt:
    """One extraction attempt on a checkpoint: computed, not yet written."""

    checkpoint: CheckpointId
    extraction_id: str
    source: str
    weights_format: str | None = None
    #: extractor → dataset → table (extraction_id column included)
    outputs: dict[str, dict[str, pa.Table]] = field(default_factory=dict)
    #: extractor → its manifest row
    records: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failure:
    """A (checkpoint, extractor) pair that did not succeed: "failed" or "diverged"."""

    checkpoint: CheckpointId
    extractor: str
    error: str
    status: str = "failed"


@dataclass(slots=True)
class Summary:
    checkpoints: int = 0
    succeeded: int = 0
    failures: list[Failure] = field(default_factory=list)
    #: (checkpoint, extractor) pairs recorded as diverged: settled, not failures.
    diverged: list[Failure] = field(default_factory=list)
    #: Checkpoints another live job had claimed (it extracts them).
    held_elsewhere: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: Summary) -> None:
        """Add another process's summary to this one."""
        self.checkpoints += other.checkpoints
        self.succeeded += other.succeeded
        self.failures.extend(other.failures)
        self.diverged.extend(other.diverged)
        self.held_elsewhere += other.held_elsewhere


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
    return {name: get_extractor(name)(suite.extractor_options(name), suite) for name in names}


def plan(
    suite: Suite,
    lake: Lake,
    extractors: dict[str, Extractor],
    shard: tuple[int, int] = (0, 1),
    process: tuple[int, int] = (0, 1),
) -> list[Task]:
    """The pending work of this shard (and of this process within it), one task per
    checkpoint, in a stable order.

    A checkpoint belongs to a shard by its position in the suite's whole grid, not
    among what is still pending: jobs that plan at different times (a SLURM array
    whose tasks start minutes apart) still split the grid the same way.
    """
    # A settled extraction whose data files are damaged is pending again.
    manifest, damaged = suite_manifest(lake, suite.name)
    settled = settled_extractions(manifest, suite.name, damaged)
    pending: dict[CheckpointId, list[str]] = defaultdict(list)
    grid: set[CheckpointId] = set()
    for name, extractor in extractors.items():
        config_hash = extractor.config_hash()
        for checkpoint in suite.checkpoints_for(name):
            grid.add(checkpoint)
            key = (checkpoint.model_size, checkpoint.seed, checkpoint.step, name, config_hash)
            if key not in settled:
                pending[checkpoint].append(name)
    (index, count), (rank, ranks) = shard, process
    mine = {
        checkpoint
        for position, checkpoint in enumerate(sorted(grid))
        if position % count == index and (position // count) % ranks == rank
    }
    return [Task(c, tuple(pending[c])) for c in sorted(pending) if c in mine]


def write_suite_grid(suite: Suite, lake: Lake) -> None:
    """Record the suite's expected checkpoints, when they changed since last time: the
    whole suite's, when a job extracts a selection of it (``Suite.narrowed``)."""
    suite = suite.whole
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
    ) -> None:
        self.suite = suite
        self.lake = lake
        self.extractors = extractors
        self.device = device
        self.versions = dict(package_versions())
        self.host = socket.gethostname()
        self.config_hashes = {name: e.config_hash() for name, e in extractors.items()}
        self._tokenizers: dict[str, object] = {}

    def still_pending(self, task: Task) -> Task:
        """The task less what another job settled since planning (read once claimed)."""
        partition = task.checkpoint.partition()
        manifest = self.lake.read_partition(MANIFEST, partition)
        settled = {
            (row["extractor"], row["config_hash"])
            for row in manifest.select(["extraction_id", "extractor", "config_hash", "status", "rows"]).to_pylist()
            if row["status"] in SETTLED and not data_damage(self.lake, partition, row["extraction_id"], row["rows"])
        }
        return Task(
            task.checkpoint,
            tuple(n for n in task.extractors if (n, self.config_hashes[n]) not in settled),
        )

    def load(self, task: Task) -> Loaded:
        """Load the checkpoint's model and tokenizer, or the reason it cannot be."""
        started = datetime.now(UTC)
        try:
            model, weights = load_model(self.suite, task.checkpoint, self.device)
            loaded = Loaded(started, model, self._tokenizer(task.checkpoint), weights_format=weights.format)
        except CheckpointError as error:
            return Loaded(started, error=str(error))
        nonfinite, total = _nonfinite_parameters(model)
        if nonfinite:
            loaded.diverged = f"weights not finite: {nonfinite} of {total} parameter values are NaN or inf"
        return loaded

    def extract(self, task: Task, loaded: Loaded) -> Attempt:
        """Run every pending extractor on the loaded checkpoint."""
        import torch

        checkpoint = task.checkpoint
        attempt = Attempt(checkpoint, new_extraction_id(), self.suite.source_of(checkpoint), loaded.weights_format)
        if loaded.error is not None:
            for name in task.extractors:
                attempt.records[name] = self._record(attempt, name, loaded.started, "failed", loaded.error)
            return attempt
        for name in task.extractors:
            extractor_started = datetime.now(UTC)
            if loaded.diverged and not self.extractors[name].runs_on_diverged:
                attempt.records[name] = self._record(attempt, name, extractor_started, "diverged", loaded.diverged)
                continue
            status, error = ("diverged", loaded.diverged) if loaded.diverged else ("success", None)
            try:
                tables = self.extractors[name].run(loaded.model, loaded.tokenizer, checkpoint, self.device)
                # Finite or nothing: NaN or inf that got past the extractor's own
                # divergence checks fail the checkpoint, and none of its rows land.
                nonfinite = None if loaded.diverged else nonfinite_values(tables)
                if nonfinite:
                    raise ExtractorError(f"{name} computed NaN or inf on {checkpoint}: {nonfinite}")
                attempt.outputs[name] = self._with_extraction_id(name, attempt.extraction_id, tables)
            except Diverged as exc:
                status, error = "diverged", str(exc)
            except Exception as exc:  # one extractor's failure must not stop the rest
                log.debug("extractor %s failed on %s:\n%s", name, checkpoint, traceback.format_exc())
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            attempt.records[name] = self._record(attempt, name, extractor_started, status, error)
        loaded.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return attempt

    def write(self, attempt: Attempt) -> list[Failure]:
        """Write the attempt's data partitions, then its manifest rows; returns the
        pairs that did not succeed (failed or diverged).

        An extractor whose data cannot be written is recorded as failed. If the
        lake is full or read-only, or the manifest itself cannot be written, the
        LakeError propagates: the attempt gets no manifest row, so nothing of it
        is visible, and the checkpoint stays pending.
        """
        partition = attempt.checkpoint.partition()
        for name, tables in attempt.outputs.items():
            record = attempt.records[name]
            try:
                for dataset in self.extractors[name].outputs:
                    self.lake.write(dataset, partition, attempt.extraction_id, tables[dataset.name])
                    record["rows"].append((dataset.name, tables[dataset.name].num_rows))
            except LakeError as error:
                if _lake_wide(error):
                    # A full or read-only lake is no fault of this checkpoint: stop
                    # the job instead of recording it and every later one as failed.
                    raise
                record.update(status="failed", error=str(error), rows=[])
        table = pa.Table.from_pylist(list(attempt.records.values()), schema=MANIFEST.schema)
        self.lake.write(MANIFEST, partition, attempt.extraction_id, table)
        return [
            Failure(attempt.checkpoint, r["extractor"], r["error"], r["status"])
            for r in attempt.records.values()
            if r["status"] != "success"
        ]

    def _tokenizer(self, checkpoint: CheckpointId):
        key = self.suite.checkpoints.tokenizer or self.suite.source_of(checkpoint)
        if key not in self._tokenizers:
            # Only the shared tokenizer is worth keeping; per-checkpoint ones are not reused.
            if not self.suite.checkpoints.tokenizer:
                self._tokenizers.clear()
            self._tokenizers[key] = load_tokenizer(self.suite, checkpoint)
        return self._tokenizers[key]

    def _with_extraction_id(self, name: str, extraction_id: str, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
        expected = {d.name for d in self.extractors[name].outputs}
        if set(tables) != expected:
            raise ExtractorError(f"{name} returned {sorted(tables)}, expected {sorted(expected)}")
        return {
            dataset: table.add_column(
                0, "extraction_id", pa.repeat(pa.scalar(extraction_id, pa.string()), table.num_rows)
            )
            for dataset, table in tables.items()
        }

    def _record(self, attempt: Attempt, name: str, started: datetime, status: str, error: str | None) -> dict:
        finished = datetime.now(UTC)
        return {
            "extraction_id": attempt.extraction_id,
            "extractor": name,
            "status": status,
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
            "weights_format": attempt.weights_format,
        }


def run_extraction(
    suite: Suite,
    lake: Lake,
    extractor_names: list[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    lease_s: float = DEFAULT_LEASE_S,
    workers: int = 1,
) -> Summary:
    """Plan and run this process's share of the suite's missing work.

    On a POSIX lake every checkpoint is claimed before it is loaded, so jobs that
    overlap (cron, SLURM arrays, `accelerate launch` processes) never do the same
    work; a checkpoint another live job holds is left to it. With `workers` > 1
    (CPU only), that many processes on this machine share the work, each with its
    share of the CPU threads.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState reads ACCELERATE_USE_CPU (set by `accelerate launch --cpu`) only
    # when told: without it, torchrun processes on a machine with no GPU would not
    # form a group and each would plan the whole suite.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if workers < 1:
        raise ExtractorError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and (state.num_processes > 1 or state.device.type != "cpu"):
        raise ExtractorError(
            f"--workers {workers} starts CPU processes; on {state.device.type} "
            f"(or under accelerate launch) let `accelerate launch --num_processes N` start them"
        )
    extractors = build_extractors(suite, extractor_names)
    # Under `accelerate launch`, the processes split the shard's checkpoints.
    tasks = plan(suite, lake, extractors, shard, (state.process_index, state.num_processes))
    needed = sorted({name for task in tasks for name in task.extractors})
    if tasks:
        outputs = {d.name: d for name in needed for d in extractors[name].outputs}
        lake.check_writable([MANIFEST, *outputs.values()])
    in_process = workers == 1 or len(tasks) < 2  # nothing to share
    if in_process:
        for name in needed:
            extractors[name].prepare()
    # Only once the input is known good: a refused job writes nothing.
    if state.is_main_process:
        write_suite_grid(suite, lake)
    with _fewer_garbage_collections(), _progress(progress, len(tasks), state) as advance:
        if in_process:
            extractors = {name: extractors[name] for name in needed}
            return _extract(suite, lake, extractors, tasks, state.device, lease_s, advance)
        return _extract_in_workers(suite, lake, needed, tasks, workers, lease_s, advance)


def _extract(
    suite: Suite,
    lake: Lake,
    extractors: dict[str, Extractor],
    tasks: Iterable[Task],
    device: torch.device,
    lease_s: float,
    advance: Callable[[Task, str], None],
) -> Summary:
    """Claim, load, extract and write each task in turn (a write overlaps the next load)."""
    runner = Runner(suite, lake, extractors, device)
    claims = ClaimStore(lake, suite.name, lease_s) if lake.is_local else None
    summary = Summary()
    with claims or nullcontext(), ThreadPoolExecutor(1) as writer:

        def finish(task: Task, claim: Claim | None, written: Future) -> None:
            outcomes = written.result()
            if claim:
                claims.release(claim)
            failures = [o for o in outcomes if o.status == "failed"]
            summary.checkpoints += 1
            summary.succeeded += len(task.extractors) - len(outcomes)
            summary.failures.extend(failures)
            summary.diverged.extend(o for o in outcomes if o.status == "diverged")
            advance(task, "failed" if failures else "diverged" if outcomes else "")

        # The previous checkpoint is written while this one is extracted; at most
        # one waits, so memory stays bounded. (Prefetching the next load in a
        # thread was measured slower on CPU: it contends for the GIL.)
        in_flight: tuple[Task, Claim | None, Future] | None = None
        for task in tasks:
            claim = None
            if claims:
                claim = claims.acquire(task.checkpoint)
                if claim is None:
                    summary.held_elsewhere += 1
                    advance(task, "held by another job")
                    continue
                if claim.took_over:
                    # The job that held it died, perhaps half-way through a write.
                    lake.discard_unfinished(task.checkpoint.partition())
                task = runner.still_pending(task)
                if not task.extractors:
                    claims.release(claim)
                    advance(task, "done by another job")
                    continue
            attempt = runner.extract(task, runner.load(task))
            if in_flight:
                finish(*in_flight)
            in_flight = (task, claim, writer.submit(runner.write, attempt))
        if in_flight:
            finish(*in_flight)
    return summary


def _extract_in_workers(
    suite: Suite,
    lake: Lake,
    extractor_names: list[str],
    tasks: list[Task],
    workers: int,
    lease_s: float,
    advance: Callable[[Task, str], None],
) -> Summary:
    """Share the tasks among `workers` spawned processes, one queue feeding them all
    (so a worker that drew small checkpoints takes more); progress and summaries
    come back on a second queue."""
    import torch

    # Spawn, not fork: forking a process that has already used torch's thread pools
    # can deadlock.
    context = multiprocessing.get_context("spawn")
    workers = min(workers, len(tasks))
    todo, events = context.Queue(), context.Queue()
    for task in tasks:
        todo.put(task)
    for _ in range(workers):
        todo.put(None)
    threads = max(1, torch.get_num_threads() // workers)
    processes = [
        context.Process(
            target=_worker,
            args=(index, suite, lake.uri, extractor_names, lease_s, threads, todo, events),
            name=f"extract-worker-{index}",
            daemon=True,  # never outlive the job
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    summary, errors, reported = Summary(), [], set()
    try:
        while len(reported) < workers:
            try:
                kind, index, payload = events.get(timeout=1.0)
            except queue.Empty:
                for index, process in enumerate(processes):
                    if index not in reported and process.exitcode not in (None, 0):
                        reported.add(index)
                        errors.append(
                            f"extraction worker {index} died (exit code {process.exitcode}); "
                            "the checkpoint it held stays pending: run the job again"
                        )
                if errors:
                    # A worker killed inside todo.get() leaves the queue's lock held, and
                    # the others would wait on it forever: stop them (what they wrote is
                    # complete, their claims expire) and let the rerun finish.
                    break
                continue
            if kind == "advance":
                advance(*payload)
            elif kind == "done":
                reported.add(index)
                summary.merge(payload)
            else:  # "error": what stopped the worker, already formatted
                reported.add(index)
                errors.append(payload)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    if errors:
        raise ExtractorError("; ".join(dict.fromkeys(errors)))
    return summary


def _worker(
    index: int,
    suite: Suite,
    lake_uri: str,
    extractor_names: list[str],
    lease_s: float,
    threads: int,
    todo: multiprocessing.Queue,
    events: multiprocessing.Queue,
) -> None:
    """One process of `_extract_in_workers`: tasks from `todo` until its None."""
    import torch

    torch.set_num_threads(threads)
    quiet_transformers()
    try:
        extractors = build_extractors(suite, extractor_names)
        for extractor in extractors.values():
            extractor.prepare()
        with _fewer_garbage_collections():
            summary = _extract(
                suite,
                Lake(lake_uri),
                extractors,
                iter(todo.get, None),
                torch.device("cpu"),
                lease_s,
                lambda task, outcome: events.put(("advance", index, (task, outcome))),
            )
    except (ExtractorError, LakeError) as error:
        events.put(("error", index, str(error)))
    except BaseException as error:  # reported, never lost with the process
        events.put(("error", index, f"extraction worker {index}: {type(error).__name__}: {error}"))
        raise
    else:
        events.put(("done", index, summary))


def _lake_wide(error: LakeError) -> bool:
    """Whether a write failed for the whole lake (no space, quota, read-only)."""
    cause = error.__cause__
    return isinstance(cause, OSError) and cause.errno in _LAKE_WIDE_ERRNOS


def _nonfinite_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(NaN or inf parameter values, all parameter values) of a model."""
    import torch

    nonfinite = total = 0
    with torch.no_grad():
        for parameter in model.parameters():
            total += parameter.numel()
            # One reduction per tensor; counting only where something is wrong.
            if not torch.isfinite(parameter).all():
                nonfinite += int((~torch.isfinite(parameter)).sum())
    return nonfinite, total


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


_OUTCOME_COLOURS = {"failed": "red", "diverged": "yellow"}


@contextmanager
def _progress(enabled: bool, total: int, state) -> Iterator[Callable[[Task, str], None]]:
    """A rich progress bar over checkpoints; yields the function that advances it
    with a checkpoint and its outcome ("" when everything succeeded)."""
    if not enabled:
        yield lambda task, outcome: None
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

    def advance(task: Task, outcome: str) -> None:
        nonlocal done
        done += 1
        rate = done / max(time.monotonic() - started, 1e-9)
        mark = f" [{_OUTCOME_COLOURS.get(outcome, 'dim')}]{outcome}[/]" if outcome else ""
        bar.update(bar_task, advance=1, rate=f"{rate:.2f} ckpt/s", current=f"{task.checkpoint}{mark}")

    with bar:
        yield advance
