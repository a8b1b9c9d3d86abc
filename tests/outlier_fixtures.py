"""A small lake with one planted outlier run, written through ``Lake``, for the
outlier and early-warning marts (tests/test_outliers.py).

Suite ``wobbly``: size ``7m`` with five seeds and size ``2m`` with two (too few for a
cross-seed comparison), checkpoints at steps 0, 5, 20, 40, 60, 80, 100 and a training
log at every step 1–100. Per checkpoint: token losses (``token_stats``), two micro
lm-eval tasks with per-item answers (``eval_results``, ``eval_samples``) and the
manifest rows of both extractions; per size an imported training map
(``training_map_states``), as `polypythias ingest training-map` writes it.

Seed 3 of 7m is the planted outlier:

- its training loss spikes at steps 70 and 71 (+1.0 on a loss near 2);
- from step 60 its token loss is 0.25 higher;
- from step 60 it copies the answer the seeds share on an item far less often
  (20 % instead of 85 %): lower accuracy and lower agreement with every other seed;
- its training-map path visits state 3, which no other run visits.

The other runs differ only by seeded noise; seed 1 enters state 1 one checkpoint
later than the others (ordinary variation, within the entry-shift default).

``write_lake`` returns a ``Truth`` with every value the marts are built from, so the
tests recompute the signals independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from polypythias.warehouse import synthetic
from polypythias.warehouse.schemas import (
    EVAL_RESULTS,
    EVAL_SAMPLES,
    TOKEN_STATS,
    TRAINING_MAP_STATES,
)
from polypythias.warehouse.synthetic import SyntheticLake, checkpoint_partition, run_partition

SUITE = "wobbly"
SIZE = "7m"
SMALL = "2m"
SEEDS = {SIZE: (0, 1, 2, 3, 4), SMALL: (0, 1)}
STEPS = (0, 5, 20, 40, 60, 80, 100)
LOG_STEPS = tuple(range(1, 101))
OUTLIER = (SIZE, 3)
#: From this step on the outlier's token loss and answers are off.
OUTLIER_FROM = 60
SPIKE_STEPS = (70, 71)
#: Both are in the default performance_tasks.
TASKS = ("micro_lambada", "micro_verb_agreement")
N_ITEMS = 60
N_CHOICES = 4
N_TOKENS = 4

#: Imported training-map paths over STEPS: (size, seed) → states.
MAP_PATHS = {
    (SIZE, 0): (0, 0, 1, 1, 2, 2, 2),
    (SIZE, 1): (0, 0, 0, 1, 2, 2, 2),
    (SIZE, 2): (0, 0, 1, 1, 2, 2, 2),
    (SIZE, 3): (0, 0, 1, 1, 3, 3, 2),
    (SIZE, 4): (0, 0, 1, 1, 2, 2, 2),
    (SMALL, 0): (0, 0, 1, 1, 2, 2, 2),
    (SMALL, 1): (0, 1, 1, 2, 2, 2, 2),
}

_BASE_TIME = datetime(2026, 3, 1, tzinfo=UTC)

Run = tuple[str, int]
Checkpoint = tuple[str, int, int]


@dataclass
class Truth:
    """What the marts are built from."""

    #: (size, seed, step) → mean token loss (of the float32 values on disk)
    token_losses: dict[Checkpoint, float] = field(default_factory=dict)
    #: (size, seed, step, task) → acc (the mean of the items' correctness)
    accuracies: dict[tuple[str, int, int, str], float] = field(default_factory=dict)
    #: (size, seed, step, task) → predicted choice per item (index = doc_id)
    predictions: dict[tuple[str, int, int, str], list[int]] = field(default_factory=dict)
    #: (size, seed) → {step: training loss}
    training_losses: dict[Run, dict[int, float]] = field(default_factory=dict)
    #: (size, seed) → {step: state} of the imported map
    map_states: dict[Run, dict[int, int]] = field(default_factory=dict)


def _extraction_id(minutes: int, serial: int) -> str:
    return synthetic.extraction_id(_BASE_TIME + timedelta(minutes=minutes), serial)


def _token_table(extraction: str, mean: float) -> tuple[pa.Table, float]:
    """N_TOKENS token losses around ``mean``; returns the table and their mean on disk."""
    losses = np.float32(mean) + np.array([-0.1, -0.05, 0.05, 0.1], dtype=np.float32)
    logprobs = -losses
    table = pa.table(
        {
            "extraction_id": [extraction] * N_TOKENS,
            "doc_id": [0] * N_TOKENS,
            "position": list(range(1, N_TOKENS + 1)),
            "target_id": [5] * N_TOKENS,
            "target_logprob": logprobs,
            "entropy": losses + np.float32(0.5),
            "target_rank": [1] * N_TOKENS,
            "topk_ids": [[5, 6]] * N_TOKENS,
            "topk_logprobs": [[float(lp), float(lp) - 1.0] for lp in logprobs],
        }
    )
    return table, float(np.mean(losses.astype(np.float64)))


def _eval_tables(extraction, evaluated_at, answers, targets):
    """Results and samples of one checkpoint: per task, the predicted choices."""
    results, samples = [], []
    for task, predicted in answers.items():
        correct = [float(p == t) for p, t in zip(predicted, targets[task], strict=True)]
        acc = float(np.mean(correct))
        results.append({
            "extraction_id": extraction, "task": task, "metric": "acc", "filter": "none",
            "value": acc, "stderr": float(np.sqrt(acc * (1 - acc) / (N_ITEMS - 1))),
            "n_samples": N_ITEMS, "num_fewshot": 0, "task_version": "1",
            "harness_version": "0.4.13", "evaluated_at": evaluated_at,
        })  # fmt: skip
        for doc_id, (choice, target) in enumerate(zip(predicted, targets[task], strict=True)):
            loglikelihoods = [-2.0 - 0.1 * c for c in range(N_CHOICES)]
            loglikelihoods[choice] = -0.5
            samples.append({
                "extraction_id": extraction, "task": task, "filter": "none", "num_fewshot": 0,
                "doc_id": doc_id, "doc_hash": f"{task}-{doc_id:03d}", "target": str(target),
                "target_index": target, "choice_loglikelihoods": loglikelihoods,
                "choice_is_greedy": [c == choice for c in range(N_CHOICES)],
                "predicted": choice, "metrics": [("acc", float(choice == target))],
            })  # fmt: skip
    return (
        pa.Table.from_pylist(results, schema=EVAL_RESULTS.schema),
        pa.Table.from_pylist(samples, schema=EVAL_SAMPLES.schema),
    )


def write_lake(root, seed: int = 5) -> Truth:
    """Write the lake under ``root``; returns its truth."""
    lake = SyntheticLake(root)
    rng = np.random.default_rng(seed)
    truth = Truth()
    serial = iter(range(1, 100_000))

    for size, seeds in SEEDS.items():
        targets = {task: rng.integers(N_CHOICES, size=N_ITEMS).tolist() for task in TASKS}
        difficulty = {task: rng.random(N_ITEMS) for task in TASKS}
        for step in STEPS:
            # The answer the seeds share on each item at this step: right on the
            # items easy enough for the step's skill, else one fixed wrong choice.
            skill = 0.3 + 0.5 * (1 - np.exp(-step / 30))
            shared = {
                task: [
                    t if d < skill else (t + 1) % N_CHOICES
                    for t, d in zip(targets[task], difficulty[task], strict=True)
                ]
                for task in TASKS
            }
            for seed_ in seeds:
                outlier = (size, seed_) == OUTLIER and step >= OUTLIER_FROM
                partition = checkpoint_partition(SUITE, size, seed_, step)
                extraction = _extraction_id(step + 1, next(serial))

                mean = 3.0 + 2.0 * np.exp(-step / 30) + rng.normal(0, 0.02)
                tokens, on_disk = _token_table(extraction, mean + (0.25 if outlier else 0.0))
                truth.token_losses[(size, seed_, step)] = on_disk

                copy = 0.2 if outlier else 0.85
                answers = {
                    task: [s if rng.random() < copy else int(rng.integers(N_CHOICES)) for s in shared[task]]
                    for task in TASKS
                }
                evaluated_at = _BASE_TIME + timedelta(minutes=step + 1)
                results, samples = _eval_tables(extraction, evaluated_at, answers, targets)
                lake.write_extraction(partition, extraction,
                                      {TOKEN_STATS: tokens, EVAL_RESULTS: results, EVAL_SAMPLES: samples},
                                      ("token_stats", "evals"), config_hash="c0ffee")  # fmt: skip
                for task in TASKS:
                    truth.predictions[(size, seed_, step, task)] = answers[task]
                    truth.accuracies[(size, seed_, step, task)] = float(np.mean(
                        [p == t for p, t in zip(answers[task], targets[task], strict=True)]
                    ))  # fmt: skip

        for seed_ in seeds:
            run = run_partition(SUITE, size, seed_)
            losses = {}
            for step in LOG_STEPS:
                loss = 2.0 + 2.0 * np.exp(-step / 15) + rng.normal(0, 0.02)
                if (size, seed_) == OUTLIER and step in SPIKE_STEPS:
                    loss += 1.0
                losses[step] = float(loss)
            lake.write_training_log(run, _extraction_id(500, next(serial)), losses)
            truth.training_losses[(size, seed_)] = losses

        extraction = _extraction_id(600, next(serial))
        rows = []
        for seed_ in seeds:
            path = dict(zip(STEPS, MAP_PATHS[(size, seed_)], strict=True))
            truth.map_states[(size, seed_)] = path
            rows += [
                {
                    "extraction_id": extraction, "seed": seed_, "step": step, "state": state,
                    "score": float(i), "source_file": "/maps/wobbly.tsv",
                    "source_sha256": "0" * 64, "ingested_at": _BASE_TIME,
                }
                for i, (step, state) in enumerate(path.items())
            ]  # fmt: skip
        lake.write(TRAINING_MAP_STATES, {"suite": SUITE, "model_size": size}, extraction,
                   pa.Table.from_pylist(rows, schema=TRAINING_MAP_STATES.schema))  # fmt: skip
    return truth
