"""Faults with nothing lost: kill -9 the extraction at random moments.

Builds a tiny suite of random GPT-NeoX checkpoints (token_stats + weight_stats)
and extracts it once uninterrupted into a reference lake, timing the job: from
its first claim to its first manifest file (the first load also imports the
model's code) and between checkpoints. Then runs trials on a second lake: each
starts `polypythias extract` and SIGKILLs it at a seeded random moment in the
work still to do (after a random number of its checkpoints' manifest files, a
random part of the next checkpoint's time), then checks what a reader sees:

- every visible file under the lake is a complete Parquet file: pyarrow reads it
  in full, and DuckDB reads each dataset through its `read_parquet` glob with
  hive partitioning; interrupted writes leave only hidden `.<id>.parquet.tmp` files;
- every successful manifest row's data files exist with exactly the row counts
  the manifest records.

The next trial resumes the same lake (its job takes over the claim the killed
one left); a lake that ends complete is compared with the reference and the
next trial starts an empty one. Once, on an interrupted lake that holds data of
an attempt killed before its manifest rows were written (or after the last
trial), dbt builds the token_stats staging model, which must hold exactly the
rows the manifest records. After the trials a rerun must complete (exit 0,
every checkpoint done) and the lake must equal the reference: per dataset, the
rows of the latest successful extraction of each checkpoint, without extraction
ids, timings and host, compared as sorted content.

    python bench/faults.py [--trials 30] [--seed 0] [--seeds 2] [--steps 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

#: The datasets the suite's extractors write, besides the manifest.
DATA = ("token_stats", "weight_stats")
EXTRACTORS = ",".join(DATA)
#: Manifest columns that differ between two runs of the same work.
RUN_SPECIFIC = ("extraction_id", "started_at", "finished_at", "duration_s", "host", "device")
_TEMPORARY = re.compile(r"^\.\d{8}T\d{12}Z-[0-9a-f]{8}\.parquet\.tmp$")
#: The claims folder belongs to the scheduler, not to readers of the lake.
_CLAIMS = "_claims"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
}


# -- the suite ----------------------------------------------------------------


def make_suite(root: Path, seeds: int = 2, steps: int = 3, documents: int = 24) -> Path:
    """Random tiny GPT-NeoX checkpoints laid out as a local suite; returns the suite file."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from transformers.utils import logging as hf_logging

    from polypythias.extract.micro.tokenizer import build_tokenizer

    hf_logging.disable_progress_bar()

    words = [f"w{i}" for i in range(40)]
    tokenizer = build_tokenizer(words)
    for seed in range(seeds):
        for step in range(steps):
            torch.manual_seed(seed * 100 + step)
            config = GPTNeoXConfig(
                vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=32, max_position_embeddings=64,
                tie_word_embeddings=False,
            )  # fmt: skip
            folder = root / f"ck/tiny/seed{seed}/step{step}"
            GPTNeoXForCausalLM(config).eval().save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(2, 40))) for _ in range(documents)]
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    suite = root / "suite.yaml"
    suite.write_text(
        f"""
name: tiny
sizes: [tiny]
seeds: {list(range(seeds))}
steps: {{all: {list(range(steps))}}}
checkpoints: {{local: "ck/{{size}}/seed{{seed}}/step{{step}}"}}
extractors:
  token_stats: {{documents: docs.jsonl, top_k: 40, batch_size: 8}}
  weight_stats: {{}}
"""
    )
    return suite


def n_checkpoints(suite: Path) -> int:
    from polypythias.extract.suite import load_suite

    loaded = load_suite(suite)
    return len({c for name in loaded.extractors for c in loaded.checkpoints_for(name)})


# -- running the job ----------------------------------------------------------


def extract_command(suite: Path, lake: Path) -> list[str]:
    """`polypythias extract` through the console script next to this Python."""
    script = Path(sys.executable).parent / "polypythias"
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "polypythias"]
    return [
        *launcher, "extract", "--suite", str(suite), "--lake", str(lake),
        "--extractors", EXTRACTORS, "--no-progress",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return os.environ | OFFLINE


@dataclass(slots=True)
class Run:
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    #: Seconds from the start to the job's first claim (it begins its first
    #: checkpoint), then to each new manifest file (it ends one).
    claimed: float | None = None
    manifests: list[float] = field(default_factory=list)


def run_extract(suite: Path, lake: Path) -> Run:
    """Run the job to its end, noting when it began and ended its checkpoints."""
    started = time.monotonic()
    process = subprocess.Popen(
        extract_command(suite, lake), env=environment(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watch = _Watch(lake)
    claimed, manifests = None, []
    while process.poll() is None:
        if claimed is None and watch.claimed():
            claimed = time.monotonic() - started
        manifests += [time.monotonic() - started] * watch.new_manifests()
        time.sleep(0.01)
    seconds = time.monotonic() - started
    stdout, stderr = process.communicate()
    return Run(process.returncode, seconds, stdout, stderr, claimed, manifests)


class _Watch:
    """What a running job has done to the lake since the watch began."""

    def __init__(self, lake: Path) -> None:
        self.claims, self.manifest = lake / _CLAIMS, lake / "manifest"
        self.seen = self._manifests()
        self.claims_before = self._claims()

    def _manifests(self) -> set[Path]:
        return set(self.manifest.rglob("*.parquet")) if self.manifest.exists() else set()

    def _claims(self) -> set[Path]:
        return set(self.claims.rglob("*.json")) if self.claims.exists() else set()

    def claimed(self) -> bool:
        """Whether the job took a claim (or wrote a manifest: on a lake without claims)."""
        return bool(self._claims() - self.claims_before) or self._manifests() != self.seen

    def new_manifests(self) -> int:
        now = self._manifests()
        new, self.seen = len(now - self.seen), now
        return new


def kill_during_work(suite: Path, lake: Path, after: int, wait: float) -> bool:
    """Start the job; once it has claimed its first checkpoint (`after` = 0) or
    written `after` checkpoints' manifest files, wait `wait` seconds and SIGKILL it.
    Counting its own progress, not seconds from its start, places the kill on the
    work however long the imports take on a busy machine. Returns whether the job
    finished first, which it must do successfully."""
    process = subprocess.Popen(
        extract_command(suite, lake), env=environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watch = _Watch(lake)
    written = 0
    while process.poll() is None and not (watch.claimed() if after == 0 else written >= after):
        written += watch.new_manifests()
        time.sleep(0.005)
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.communicate()  # reaped: its pid is gone, as after a real kill -9
        return False
    stderr = process.communicate()[1]
    if process.returncode:
        raise RuntimeError(f"the job failed before its kill (exit {process.returncode}):\n{stderr}")
    return True


# -- what a reader sees -------------------------------------------------------


@dataclass(slots=True)
class LakeState:
    """What a lake holds, and anything a reader must never see (`problems`)."""

    problems: list[str] = field(default_factory=list)
    #: Complete Parquet files per dataset and their rows.
    files: dict[str, dict[Path, int]] = field(default_factory=dict)
    #: Hidden temporary files an interrupted write left behind.
    temporary: list[Path] = field(default_factory=list)
    #: Data files of attempts that have no manifest row (killed before it was written).
    unrecorded: list[Path] = field(default_factory=list)
    #: (model_size, seed, step, extractor) pairs with a successful manifest row.
    succeeded: set[tuple] = field(default_factory=set)


def inspect_lake(lake: Path) -> LakeState:
    """Read every file of the lake the ways readers do, and check the manifest's
    successful rows against the data files they point to."""
    state = LakeState()
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        relative = path.relative_to(lake)
        if relative.parts[0] == _CLAIMS:
            continue
        if path.name.startswith("."):
            if _TEMPORARY.match(path.name):
                state.temporary.append(path)
            else:
                state.problems.append(f"unexpected hidden file {relative}")
            continue
        if path.suffix != ".parquet":
            state.problems.append(f"visible file that is not Parquet: {relative}")
            continue
        try:
            table = pq.read_table(path)
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as error:  # noqa: BLE001 - any failure to read is the finding
            state.problems.append(f"pyarrow cannot read {relative}: {error}")
            continue
        if table.num_rows != rows:
            state.problems.append(f"{relative}: read {table.num_rows} rows, footer says {rows}")
        state.files.setdefault(relative.parts[0], {})[path] = table.num_rows
    with duckdb.connect() as con:
        for name, files in state.files.items():
            glob = f"{lake}/{name}/**/*.parquet"
            try:
                read = con.sql(f"select * from read_parquet('{glob}', hive_partitioning = true)").to_arrow_table()
            except duckdb.Error as error:
                state.problems.append(f"DuckDB cannot read {name}: {error}")
                continue
            if read.num_rows != sum(files.values()):
                state.problems.append(f"DuckDB reads {read.num_rows} {name} rows, the files hold {sum(files.values())}")
    _check_manifest(lake, state)
    return state


def _check_manifest(lake: Path, state: LakeState) -> None:
    recorded: set[Path] = set()
    for path in state.files.get("manifest", {}):
        partition = path.parent.relative_to(lake / "manifest")
        key = dict(part.split("=", 1) for part in partition.parts)
        extraction_id = path.stem
        for row in pq.read_table(path).to_pylist():
            if row["status"] != "success":
                continue
            state.succeeded.add((key["model_size"], int(key["seed"]), int(key["step"]), row["extractor"]))
            if not row["rows"]:
                state.problems.append(f"successful {row['extractor']} row in {path} records no data")
            for dataset, rows in row["rows"]:
                data = lake / dataset / partition / f"{extraction_id}.parquet"
                recorded.add(data)
                held = state.files.get(dataset, {}).get(data)
                if held is None:
                    state.problems.append(
                        f"{path.relative_to(lake)} records {data.relative_to(lake)}, which is missing"
                    )
                elif held != rows:
                    state.problems.append(f"{data.relative_to(lake)} holds {held} rows, the manifest records {rows}")
    state.unrecorded = sorted(p for name in DATA for p in state.files.get(name, {}) if p not in recorded)


def content(lake: Path) -> dict[str, list[tuple]]:
    """Per dataset, the sorted rows of the latest successful extraction of each
    (checkpoint, extractor), without what differs between runs (ids, timings, host)."""
    manifest = f"read_parquet('{lake}/manifest/**/*.parquet', hive_partitioning = true)"
    latest = f"""
        select * exclude (rank) from (
            select *,
                row_number() over (
                    partition by suite, model_size, seed, step, extractor order by extraction_id desc
                ) as rank
            from {manifest} where status = 'success'
        ) where rank = 1
    """
    result = {}
    with duckdb.connect() as con:
        con.sql(f"create temp table latest as {latest}")
        rows = con.sql(f"select * exclude ({', '.join(RUN_SPECIFIC)}) from latest").fetchall()
        result["manifest"] = sorted(map(repr, rows))
        for name in DATA:
            rows = con.sql(
                f"""
                select data.* exclude (extraction_id)
                from read_parquet('{lake}/{name}/**/*.parquet', hive_partitioning = true) as data
                inner join latest
                    on latest.extractor = '{name}'
                    and data.suite = latest.suite and data.model_size = latest.model_size
                    and data.seed = latest.seed and data.step = latest.step
                    and data.extraction_id = latest.extraction_id
                """
            ).fetchall()
            result[name] = sorted(map(repr, rows))
    return result


def differences(got: dict[str, list], expected: dict[str, list]) -> list[str]:
    """Which datasets differ between two lakes' contents, and how."""
    found = []
    for name in expected:
        a, b = set(got.get(name, [])), set(expected[name])
        if got.get(name) != expected[name]:
            found.append(
                f"{name}: {len(got.get(name, []))} rows vs {len(expected[name])} expected; "
                f"{len(a - b)} unexpected, {len(b - a)} missing"
            )
    return found


def all_done(suite: Path, lake: Path) -> list[str]:
    """What `polypythias status` would not show as done (empty: everything is)."""
    from polypythias.extract.runner import build_extractors
    from polypythias.extract.status import suite_status
    from polypythias.extract.suite import load_suite
    from polypythias.warehouse.lake import Lake

    loaded = load_suite(suite)
    extractors = build_extractors(loaded, list(DATA))
    return [
        f"{row.model_size}/seed{row.seed}: {row.counts}"
        for row in suite_status(loaded, Lake(lake), extractors)
        if any(n for state, n in row.counts.items() if state != "done")
    ]


def staged_token_stats(lake: Path, db: Path) -> tuple[int, int]:
    """(rows dbt's staging model stg_lake__token_stats holds, token_stats rows the
    manifest records for the latest successful extractions)."""
    from polypythias.warehouse.dbt import build

    build(str(lake), db, select="+stg_lake__token_stats")
    with duckdb.connect(str(db), read_only=True) as con:
        staged = con.sql("select count(*) from staging.stg_lake__token_stats").fetchall()[0][0]
    if not any((lake / "manifest").rglob("*.parquet")):
        return staged, 0
    with duckdb.connect() as con:
        recorded = con.sql(
            f"""
            select coalesce(sum(rows['token_stats']), 0) from (
                select rows, row_number() over (
                    partition by suite, model_size, seed, step order by extraction_id desc
                ) as rank
                from read_parquet('{lake}/manifest/**/*.parquet', hive_partitioning = true)
                where extractor = 'token_stats' and status = 'success'
            ) where rank = 1
            """
        ).fetchall()[0][0]
    return staged, recorded


# -- the trials ---------------------------------------------------------------


@dataclass(slots=True)
class Trial:
    #: Killed `wait` seconds after the job wrote `after` checkpoints' manifests
    #: (0: after it claimed its first checkpoint).
    after: int
    wait: float
    #: The job finished before its kill (the round's lake was complete).
    finished: bool
    #: (checkpoint, extractor) pairs with a successful manifest row after the trial.
    done: int
    #: Hidden temporary files and data files without manifest rows this kill left.
    temporary: int
    unrecorded: int
    problems: list[str]


@dataclass(slots=True)
class Report:
    checkpoints: int
    #: The uninterrupted job: its whole time, from its first claim to its first
    #: manifest file (it imports the model's code on the way), and the median
    #: time between two checkpoints' manifest files.
    uninterrupted_s: float
    first_s: float
    checkpoint_s: float
    trials: list[Trial] = field(default_factory=list)
    #: Problems of rounds that ended complete, and of the final lake.
    problems: list[str] = field(default_factory=list)
    staged: tuple[int, int] | None = None
    rerun_exit: int | None = None
    not_done: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and not any(t.problems for t in self.trials)
            and self.rerun_exit == 0
            and not self.not_done
            and self.staged is not None
            and self.staged[0] == self.staged[1]
        )


@dataclass(slots=True)
class Reference:
    """The suite and its uninterrupted extraction."""

    suite: Path
    lake: Path
    run: Run
    content: dict[str, list]


def prepare(work: Path, seeds: int = 2, steps: int = 3) -> Reference:
    """Build the suite under `work` and extract it once, uninterrupted."""
    work.mkdir(parents=True, exist_ok=True)
    suite = make_suite(work, seeds, steps)
    run = run_extract(suite, work / "reference")
    if run.returncode or run.claimed is None or len(run.manifests) < 2:
        raise RuntimeError(f"the uninterrupted run failed (exit {run.returncode}):\n{run.stderr}")
    expected = content(work / "reference")
    if len(expected["manifest"]) != n_checkpoints(suite) * len(DATA):
        raise RuntimeError(f"the uninterrupted run left work undone:\n{run.stdout}")
    return Reference(suite, work / "reference", run, expected)


def run_trials(work: Path, reference: Reference, trials: int, seed: int) -> Report:
    """The kill trials on lakes under `work`, the dbt staging check and the final rerun."""
    started = time.monotonic()
    suite, expected, run = reference.suite, reference.content, reference.run
    gaps = [b - a for a, b in zip(run.manifests, run.manifests[1:], strict=False)]
    report = Report(n_checkpoints(suite), run.seconds, run.manifests[0] - run.claimed, statistics.median(gaps))
    rng = random.Random(seed)
    rounds, done = 0, 0
    lake = work / "round0"
    left: set[Path] = set()
    for _ in range(trials):
        # Any phase of any checkpoint still to do: after `after` of them, a random
        # part of the next one's time (its load, extraction or writes).
        after = rng.randrange(report.checkpoints - done // len(DATA))
        wait = rng.random() * (report.first_s if after == 0 else report.checkpoint_s)
        finished = kill_during_work(suite, lake, after, wait)
        state = inspect_lake(lake)
        done = len(state.succeeded)
        temporary, unrecorded = set(state.temporary) - left, set(state.unrecorded) - left
        left |= temporary | unrecorded
        report.trials.append(Trial(after, wait, finished, done, len(temporary), len(unrecorded), state.problems))
        if report.staged is None and (unrecorded or len(report.trials) == trials):
            report.staged = staged_token_stats(lake, work / "warehouse.duckdb")
        if finished or done == len(expected["manifest"]):
            report.problems += [f"round {rounds}: {d}" for d in differences(content(lake), expected)]
            if len(report.trials) < trials:
                rounds, done = rounds + 1, 0
                lake = work / f"round{rounds}"
    rerun = run_extract(suite, lake)
    report.rerun_exit = rerun.returncode
    if rerun.returncode:
        report.problems.append(f"the rerun exited {rerun.returncode}: {rerun.stderr.strip()}")
    report.problems += [f"after the rerun: {p}" for p in inspect_lake(lake).problems]
    report.not_done = all_done(suite, lake)
    report.problems += [f"final lake: {d}" for d in differences(content(lake), expected)]
    report.seconds = time.monotonic() - started
    return report


def summary(report: Report) -> str:
    kills = [t for t in report.trials if not t.finished]
    lines = [
        f"{len(report.trials)} trials on {report.checkpoints} checkpoints, {report.seconds:.0f} s "
        f"in all (uninterrupted job {report.uninterrupted_s:.1f} s: {report.first_s:.1f} s from "
        f"its first claim to its first manifest file, then {report.checkpoint_s:.2f} s per checkpoint)",
        "  kills (checkpoints written + seconds): " + ", ".join(f"{t.after}+{t.wait:.2f}" for t in report.trials),
        f"  killed: {len(kills)}; finished before the kill: {len(report.trials) - len(kills)}",
        f"  pairs done after each trial (of {len(DATA) * report.checkpoints}): {[t.done for t in report.trials]}",
        f"  kills leaving hidden temporary files: {sum(1 for t in kills if t.temporary)}; "
        f"leaving data without manifest rows: {sum(1 for t in kills if t.unrecorded)}",
        f"  partial or unreadable files seen by readers: {sum(len(t.problems) for t in report.trials)}",
    ]
    if report.staged:
        lines.append(f"  dbt staging token_stats rows {report.staged[0]}, manifest records {report.staged[1]}")
    lines.append(f"  rerun exit {report.rerun_exit}; not done: {report.not_done or 'none'}")
    for trial in report.trials:
        lines += [f"  trial problem: {p}" for p in trial.problems]
    lines += [f"  problem: {p}" for p in report.problems]
    lines.append("OK: nothing lost" if report.ok else "FAILED")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds in the suite")
    parser.add_argument("--steps", type=int, default=3, help="checkpoints per seed")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        started = time.monotonic()
        reference = prepare(work, args.seeds, args.steps)
        report = run_trials(work, reference, args.trials, args.seed)
        report.seconds = time.monotonic() - started
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
