"""What one checkpoint costs at Pythia's real sizes, and a projection for the suite.

On the hub-shaped fixture (extract/hub_fixture.py: Pythia's 14m and 70m
architectures, the real GPT-NeoX tokenizer; seed 0 a pickle ``.bin``, seed 1
safetensors), read through the ``polypythias`` preset with the test's inputs
(tests/hub_english.py: 200 English sentences, two small lm-eval tasks; the real UD
English EWT, dev as train and test as test, capped), in this process:

- load: ``load_model`` (find the weight file in the hub cache, the weights-only
  check of a ``.bin``, ``from_pretrained``) and the bytes of the weight file;
- each extractor alone on the loaded model (``run``, nothing written);
- together: the job's whole pass over the checkpoint (load, every extractor, the
  Parquet writes and manifest rows), as ``polypythias extract`` does it.

Then a projection for the whole PolyPythias grid (5 sizes × 10 seeds × 154
checkpoints; weight statistics on all, token statistics, evals and probes on the
27-step evaluation grid) from the measured seconds per parameter, with the
assumptions printed.

Contention (``--contention``): the 14m pass as ``polypythias extract`` runs it (a
fresh process; the manifest's extractor durations, so start-up does not count),
alone and beside busy-loop processes, with idle OpenMP threads sleeping (the
default now) and spinning (``OMP_WAIT_POLICY=ACTIVE``, what torch did before),
alternating. A fair share beside k busy processes on n CPUs is a slowdown of about
(n + k) / n.

    python bench/checkpoint_cost.py [--sizes 14m,70m] [--repeats 2] [--contention] [--keep DIR]

The machine may be shared: timings are noisy, so every comparison is measured side
by side in one run; read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLYPYTHIAS_SHARED") or REPO.parent / "shared")
TOKENIZER = SHARED / "fixtures" / "pythia-tokenizer" / "tokenizer.json"
EWT = SHARED / "fixtures" / "ud-english-ewt"
EXTRACTORS = ("weight_stats", "token_stats", "evals", "probes")
STEPS_ALL, STEPS_EVAL_GRID, SEEDS = 154, 27, 10
PROBE_CAPS = (1000, 500)  # train, test words per probing task


def settings(tasks_dir: Path) -> list[str]:
    options = [
        "extractors.evals.tasks=[hub_agreement, hub_cloze]",
        f"extractors.evals.include_path={tasks_dir}",
        "extractors.evals.include_defaults=false",
    ]
    for task in ("upos", "deprel"):
        options += [
            f"extractors.probes.tasks.{task}.train={EWT / 'en_ewt-ud-dev.conllu'}",
            f"extractors.probes.tasks.{task}.test={EWT / 'en_ewt-ud-test.conllu'}",
            f"extractors.probes.tasks.{task}.max_train={PROBE_CAPS[0]}",
            f"extractors.probes.tasks.{task}.max_test={PROBE_CAPS[1]}",
        ]
    return options


def busy_loop() -> None:
    while True:
        pass


def measure_in_process(work: Path, sizes: list[str], repeats: int) -> dict:
    """seconds per checkpoint: {(size, what): [samples]}, and bytes read per size."""
    import torch

    from polypythias.extract.checkpoints import find_weights, load_model, quiet_transformers
    from polypythias.extract.runner import Runner, Task, build_extractors
    from polypythias.extract.suite import load_suite
    from polypythias.warehouse.lake import Lake

    quiet_transformers()
    device = torch.device("cpu")
    suite = load_suite("polypythias", settings(work / "tasks"))
    extractors = build_extractors(suite, list(EXTRACTORS))
    for extractor in extractors.values():
        extractor.prepare()
    times: dict[tuple[str, str], list[float]] = {}
    sizes_read: dict[str, int] = {}
    parameters: dict[str, int] = {}
    for size in sizes:
        checkpoints = [c for c in suite.narrowed([size], [0, 1], [1000]).checkpoints_for("weight_stats")]
        for repeat in range(repeats + 1):  # the first round warms caches and is not counted
            for checkpoint in checkpoints:
                started = time.perf_counter()
                model, weights = load_model(suite, checkpoint, device)
                loaded = time.perf_counter() - started
                sizes_read[f"{size}/{weights.format}"] = find_weights(suite, checkpoint).path.stat().st_size
                parameters[size] = sum(p.numel() for p in model.parameters())
                runner = Runner(suite, Lake(work / f"lake-{size}-{repeat}"), extractors, device)
                tokenizer = runner._tokenizer(checkpoint)
                samples = {"load": loaded}
                for name, extractor in extractors.items():
                    started = time.perf_counter()
                    extractor.run(model, tokenizer, checkpoint, device)
                    samples[name] = time.perf_counter() - started
                del model
                started = time.perf_counter()
                task = Task(checkpoint, tuple(extractors))
                runner.write(runner.extract(task, runner.load(task)))
                samples["together"] = time.perf_counter() - started
                if repeat:
                    for what, seconds in samples.items():
                        times.setdefault((size, what), []).append(seconds)
    return {"times": times, "bytes": sizes_read, "parameters": parameters}


def real_parameters() -> dict[str, int]:
    """Parameters of each real Pythia size, counted from its configuration (no weights)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from polypythias.extract.hub_fixture import PYTHIA_SHAPES, pythia_config

    counts = {}
    for size in PYTHIA_SHAPES:
        with torch.device("meta"):
            counts[size] = sum(p.numel() for p in GPTNeoXForCausalLM(pythia_config(size)).parameters())
    return counts


def project(result: dict, sizes: list[str]) -> None:
    times, parameters = result["times"], result["parameters"]
    real = real_parameters()
    by_size = sorted(sizes, key=lambda s: parameters[s])
    reference = by_size[-1]
    print(
        f"\nProjection for the whole PolyPythias grid ({len(real)} sizes x {SEEDS} seeds; weight_stats and "
        f"the load on all {STEPS_ALL} steps, the others on the {STEPS_EVAL_GRID}-step grid), one process on "
        "this machine's CPUs, no GPU"
    )
    print(
        f"Assumptions: (a) proportional: {reference}'s seconds per checkpoint times the parameter ratio; "
        f"(b) affine: a fixed part plus a per-parameter part, fitted through {' and '.join(by_size[:2])} "
        "(the fixed part is work the size does not change, e.g. softmax over the 50,304-token vocabulary "
        "at every position); the inputs are this bench's (200 sentences, 28 eval items, "
        f"{PROBE_CAPS[0]}/{PROBE_CAPS[1]} probe words per task), not a real run's (a Pile sample, 11 full "
        "lm-eval tasks, 10000/4000 words): scale by your input sizes; a machine shared with other work "
        "is slower."
    )
    fits = {}
    for what in ("load", *EXTRACTORS):
        large = statistics.median(times[(reference, what)])
        if len(by_size) >= 2:
            small = statistics.median(times[(by_size[0], what)])
            slope = max(0.0, (large - small) / (parameters[reference] - parameters[by_size[0]]))
        else:
            slope = large / parameters[reference]
        fits[what] = (large / parameters[reference], slope, max(0.0, large - slope * parameters[reference]))
    print(
        f"{'size':>6} {'params':>12} "
        + " ".join(f"{w:>13}" for w in ("load", *EXTRACTORS))
        + f" {'grid CPU-hours':>20}"
    )
    totals = [0.0, 0.0]
    for size, count in real.items():
        per = {what: (per_param * count, fixed + slope * count) for what, (per_param, slope, fixed) in fits.items()}
        hours = []
        for k in (0, 1):
            every = per["load"][k] + per["weight_stats"][k]
            grid = per["token_stats"][k] + per["evals"][k] + per["probes"][k]
            hours.append(SEEDS * (STEPS_ALL * every + STEPS_EVAL_GRID * grid) / 3600)
            totals[k] += hours[k]
        print(
            f"{size:>6} {count:>12,} "
            + " ".join(f"{per[w][0]:>6.2f}/{per[w][1]:<6.2f}" for w in per)
            + f" {hours[0]:>9.1f} / {hours[1]:<9.1f}"
        )
    print("(seconds per checkpoint: proportional / affine)")
    print(f"whole grid: {totals[0]:.0f} CPU-hours proportional, {totals[1]:.0f} affine, on this machine")


def contention(work: Path, repeats: int) -> None:
    """The 14m pass in a fresh `polypythias extract`, alone and beside busy processes."""
    import duckdb

    cpus = len(os.sched_getaffinity(0))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    arguments = [
        str(Path(sys.executable).with_name("polypythias")),
        "extract",
        "--suite",
        "polypythias",
        "--sizes",
        "14m",
        "--seeds",
        "0,1",
        "--steps",
        "1000",
        "--no-progress",
    ]
    for option in settings(work / "tasks"):
        arguments += ["--set", option]
    results: dict[tuple[str, int], list[float]] = {}
    run = 0
    for _ in range(repeats):
        for busy in (0, 1, 2):
            for policy in ("PASSIVE", "ACTIVE"):
                run += 1
                lake = work / f"contention-{run}"
                others = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(busy)]
                for process in others:
                    process.start()
                try:
                    subprocess.run(
                        [*arguments, "--lake", str(lake)],
                        cwd=work,
                        check=True,
                        capture_output=True,
                        env={**env, "OMP_WAIT_POLICY": policy},
                        timeout=1800,
                    )
                finally:
                    for process in others:
                        process.terminate()
                        process.join()
                seconds = (
                    duckdb.sql(f"select sum(duration_s) from read_parquet('{lake}/manifest/**/*.parquet')").fetchall()[
                        0
                    ][0]
                    / 2
                )  # two checkpoints
                results.setdefault((policy, busy), []).append(seconds)
    print(f"\nContention: the 14m pass (all four extractors, per checkpoint), {cpus} CPUs, median of alternating runs")
    print(f"{'idle OpenMP threads':>20} {'busy procs':>10} {'s/ckpt':>8} {'slowdown':>9} {'fair share':>11}")
    for policy, label in (("PASSIVE", "sleep (default)"), ("ACTIVE", "spin (before)")):
        alone = statistics.median(results[(policy, 0)])
        for busy in (0, 1, 2):
            seconds = statistics.median(results[(policy, busy)])
            print(f"{label:>20} {busy:>10} {seconds:>8.2f} {seconds / alone:>8.2f}x {(cpus + busy) / cpus:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="14m,70m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--contention", action="store_true", help="also measure beside busy processes")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (the fixture is reused)")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    work = args.keep or Path(tempfile.mkdtemp(prefix="checkpoint_cost-"))
    work.mkdir(parents=True, exist_ok=True)
    # Before anything imports huggingface_hub (it reads these once) or torch (OpenMP).
    os.environ.update(
        HF_HUB_CACHE=str(work / "hub"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    from polypythias.extract.threads import configure_threads

    print(f"torch threads: {configure_threads()} (usable CPUs of this process)")
    sys.path.insert(0, str(REPO / "tests"))
    from hub_english import write_documents, write_eval_tasks
    from polypythias.extract.hub_fixture import write_hub_suite

    os.chdir(work)  # the preset's documents path is relative to the working directory
    write_documents(work / "data" / "pile_val_sample.jsonl")
    write_eval_tasks(work / "tasks")
    if not (work / "hub").exists():
        started = time.perf_counter()
        write_hub_suite(work / "hub", TOKENIZER, sizes=tuple(sizes), seeds=(0, 1), steps=(1000,))
        print(f"hub fixture written in {time.perf_counter() - started:.1f} s: {work / 'hub'}")
    result = measure_in_process(work, sizes, args.repeats)
    print("\nSeconds per checkpoint (median; seed 0 .bin and seed 1 safetensors alike), bytes of the weight file")
    whats = ("load", *EXTRACTORS, "together")
    print(f"{'size':>6} {'params':>12} " + " ".join(f"{w:>12}" for w in whats))
    for size in sizes:
        print(
            f"{size:>6} {result['parameters'][size]:>12,} "
            + " ".join(f"{statistics.median(result['times'][(size, w)]):>12.2f}" for w in whats)
        )
    for key, count in sorted(result["bytes"].items()):
        print(f"  {key}: {count / 1e6:.1f} MB read")
    project(result, sizes)
    if args.contention:
        contention(work, args.repeats)


if __name__ == "__main__":
    main()
