"""Extraction overhead: the full extraction of a checkpoint against the work it cannot avoid.

On the micro suite, run by run, side by side in one run:

- bare: load the checkpoint (``from_pretrained``: reading the tensors and building
  the model) and run the forward passes over the evaluation documents, batched
  exactly as the token_stats extractor batches them;
- full: ``run_extraction`` on that run, the code path of ``polypythias extract``:
  the same loads and forward passes plus every statistic (log-softmax, entropy,
  rank, top-k, weight spectra, medians, hashes), planning from the manifest, the
  Parquet writes and the manifest rows.

The goal is about the one-pass statistics, so both arms run the extractors named
by ``--extractors``: token_stats and weight_stats by default, even when the suite
also configures others (evals and probes add work of their own, with forward
passes the bare arm does not make).

Both are timed on the same run's checkpoints back to back, in alternating order,
so drift in the machine's speed hits both alike. Prints the total time of each
and the ratio full / bare (goal: under 1.3×).

    python bench/extract_overhead.py [--suite micro/suite.yaml] [--repeats 2]
        [--extractors token_stats,weight_stats]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from polypythias.extract.checkpoints import load_model, load_tokenizer
from polypythias.extract.runner import Runner, Task, build_extractors, run_extraction
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake


def bare(runner: Runner, task: Task, tokenizer) -> float:
    """Load one checkpoint and run only its forward passes; returns seconds."""
    started = time.perf_counter()
    model, _ = load_model(runner.suite, task.checkpoint, runner.device)
    documents = runner.extractors["token_stats"]
    sequences = documents.encode(tokenizer, model.config.max_position_embeddings)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batch_size = documents.options.batch_size
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[start : start + batch_size]]
            length = max(len(s) for s in batch)
            ids = torch.zeros((len(batch), length), dtype=torch.long)
            mask = torch.zeros((len(batch), length), dtype=torch.long)
            for row, sequence in enumerate(batch):
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            model(input_ids=ids.to(runner.device), attention_mask=mask.to(runner.device)).logits.float()
    return time.perf_counter() - started


def full(run_suite, names: list[str], scratch: str) -> float:
    """Extract one run into a fresh lake, as `polypythias extract` does; returns seconds."""
    lake = Lake(f"{scratch}/lake-{time.monotonic_ns()}")
    started = time.perf_counter()
    summary = run_extraction(run_suite, lake, names, progress=False)
    elapsed = time.perf_counter() - started
    if not summary.ok:
        raise SystemExit(f"extraction failed: {summary.failures[:3]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="micro/suite.yaml", help="suite file (default: the demo's micro suite)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the suite")
    parser.add_argument(
        "--extractors",
        default="token_stats,weight_stats",
        help="comma-separated extractors of the full arm (default: token_stats,weight_stats)",
    )
    args = parser.parse_args()
    names = [name for name in args.extractors.split(",") if name]
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    if not Path(args.suite).is_file():
        raise SystemExit(f"{args.suite} not found: train the micro suite first (`make demo`)")
    suite = load_suite(args.suite)
    if "token_stats" not in suite.extractors or "token_stats" not in names:
        raise SystemExit(f"{args.suite}: the benchmark needs a token_stats extractor, in the suite and in --extractors")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    extractors = build_extractors(suite, names)
    runs = [(size, seed) for size in suite.sizes for seed in suite.seeds]
    bare_times, full_times = [], []
    with tempfile.TemporaryDirectory() as scratch:
        runner = Runner(suite, Lake(scratch), extractors, device)

        def bare_run(size: str, seed: int) -> float:
            checkpoints = {c for n in extractors for c in suite.checkpoints_for(n)}
            mine = sorted(c for c in checkpoints if (c.model_size, c.seed) == (size, seed))
            tokenizer = load_tokenizer(suite, mine[0])  # the job loads it once too
            return sum(bare(runner, Task(c, tuple(extractors)), tokenizer) for c in mine)

        def full_run(size: str, seed: int) -> float:
            return full(suite.model_copy(update={"sizes": [size], "seeds": [seed]}), names, scratch)

        bare_run(*runs[0]), full_run(*runs[0])  # warm-up
        for repeat in range(args.repeats):
            for index, run in enumerate(runs):
                order = (bare_run, full_run) if (index + repeat) % 2 else (full_run, bare_run)
                timed = {f: f(*run) for f in order}
                bare_times.append(timed[bare_run])
                full_times.append(timed[full_run])
    ratios = [f / b for f, b in zip(full_times, bare_times, strict=True)]
    print(
        f"suite {suite.name}: {len(runs)} runs × {args.repeats} passes, "
        f"extractors {', '.join(extractors)}, device {device}"
    )
    print(f"bare loads + forward passes: {sum(bare_times):7.2f} s")
    print(f"full extraction:             {sum(full_times):7.2f} s")
    print(f"per-run ratio median:        {statistics.median(ratios):.2f}x")
    print(f"overhead ratio full / bare:  {sum(full_times) / sum(bare_times):.2f}x   (goal < 1.3x)")


if __name__ == "__main__":
    main()
