"""lm-eval on many checkpoints: `polypythias extract` against one harness CLI call each.

On micro checkpoints x the micro lm-eval tasks, side by side in one run:

- extract: ``polypythias extract --extractors evals`` into a fresh lake (one
  process per run of the suite: interpreter start, task loading once, every
  checkpoint's model load and evaluation, Parquet writes, manifest), then the
  run's ``eval_results`` and ``eval_samples`` read back from the lake;
- harness: what people do today, one ``lm_eval`` CLI process per checkpoint
  (``--model hf --log_samples``, same tasks, batch size and device), then its
  results JSON and samples JSONL read back with ``json``.

Both arms end with every number in Python memory. They are timed run by run,
back to back, in alternating order, so drift in the machine's speed hits both
alike, after one untimed warm-up checkpoint each (file caches, the datasets
cache of the task JSONL). Prints the wall-time ratio harness / extract (goal
>= 3x), the bytes stored per item (every file in the lake against every file
the harness wrote; goal >= 10x smaller) and checks that both give the same
per-item prediction: the argmax choice of multiple-choice items, the greedy
``acc`` of log-likelihood items, and ``acc`` of every item. The harness side is
read from its JSONL here, independently of polypythias' converter. Exits 1 on
any mismatch.

lm-eval resolves a task's relative ``data_files`` against the working
directory, so the harness gets copies of the task YAMLs with absolute paths
(the extractor does the same internally).

    python bench/evals_vs_harness_cli.py [--suite-dir micro] [--runs 2] [--checkpoints 4] [--keep]

Without ``--suite-dir`` a small suite (size 200k, seeds 0-1, 256 steps) is
trained into the scratch folder first (~20 s); the default subset is 2 runs x 4
checkpoints (about 3 minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from polypythias.extract.suite import CheckpointId, Suite, load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import EVAL_RESULTS, EVAL_SAMPLES

BIN = Path(sys.executable).parent  # the venv's console scripts
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
#: A run's item key: (model_size, seed, step, task, filter, doc_id).
Key = tuple[str, int, int, str, str, int]


# -- the suite and the checkpoints measured ------------------------------------


def train_small_suite(out: Path) -> Path:
    from polypythias.extract.micro.train import TrainConfig, train_suite

    train_suite(TrainConfig(sizes=["200k"], seeds=[0, 1]), out, progress=False)
    return out


def spread(steps: list[int], n: int) -> list[int]:
    """``n`` of ``steps`` evenly spaced by position (first and last included)."""
    if n <= 0 or n >= len(steps):
        return steps
    if n == 1:
        return [steps[-1]]
    return sorted({steps[round(i * (len(steps) - 1) / (n - 1))] for i in range(n)})


def run_suite_file(document: dict, suite: Suite, size: str, seed: int, steps: list[int], path: Path) -> Path:
    """A suite file for one run's chosen steps, only the evals extractor, absolute paths."""
    checkpoints = dict(document["checkpoints"])
    checkpoints["local"] = str(suite.resolve_path(checkpoints["local"]))
    if checkpoints.get("tokenizer"):
        checkpoints["tokenizer"] = str(suite.resolve_path(checkpoints["tokenizer"]))
    evals = dict(document["extractors"]["evals"], steps="all")
    if evals.get("include_path"):
        evals["include_path"] = str(suite.resolve_path(evals["include_path"]))
    run = {
        "name": suite.name,
        "sizes": [size],
        "seeds": [seed],
        "steps": {"all": steps},
        "checkpoints": checkpoints,
        "extractors": {"evals": evals},
    }
    path.write_text(yaml.safe_dump(run, sort_keys=False))
    return path


def absolute_tasks(source: Path, target: Path) -> Path:
    """Copies of the task YAMLs in ``source`` with data_files made absolute."""
    target.mkdir(parents=True)
    for file in sorted(source.glob("*.yaml")):
        config = yaml.safe_load(file.read_text())
        files = config.get("dataset_kwargs", {}).get("data_files")
        if isinstance(files, dict):
            config["dataset_kwargs"]["data_files"] = {
                split: str((file.parent / name).resolve()) for split, name in files.items()
            }
        (target / file.name).write_text(yaml.safe_dump(config, sort_keys=False))
    return target


# -- the two arms ----------------------------------------------------------------


def call(command: list[str], log: Path, cwd: Path) -> None:
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=ENV)
    if done.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{command[0]} exited {done.returncode} (log {log}):\n{tail}")


def extract_arm(run_file: Path, lake: Path, scratch: Path, size: str, seed: int) -> list[dict]:
    """`polypythias extract` on one run, then its eval tables read back from the lake."""
    import pyarrow.dataset as ds

    call(
        [
            str(BIN / "polypythias"),
            "extract",
            "--suite",
            str(run_file),
            "--extractors",
            "evals",
            "--lake",
            str(lake),
            "--no-progress",
        ],
        scratch / f"extract-{size}-{seed}.log",
        scratch,
    )
    mine = (ds.field("model_size") == size) & (ds.field("seed") == seed)
    the_lake = Lake(lake)
    the_lake.read(EVAL_RESULTS, mine).to_pylist()  # read back like the harness's JSON
    return the_lake.read(EVAL_SAMPLES, mine).to_pylist()


def harness_arm(
    checkpoints: list[CheckpointId], suite: Suite, options, tasks_dir: Path, out: Path, scratch: Path
) -> dict[CheckpointId, tuple[dict, dict[str, list[dict]]]]:
    """One `lm_eval` CLI process per checkpoint, then its JSON and JSONL read back."""
    tokenizer = suite.checkpoints.tokenizer
    loaded = {}
    for checkpoint in checkpoints:
        folder = suite.source_of(checkpoint)
        model_args = f"pretrained={folder},dtype=float32"
        if tokenizer:
            model_args += f",tokenizer={suite.resolve_path(tokenizer)}"
        where = out / f"{checkpoint.model_size}-seed{checkpoint.seed}-step{checkpoint.step}"
        command = [
            str(BIN / "lm_eval"),
            "--model",
            "hf",
            "--model_args",
            model_args,
            "--tasks",
            ",".join(options.tasks),
            "--include_path",
            str(tasks_dir),
            "--device",
            "cpu",
            "--batch_size",
            str(options.batch_size),
            "--log_samples",
            "--output_path",
            str(where),
        ]
        if options.num_fewshot:
            command += ["--num_fewshot", str(options.num_fewshot)]
        if options.limit:
            command += ["--limit", str(options.limit)]
        call(command, scratch / f"harness-{where.name}.log", scratch)
        (results_file,) = where.rglob("results_*.json")
        results = json.loads(results_file.read_text())
        samples = {
            task: [json.loads(line) for line in next(where.rglob(f"samples_{task}_*.jsonl")).open()]
            for task in options.tasks
        }
        loaded[checkpoint] = (results, samples)
    return loaded


# -- comparison ------------------------------------------------------------------


def lake_items(rows: list[dict]) -> dict[Key, tuple[float, float]]:
    """(prediction, acc) per item: the predicted choice, or acc where there is none."""
    items = {}
    for row in rows:
        metrics = dict(row["metrics"])
        prediction = row["predicted"] if row["predicted"] is not None else metrics["acc"]
        key = (row["model_size"], row["seed"], row["step"], row["task"], row["filter"], row["doc_id"])
        items[key] = (float(prediction), metrics["acc"])
    return items


def harness_items(loaded: dict) -> dict[Key, tuple[float, float]]:
    """The same from the harness's JSONL: argmax of the choices' log-likelihoods for
    multiple-choice tasks (first maximum, as lm-eval), acc for log-likelihood tasks."""
    items = {}
    for checkpoint, (results, samples) in loaded.items():
        for task, lines in samples.items():
            output_type = results["configs"][task]["output_type"]
            for sample in lines:
                if output_type == "multiple_choice":
                    scores = [float(response[0]) for response in sample["filtered_resps"]]
                    prediction = float(scores.index(max(scores)))
                elif output_type == "loglikelihood":
                    prediction = float(sample["acc"])
                else:
                    raise SystemExit(f"{task}: output_type {output_type} is not compared here")
                key = (
                    checkpoint.model_size,
                    checkpoint.seed,
                    checkpoint.step,
                    task,
                    sample["filter"],
                    sample["doc_id"],
                )
                items[key] = (prediction, float(sample["acc"]))
    return items


def folder_bytes(root: Path) -> tuple[int, int]:
    files = [f for f in root.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


# -- main ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--suite-dir",
        type=Path,
        help="a trained micro suite (its suite.yaml needs an evals extractor); "
        "default: train a small one into the scratch folder",
    )
    parser.add_argument("--runs", type=int, default=2, help="runs (size x seed) measured, 0: all (default 2)")
    parser.add_argument(
        "--checkpoints",
        type=int,
        default=4,
        help="checkpoints per run, evenly spread over its steps, 0: all (default 4)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (lake, harness output, logs)")
    args = parser.parse_args()
    for tool in ("polypythias", "lm_eval"):
        if not (BIN / tool).exists():
            raise SystemExit(f"{BIN / tool} not found: run this with the project's venv python")

    scratch = Path(tempfile.mkdtemp(prefix="polypythias-bench-evals-"))
    try:
        if args.suite_dir is None:
            print("training a small micro suite (200k, seeds 0-1, 256 steps) ...", flush=True)
            suite_dir = train_small_suite(scratch / "suite")
        else:
            suite_dir = args.suite_dir
        measure(suite_dir.resolve(), args, scratch)
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def measure(suite_dir: Path, args, scratch: Path) -> None:
    suite_file = suite_dir / "suite.yaml"
    if not suite_file.is_file():
        raise SystemExit(f"{suite_file} not found: train one with `polypythias micro train --out {suite_dir}`")
    suite = load_suite(str(suite_file))
    document = yaml.safe_load(suite_file.read_text())
    if "evals" not in suite.extractors:
        raise SystemExit(f"{suite_file}: the benchmark needs an evals extractor")
    if suite.checkpoints.local is None:
        raise SystemExit(f"{suite_file}: the benchmark needs local checkpoints (checkpoints.local)")
    options = suite.extractor_options("evals")
    if not options.include_path:
        raise SystemExit(f"{suite_file}: extractors.evals.include_path is needed (the micro task YAMLs)")
    tasks_dir = absolute_tasks(suite.resolve_path(options.include_path), scratch / "tasks")
    runs = [(size, seed) for size in suite.sizes for seed in suite.seeds]
    runs = runs[: args.runs] if args.runs > 0 else runs
    steps = spread(suite.steps[options.steps], args.checkpoints)
    files = {
        run: run_suite_file(document, suite, *run, steps, scratch / f"suite-{run[0]}-{run[1]}.yaml") for run in runs
    }

    # Warm-up, untimed: one checkpoint through each arm.
    size, seed = runs[0]
    warm = run_suite_file(document, suite, size, seed, steps[-1:], scratch / "suite-warmup.yaml")
    print("warm-up: one checkpoint through each arm (untimed) ...", flush=True)
    extract_arm(warm, scratch / "lake-warmup", scratch, size, seed)
    harness_arm(
        [CheckpointId(suite.name, size, seed, steps[-1])],
        suite,
        options,
        tasks_dir,
        scratch / "harness-warmup",
        scratch,
    )

    lake, harness_out = scratch / "lake", scratch / "harness"
    extract_times, harness_times = [], []
    lake_rows, harness_loaded = [], {}
    for index, (size, seed) in enumerate(runs):
        checkpoints = [CheckpointId(suite.name, size, seed, step) for step in steps]

        def extract_run() -> None:
            lake_rows.extend(extract_arm(files[(size, seed)], lake, scratch, size, seed))

        def harness_run() -> None:
            harness_loaded.update(harness_arm(checkpoints, suite, options, tasks_dir, harness_out, scratch))

        order: tuple[Callable[[], None], ...] = (
            (extract_run, harness_run) if index % 2 == 0 else (harness_run, extract_run)
        )
        timed = {}
        for arm in order:
            started = time.perf_counter()
            arm()
            timed[arm] = time.perf_counter() - started
        extract_times.append(timed[extract_run])
        harness_times.append(timed[harness_run])
        print(
            f"  {size}/seed{seed}: extract {timed[extract_run]:6.1f} s, "
            f"harness {timed[harness_run]:6.1f} s  ({timed[harness_run] / timed[extract_run]:.1f}x)",
            flush=True,
        )

    ours, theirs = lake_items(lake_rows), harness_items(harness_loaded)
    shared = ours.keys() & theirs.keys()
    only_lake, only_harness = len(ours.keys() - theirs.keys()), len(theirs.keys() - ours.keys())
    prediction_mismatches = sum(ours[k][0] != theirs[k][0] for k in shared)
    acc_mismatches = sum(ours[k][1] != theirs[k][1] for k in shared)
    lake_bytes, lake_files = folder_bytes(lake)
    harness_bytes, harness_files = folder_bytes(harness_out)
    n_items = len(theirs)
    n_checkpoints = len(runs) * len(steps)

    total_extract, total_harness = sum(extract_times), sum(harness_times)
    print()
    print(
        f"suite {suite.name} in {suite_dir}: {len(runs)} of {len(suite.sizes) * len(suite.seeds)} runs "
        f"({', '.join(f'{s}/seed{k}' for s, k in runs)}) x steps {steps} = {n_checkpoints} checkpoints; "
        f"tasks {', '.join(options.tasks)}; batch size {options.batch_size}; device cpu"
    )
    total = len(suite.sizes) * len(suite.seeds) * len(suite.steps[options.steps])
    if n_checkpoints < total:
        print(f"  a subset of the suite's {total} checkpoints (--runs 0 --checkpoints 0 measures all)")
    print(
        f"extract (one `polypythias extract` per run):  {total_extract:7.1f} s  "
        f"({total_extract / n_checkpoints:.2f} s per checkpoint)"
    )
    print(
        f"harness (one `lm_eval` per checkpoint):       {total_harness:7.1f} s  "
        f"({total_harness / n_checkpoints:.2f} s per checkpoint)"
    )
    print(f"wall-time ratio harness / extract:            {total_harness / total_extract:7.1f}x   (goal >= 3x)")
    datasets = ", ".join(f"{d.name} {folder_bytes(d)[0]:,}" for d in sorted(lake.iterdir()))
    print(
        f"stored: lake {lake_bytes:,} B in {lake_files} Parquet files ({datasets}); "
        f"harness {harness_bytes:,} B in {harness_files} JSON/JSONL files; {n_items:,} items"
    )
    print(f"bytes per item: lake {lake_bytes / n_items:7.1f}, harness {harness_bytes / n_items:7.1f}")
    print(f"storage ratio harness / lake:                 {harness_bytes / lake_bytes:7.1f}x   (goal >= 10x)")
    print(
        f"per-item predictions compared: {len(shared):,} items (checkpoint x task x doc_id); "
        f"prediction mismatches {prediction_mismatches}, acc mismatches {acc_mismatches}, "
        f"only in lake {only_lake}, only in harness output {only_harness}"
    )
    if prediction_mismatches or acc_mismatches or only_lake or only_harness or not shared:
        raise SystemExit("FAIL: the lake and the harness disagree on per-item predictions")


if __name__ == "__main__":
    main()
