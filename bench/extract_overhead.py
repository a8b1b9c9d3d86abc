"""Extraction overhead: the full extraction pass against the work it cannot avoid.

On the micro suite, side by side in one run:

- bare: for every checkpoint, load it (``from_pretrained``: reading the tensors
  and building the model) and run the forward passes over the evaluation
  documents, batched exactly as the token_stats extractor batches them;
- full: ``run_extraction`` into a fresh lake: the same loads and forward passes
  plus every statistic, top-k, SVDs, hashing, Parquet writes and the manifest.

Each is timed ``--repeats`` times alternately and the fastest of each is kept.
Prints the ratio full / bare (goal: under 1.3×).

    python bench/extract_overhead.py [--suite micro/suite.yaml] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from polypythias.extract.checkpoints import load_model, load_tokenizer
from polypythias.extract.extractors.token_stats import TokenStats
from polypythias.extract.runner import run_extraction
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake


def bare_pass(suite, checkpoints, documents: TokenStats, device) -> float:
    """Load every checkpoint and run only the forward passes; returns seconds."""
    started = time.perf_counter()
    tokenizer = None
    for checkpoint in checkpoints:
        model = load_model(suite, checkpoint, device)
        tokenizer = tokenizer or load_tokenizer(suite, checkpoint)
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
                model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    return time.perf_counter() - started


def full_pass(suite, scratch: Path) -> float:
    lake = Lake(scratch / f"lake-{time.monotonic_ns()}")
    started = time.perf_counter()
    summary = run_extraction(suite, lake, progress=False)
    elapsed = time.perf_counter() - started
    if not summary.ok:
        raise SystemExit(f"extraction failed: {summary.failures[:3]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="micro/suite.yaml", help="suite file (default: the demo's micro suite)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    suite = load_suite(args.suite)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoints = sorted(
        {c for name in suite.extractors for c in suite.checkpoints_for(name)}
    )
    documents = TokenStats(suite.extractor_options("token_stats"), suite)
    bare, full = [], []
    with tempfile.TemporaryDirectory() as scratch:
        bare_pass(suite, checkpoints[:2], documents, device)  # warm-up
        for _ in range(args.repeats):
            bare.append(bare_pass(suite, checkpoints, documents, device))
            full.append(full_pass(suite, Path(scratch)))
    print(f"suite {suite.name}: {len(checkpoints)} checkpoints, extractors {', '.join(suite.extractors)}, device {device}")
    print(f"bare loads + forward passes: {min(bare):.2f} s   (runs: {', '.join(f'{t:.2f}' for t in bare)})")
    print(f"full extraction pass:        {min(full):.2f} s   (runs: {', '.join(f'{t:.2f}' for t in full)})")
    print(f"overhead ratio full / bare:  {min(full) / min(bare):.2f}x   (goal < 1.3x)")


if __name__ == "__main__":
    main()
