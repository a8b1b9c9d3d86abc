"""A small lake written through ``Lake`` for the dbt tests, and what the marts should see.

``write_lake`` writes a toy suite (2 sizes × 3 seeds × 3 steps, a few documents ×
positions, four weight matrices per checkpoint) with seeded random values, plus the
traps staging must get right:

- a superseded older success (its rows carry absurd values, so a leak shows),
- a failed attempt, newer than the success, that wrote token rows before failing,
- an orphan data file whose extraction id has no manifest row,
- an expected checkpoint (step 1000) that was never extracted, one with a failure,
- an older suite grid and older training-log files that newer ones replace.

With the eval datasets asked for (``EVAL_DATASETS``, not in the default), every
checkpoint also gets lm-eval results and per-item samples from the ``evals``
extractor (three tasks: multiple choice, log-likelihood, and one without a per-item
acc), plus ingested lm-eval files, and the traps of evaluation data:

- an ingested rerun evaluated *before* the extraction it follows (a larger id, an
  older ``evaluated_at``) with absurd values: superseded;
- an ``evals`` rerun tied on ``evaluated_at`` with a smaller id: superseded;
- a newer ingested rerun of one task only, whose file carries a finding: it wins
  that task, the extraction keeps the others;
- a run whose results and samples at one step are a copy of another run's;
- a checkpoint the grid expects evals on that was never evaluated;
- an ingested ``deduped`` twin in its own suite, without samples.

With the probe datasets asked for (``PROBE_DATASETS``, not in the default), every
checkpoint also gets a ``probes`` extraction: per task (one token-level, one
sequence-level) and layer, accuracy and macro-F1 rows with codelengths, and the
probe's label for each test item. Its traps:

- a superseded older probes success whose rows are absurd (value 99, label ``ABSURD``);
- a failed probes attempt, newer than the success, that wrote absurd rows;
- probe rows in the orphan file (no manifest row);
- at step 0 every seed's layer-0 probe of the sequence task says the majority label
  throughout (κ undefined between seeds);
- one run's probe at one checkpoint misses the last test item of the token task, so
  shared-item sets differ between seed pairs.

It returns a ``Truth``: the rows the marts are built from (the current ones only),
so the tests can recompute every statistic independently with numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from sklearn.metrics import f1_score

from polypythias.warehouse import synthetic
from polypythias.warehouse.schemas import (
    EVAL_FILES,
    EVAL_RESULTS,
    EVAL_SAMPLES,
    PROBE_PREDICTIONS,
    PROBE_RESULTS,
    SUITE_GRID,
    TOKEN_STATS,
    WEIGHT_STATS,
)
from polypythias.warehouse.synthetic import SyntheticLake, checkpoint_partition, run_partition

SUITE = "toy"
SIZES = ("14m", "1.4b")
SEEDS = (0, 1, 2)
STEPS = (0, 10, 100)
#: Expected by the suite grid for every run, never extracted.
MISSING_STEP = 1000
EXTRACTORS = ("token_stats", "weight_stats")
DATASETS = ("manifest", "token_stats", "weight_stats", "training_log", "suite_grid")
EVAL_DATASETS = ("eval_results", "eval_samples", "eval_files")
N_DOCS = 3
N_POSITIONS = 6

#: (size, seed, step) whose older successful extraction is superseded.
SUPERSEDED = ("14m", 1, 10)
#: (size, seed, step) with a failed attempt, newer than its success, that wrote rows.
FAILED_AFTER_SUCCESS = ("1.4b", 2, 100)
#: (size, seed, step) with an orphan file (no manifest row), newest of all.
ORPHAN = ("14m", 0, 100)
#: (size, seed) whose missing expected checkpoint was attempted and failed.
FAILED_MISSING = ("1.4b", 0)

# Tokens some seeds do not score, so the shared-token sets differ between pairs:
# (1, 3) only seed 0 scores (left out of the token spread); the last token of the
# last document seeds 0 and 1 score.
_ONLY_SEED_0 = (1, 3)
_DROPPED = {
    1: {_ONLY_SEED_0},
    2: {_ONLY_SEED_0, (N_DOCS - 1, N_POSITIONS - 1)},
}

#: Eval tasks: name → (choices, per-item metrics). One choice = a log-likelihood item.
EVAL_TASKS = {
    "mc_task": (4, ("acc", "acc_norm")),
    "ll_task": (1, ("acc", "perplexity")),
    "bias_task": (2, ("pct_stereotype",)),
}
N_ITEMS = 12
DEDUPED_SUITE = f"{SUITE}-deduped"
#: An ingested file with a larger id but an older evaluated_at: superseded.
STALE_INGEST = ("14m", 1, 10)
#: An `evals` rerun with the same evaluated_at and a smaller id: superseded.
TIED_RERUN = ("1.4b", 1, 0)
#: A newer ingested rerun of mc_task only, from a file with a finding.
NEWER_INGEST = ("1.4b", 0, 100)
NEWER_INGEST_PATH = "/evals/pythia-1.4b/step90/results_2026-01-09T00-00-00.json"
NEWER_INGEST_FINDING = "file name says step 90, model_args says revision=step100"
#: (size, seed, step) whose evals are a copy of another seed's at that step.
COPY, COPIED_FROM_SEED = ("14m", 2, 100), 1
#: Expected by the grid for evals, extracted otherwise, never evaluated.
MISSING_EVALS = ("1.4b", 2, 10)
#: The deduped twin's one ingested checkpoint (no samples file).
DEDUPED = ("14m", 0, 100)
DEDUPED_PATH = "/evals/pythia-14m-deduped/step100/results.json"
#: A results value no real accuracy has: shows any leak of a superseded row.
ABSURD = 99.0

PROBE_DATASETS = ("probe_results", "probe_predictions")
#: Probing tasks: name → (level, labels, n_train, n_test). The first label is the
#: train split's most frequent one.
PROBE_TASKS = {
    "upos": ("token", ("NOUN", "VERB", "DET", "ADJ", "PRON"), 400, 24),
    "antecedent": ("sequence", ("fem_sg", "masc_sg", "plural"), 120, 16),
}
PROBE_LAYERS = (0, 1, 2)
#: (size, seed, step) with an older, superseded probes success (absurd rows).
PROBE_SUPERSEDED = ("1.4b", 0, 10)
#: (size, seed, step) with a failed probes attempt, newer than its success.
PROBE_FAILED = ("14m", 2, 10)
#: (size, seed, step) whose token-task probes miss the last test item.
PROBE_SHORT = ("14m", 2, 100)
#: At this step every seed's layer-0 probe of this task predicts the majority label.
PROBE_CONSTANT = (0, 0, "antecedent")
#: A label no task has: shows any leak of a superseded or failed probe row.
ABSURD_LABEL = "ABSURD"

_MATRICES = (  # tensor name, kind, layer, rows, cols
    ("layers.0.attention.query_key_value.weight[q]", "q", 0, 8, 8),
    ("layers.0.attention.query_key_value.weight[k]", "k", 0, 8, 8),
    ("layers.0.mlp.dense_h_to_4h.weight", "ffn_in", 0, 32, 8),
    ("embed_in.weight", "embed", None, 50, 8),
)

_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
#: How long every extraction took, per its manifest.
DURATION_S = 3.0

Checkpoint = tuple[str, int, int]


def extraction_id(minutes: int, serial: int) -> str:
    """A deterministic, time-sortable extraction id ``minutes`` after the base time."""
    return synthetic.extraction_id(_BASE_TIME + timedelta(minutes=minutes), serial)


@dataclass
class Truth:
    """What the marts should be built from: the current rows only."""

    #: (size, seed, step) → {(doc_id, position): token loss}
    token_losses: dict[Checkpoint, dict[tuple[int, int], float]] = field(default_factory=dict)
    #: (size, seed, step) → weight_stats rows (dicts in the schema's columns)
    weight_rows: dict[Checkpoint, list[dict]] = field(default_factory=dict)
    #: (size, seed) → {step: loss} of the newest training log
    training_losses: dict[tuple[str, int], dict[int, float]] = field(default_factory=dict)
    #: extraction ids whose data rows must never reach staging
    invisible_ids: set[str] = field(default_factory=set)
    #: the id of the current extraction of each checkpoint
    current_ids: dict[Checkpoint, str] = field(default_factory=dict)
    #: (suite, size, seed, step, task, metric) → current eval_results row + provenance
    eval_scores: dict[tuple, dict] = field(default_factory=dict)
    #: (suite, size, seed, step, task) → {doc_id: (prediction, acc or None)}
    eval_items: dict[tuple, dict[int, tuple[int, float | None]]] = field(default_factory=dict)
    #: (suite, size, seed, step, task, extraction_id) of superseded evaluations
    superseded_evals: set[tuple] = field(default_factory=set)
    #: planted integrity findings: (finding, suite, size, seed, step, other_seed, path)
    eval_findings: set[tuple] = field(default_factory=set)
    #: (suite, size, seed, step, task, layer, metric) → current probe_results row
    probe_scores: dict[tuple, dict] = field(default_factory=dict)
    #: (suite, size, seed, step, task, layer) → {item_id: predicted label}
    probe_items: dict[tuple, dict[int, str]] = field(default_factory=dict)
    #: (size, seed, step) → the id of its current probes extraction
    probe_ids: dict[Checkpoint, str] = field(default_factory=dict)


@dataclass
class _Evaluation:
    """One evaluation of one checkpoint: per task, its samples and results."""

    samples: dict[str, list[dict]]
    results: dict[str, list[dict]]

    def items(self, task: str) -> dict[int, tuple[int, float | None]]:
        return {
            row["doc_id"]: (
                row["predicted"] if row["predicted"] is not None else int(row["metrics"]["acc"]),
                row["metrics"].get("acc"),
            )
            for row in self.samples[task]
        }


def _evaluate(rng, targets: dict[str, list[int]], skill: float, evaluated_at, absurd=False):
    """Random answers of a model that is right with probability ``skill``."""
    samples, results = {}, {}
    for task, (n_choices, _) in EVAL_TASKS.items():
        rows = []
        for doc_id, target in enumerate(targets[task]):
            right = absurd or rng.random() < skill
            if n_choices == 1:
                nll = float(rng.gamma(2.0, 1.0))
                acc = 1.0 if right else 0.0
                rows.append({
                    "doc_id": doc_id, "target": "herself", "target_index": None,
                    "choice_loglikelihoods": [-nll], "choice_is_greedy": [right],
                    "predicted": None, "metrics": {"acc": acc, "perplexity": nll},
                })  # fmt: skip
                continue
            wrong = [c for c in range(n_choices) if c != target]
            predicted = target if right else int(rng.choice(wrong))
            loglikelihoods = [-float(rng.uniform(1.0, 5.0)) for _ in range(n_choices)]
            loglikelihoods[predicted] = max(loglikelihoods) + 0.5
            metrics = (
                {"acc": float(predicted == target), "acc_norm": float(rng.random() < skill)}
                if task == "mc_task"
                else {"pct_stereotype": float(predicted == 0)}
            )
            rows.append({
                "doc_id": doc_id, "target": str(target), "target_index": target,
                "choice_loglikelihoods": loglikelihoods,
                "choice_is_greedy": [c == predicted for c in range(n_choices)],
                "predicted": predicted, "metrics": metrics,
            })  # fmt: skip
        samples[task] = rows
        n = len(rows)
        result_rows = []
        for metric in EVAL_TASKS[task][1]:
            values = np.array([r["metrics"][metric] for r in rows])
            if metric == "perplexity":
                value, stderr = float(np.exp(values.mean())), None
            else:
                value = float(values.mean())
                stderr = float(np.sqrt(value * (1 - value) / (n - 1)))
            result_rows.append({
                "task": task, "metric": metric, "filter": "none",
                "value": ABSURD if absurd else value, "stderr": stderr, "n_samples": n,
                "num_fewshot": 0, "task_version": "1", "harness_version": "0.4.13",
                "evaluated_at": evaluated_at,
            })  # fmt: skip
        results[task] = result_rows
    return _Evaluation(samples, results)


def _eval_tables(extraction: str, evaluation: _Evaluation, tasks=tuple(EVAL_TASKS)):
    results = [{"extraction_id": extraction, **row} for task in tasks for row in evaluation.results[task]]
    samples = [
        {
            "extraction_id": extraction, "task": task, "filter": "none", "num_fewshot": 0,
            "doc_hash": f"{task}-{row['doc_id']:04d}", **row,
            "metrics": list(row["metrics"].items()),
        }
        for task in tasks
        for row in evaluation.samples[task]
    ]  # fmt: skip
    samples = [{name: row[name] for name in EVAL_SAMPLES.schema.names} for row in samples]
    return (
        pa.Table.from_pylist(results, schema=EVAL_RESULTS.schema),
        pa.Table.from_pylist(samples, schema=EVAL_SAMPLES.schema),
    )


def _eval_file(
    extraction: str, path: str, variant: str, step: int, evaluated_at, n_tasks: int, finding: str | None = None
) -> pa.Table:
    return pa.Table.from_pylist([{
        "extraction_id": extraction, "path": path, "sha256": "f" * 64, "format": "lm-eval-0.4",
        "model_args": f"pretrained=EleutherAI/pythia-x,revision=step{step}",
        "pretrained": "EleutherAI/pythia-x", "revision": f"step{step}", "variant": variant,
        "num_fewshot": 0, "evaluated_at": evaluated_at, "n_tasks": n_tasks,
        "samples_files": [], "finding": finding,
    }], schema=EVAL_FILES.schema)  # fmt: skip


def _probe(rng, gold: dict[str, list[str]], size: str, seed: int, step: int, absurd=False):
    """One checkpoint's probes: results rows and, per task × layer, {item_id: label}."""
    results, items = [], {}
    for task, (level, labels, n_train, n_test) in PROBE_TASKS.items():
        uniform = float(n_train * np.log2(len(labels)))
        majority = float(np.mean([g == labels[0] for g in gold[task]]))
        for layer in PROBE_LAYERS:
            # learnt sooner by some seeds than by others, so emergence steps differ
            learnt = 1 - np.exp(-step / (4 + 12 * seed))
            skill = min(
                0.95, 0.2 + 0.5 * learnt + 0.08 * layer + (0.1 if size == "1.4b" else 0.0) + float(rng.normal(0, 0.05))
            )
            if absurd:
                predicted = [ABSURD_LABEL] * n_test
            elif (step, layer, task) == PROBE_CONSTANT:
                predicted = [labels[0]] * n_test
            else:
                predicted = [
                    g if rng.random() < skill else str(rng.choice([o for o in labels if o != g])) for g in gold[task]
                ]
            accuracy = float(np.mean(np.equal(predicted, gold[task])))
            macro_f1 = float(f1_score(gold[task], predicted, average="macro", zero_division=0))
            codelength = uniform * float(np.clip(1.1 - 0.8 * skill + rng.normal(0, 0.03), 0.05, 2))
            for metric, value in (("accuracy", accuracy), ("macro_f1", macro_f1)):
                results.append({
                    "task": task, "level": level, "layer": layer, "metric": metric,
                    "value": ABSURD if absurd else value,
                    "codelength": codelength, "uniform_codelength": uniform,
                    "majority_accuracy": majority, "n_classes": len(labels),
                    "n_train": n_train, "n_test": n_test,
                })  # fmt: skip
            items[(task, layer)] = dict(enumerate(predicted))
    return results, items


def _probe_tables(extraction: str, results: list[dict], items: dict, gold: dict):
    predictions = [
        {"extraction_id": extraction, "task": task, "layer": layer, "item_id": item_id,
         "gold": gold[task][item_id], "predicted": label}
        for (task, layer), labels in items.items()
        for item_id, label in labels.items()
    ]  # fmt: skip
    return (
        pa.Table.from_pylist([{"extraction_id": extraction, **row} for row in results], schema=PROBE_RESULTS.schema),
        pa.Table.from_pylist(predictions, schema=PROBE_PREDICTIONS.schema),
    )


def _token_table(extraction: str, losses: dict[tuple[int, int], float]) -> pa.Table:
    keys = sorted(losses)
    logprobs = np.array([-losses[k] for k in keys], dtype=np.float32)
    return pa.table(
        {
            "extraction_id": [extraction] * len(keys),
            "doc_id": [d for d, _ in keys],
            "position": [p for _, p in keys],
            "target_id": [7] * len(keys),
            "target_logprob": logprobs,
            "entropy": np.abs(logprobs) + np.float32(0.5),
            "target_rank": [1 + (d + p) % 4 for d, p in keys],
            "topk_ids": [[7, 3]] * len(keys),
            "topk_logprobs": [[float(lp), float(lp) - 1.0] for lp in logprobs],
        }
    )


def _weight_table(extraction: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{"extraction_id": extraction, **row} for row in rows], schema=WEIGHT_STATS.schema)


def _random_weight_rows(rng: np.random.Generator, scale: float = 1.0) -> list[dict]:
    rows = []
    for name, kind, layer, n_rows, n_cols in _MATRICES:
        l2 = float(rng.uniform(1.0, 5.0)) * scale
        l1 = l2 * float(rng.uniform(2.0, 9.0))
        spectral = l2 * float(rng.uniform(0.3, 0.9))
        trace = float(rng.normal(0.0, 1.0)) * scale if n_rows == n_cols else None
        rows.append(
            {
                "tensor_name": name, "kind": kind, "layer": layer,
                "n_rows": n_rows, "n_cols": n_cols,
                "l1": l1, "l2": l2, "trace": trace, "spectral": spectral,
                "code_sparsity": l1 / l2,
                "computational_sparsity": trace / spectral if trace is not None else None,
                "sv_mean": spectral * float(rng.uniform(0.2, 0.6)),
                "sv_var": float(rng.uniform(0.01, 0.5)) * scale,
                "mean": float(rng.normal(0.0, 0.01)),
                "median": None,
                "var": float(rng.uniform(0.001, 0.05)),
                "weight_hash": f"{rng.integers(2**63):016x}",
            }
        )  # fmt: skip
    for kind in ("all_weights", "all_biases"):
        rows.append(
            {
                "tensor_name": kind, "kind": kind, "layer": None, "n_rows": 1000, "n_cols": 1,
                "l1": None, "l2": None, "trace": None, "spectral": None, "code_sparsity": None,
                "computational_sparsity": None, "sv_mean": None, "sv_var": None,
                "mean": float(rng.normal(0.0, 0.01)) * scale,
                "median": float(rng.normal(0.0, 0.01)),
                "var": float(rng.uniform(0.001, 0.05)) * scale,
                "weight_hash": None,
            }
        )  # fmt: skip
    return rows


def _losses(rng, difficulty, seed: int, step: int, shift: float = 0.0):
    losses = {}
    for (doc, pos), hard in difficulty.items():
        if (doc, pos) in _DROPPED.get(seed, set()):
            continue
        noise = rng.gamma(2.0, 0.25)
        # float32 on disk: keep the value the lake will hold
        losses[(doc, pos)] = float(np.float32(hard / (1 + step / 50) + noise + shift))
    return losses


def write_lake(
    root,
    datasets: Iterable[str] = DATASETS,
    seed: int = 0,
) -> Truth:
    """Write the toy lake under ``root`` (only ``datasets``) and return its truth."""
    wanted = set(datasets)
    lake = SyntheticLake(root, wanted)
    write = lake.write
    rng = np.random.default_rng(seed)
    # the evals draw from their own stream: the other datasets stay as without them
    eval_rng = np.random.default_rng([seed, 1])
    evals = bool(wanted & set(EVAL_DATASETS))
    # the probes too
    probe_rng = np.random.default_rng([seed, 2])
    probes = bool(wanted & set(PROBE_DATASETS))
    truth = Truth()
    serial = iter(range(1, 10_000))

    def extractors_of(checkpoint: Checkpoint) -> tuple[str, ...]:
        names = (*EXTRACTORS, "evals") if evals and checkpoint != MISSING_EVALS else EXTRACTORS
        return (*names, "probes") if probes else names

    def write_probes(partition, extraction, checkpoint, status="success", absurd=False, manifest=True):
        size, seed_, step = checkpoint
        results, items = _probe(probe_rng, probe_gold, size, seed_, step, absurd=absurd)
        if checkpoint == PROBE_SHORT and not absurd:
            for layer in PROBE_LAYERS:
                items[("upos", layer)].pop(len(probe_gold["upos"]) - 1)
        results_table, predictions_table = _probe_tables(extraction, results, items, probe_gold)
        error = "probe did not converge" if status == "failed" else None
        lake.write_extraction(partition, extraction,
                              {PROBE_RESULTS: results_table, PROBE_PREDICTIONS: predictions_table},
                              ("probes",) if manifest else None, status=status, error=error,
                              duration_s=DURATION_S)  # fmt: skip
        return results, items

    # The gold labels of each probing task's test split, the same for every checkpoint.
    # The first label is the most frequent (40%), the others share the rest.
    probe_gold = {
        task: [
            str(probe_rng.choice(labels, p=[0.4] + [0.6 / (len(labels) - 1)] * (len(labels) - 1)))
            for _ in range(n_test)
        ]
        for task, (_level, labels, _n_train, n_test) in PROBE_TASKS.items()
    }

    def record(suite, checkpoint, extraction, evaluation, origin, variant, tasks=tuple(EVAL_TASKS), with_samples=True):
        for task in tasks:
            for row in evaluation.results[task]:
                key = (suite, *checkpoint, task, row["metric"])
                truth.eval_scores[key] = {**row, "origin": origin, "variant": variant, "extraction_id": extraction}
            if with_samples:
                truth.eval_items[(suite, *checkpoint, task)] = evaluation.items(task)

    def ingest(partition, extraction, evaluation, tasks, path, variant, finding=None, with_samples=True):
        results, samples = _eval_tables(extraction, evaluation, tasks)
        evaluated_at = evaluation.results[tasks[0]][0]["evaluated_at"]
        tables = {EVAL_RESULTS: results, EVAL_SAMPLES: samples} if with_samples else {EVAL_RESULTS: results}
        tables[EVAL_FILES] = _eval_file(extraction, path, variant, partition["step"], evaluated_at, len(tasks), finding)
        lake.write_extraction(partition, extraction, tables, ("lm_eval_ingest",), duration_s=DURATION_S)

    def absurd_results(extraction):
        evaluation = _evaluate(eval_rng, targets[size], 0.5, _BASE_TIME, absurd=True)
        return _eval_tables(extraction, evaluation)[0]

    # Per size, the gold answer of each eval item.
    targets = {
        size: {
            task: [int(eval_rng.integers(max(n_choices, 2))) for _ in range(N_ITEMS)]
            for task, (n_choices, _) in EVAL_TASKS.items()
        }
        for size in SIZES
    }
    evaluations: dict[Checkpoint, _Evaluation] = {}

    # Per size, how hard each token is, shared by every seed: seeds agree partly.
    difficulty = {
        size: {(doc, pos): float(rng.gamma(3.0, 1.0)) for doc in range(N_DOCS) for pos in range(N_POSITIONS)}
        for size in SIZES
    }

    for size in SIZES:
        for seed_ in SEEDS:
            for step in STEPS:
                checkpoint = (size, seed_, step)
                partition = checkpoint_partition(SUITE, size, seed_, step)

                if checkpoint == SUPERSEDED:
                    old = extraction_id(10, next(serial))
                    stale = {k: 50.0 for k in difficulty[size]}
                    stale_weights = _random_weight_rows(rng, 1e3)
                    lake.write_extraction(partition, old,
                                          {TOKEN_STATS: _token_table(old, stale),
                                           WEIGHT_STATS: _weight_table(old, stale_weights)},
                                          EXTRACTORS, duration_s=DURATION_S)  # fmt: skip
                    truth.invisible_ids.add(old)

                current = extraction_id(100 + step, next(serial))
                losses = _losses(rng, difficulty[size], seed_, step)
                weights = _random_weight_rows(rng)
                lake.write_extraction(partition, current,
                                      {TOKEN_STATS: _token_table(current, losses),
                                       WEIGHT_STATS: _weight_table(current, weights)},
                                      extractors_of(checkpoint), duration_s=DURATION_S)  # fmt: skip
                if probes:
                    if checkpoint == PROBE_SUPERSEDED:
                        older = extraction_id(20 + step, next(serial))
                        write_probes(partition, older, checkpoint, absurd=True)
                        truth.invisible_ids.add(older)
                    results, items = write_probes(partition, current, checkpoint, manifest=False)
                    for row in results:
                        key = (SUITE, *checkpoint, row["task"], row["layer"], row["metric"])
                        truth.probe_scores[key] = {**row, "extraction_id": current}
                    for (task, layer), labels in items.items():
                        truth.probe_items[(SUITE, *checkpoint, task, layer)] = labels
                    truth.probe_ids[checkpoint] = current
                    if checkpoint == PROBE_FAILED:
                        failed = extraction_id(700, next(serial))
                        write_probes(partition, failed, checkpoint, "failed", absurd=True)
                        truth.invisible_ids.add(failed)
                truth.token_losses[checkpoint] = losses
                truth.weight_rows[checkpoint] = weights
                truth.current_ids[checkpoint] = current

                if evals and checkpoint != MISSING_EVALS:
                    evaluated_at = synthetic.started_at(current)
                    skill = min(0.95, 0.25 + 0.006 * step + 0.05 * seed_)
                    if checkpoint == COPY:
                        # a mislabelled copy: another run's answers under this run's name
                        evaluation = evaluations[(size, COPIED_FROM_SEED, step)]
                        truth.eval_findings |= {
                            ("duplicate_results", SUITE, size, seed_, step, COPIED_FROM_SEED, None),
                            ("duplicate_results", SUITE, size, COPIED_FROM_SEED, step, seed_, None),
                        }
                    else:
                        evaluation = _evaluate(eval_rng, targets[size], skill, evaluated_at)
                    evaluations[checkpoint] = evaluation
                    results, samples = _eval_tables(current, evaluation)
                    write(EVAL_RESULTS, partition, current, results)
                    write(EVAL_SAMPLES, partition, current, samples)
                    record(SUITE, checkpoint, current, evaluation, "extract", "standard")

                    if checkpoint == STALE_INGEST:
                        stale = extraction_id(5000, next(serial))
                        earlier = evaluated_at - timedelta(days=1)
                        stale_eval = _evaluate(eval_rng, targets[size], skill, earlier, absurd=True)
                        ingest(partition, stale, stale_eval, tuple(EVAL_TASKS),
                               "/evals/stale/results.json", "standard")  # fmt: skip
                        truth.superseded_evals |= {(SUITE, *checkpoint, task, stale) for task in EVAL_TASKS}
                    if checkpoint == TIED_RERUN:
                        tied = extraction_id(99 + step, next(serial))  # before `current`
                        tied_eval = _evaluate(eval_rng, targets[size], skill, evaluated_at,
                                              absurd=True)  # fmt: skip
                        results, samples = _eval_tables(tied, tied_eval)
                        lake.write_extraction(partition, tied, {EVAL_RESULTS: results, EVAL_SAMPLES: samples},
                                              ("evals",), duration_s=DURATION_S)  # fmt: skip
                        truth.superseded_evals |= {(SUITE, *checkpoint, task, tied) for task in EVAL_TASKS}
                    if checkpoint == NEWER_INGEST:
                        newer = extraction_id(3000, next(serial))
                        later = evaluated_at + timedelta(days=1)
                        newer_eval = _evaluate(eval_rng, targets[size], skill, later)
                        ingest(partition, newer, newer_eval, ("mc_task",), NEWER_INGEST_PATH,
                               "standard", finding=NEWER_INGEST_FINDING)  # fmt: skip
                        record(SUITE, checkpoint, newer, newer_eval, "ingest", "standard",
                               tasks=("mc_task",))  # fmt: skip
                        truth.superseded_evals.add((SUITE, *checkpoint, "mc_task", current))
                        truth.eval_findings.add(("mislabelled_file", SUITE, size, seed_, step,
                                                 None, NEWER_INGEST_PATH))  # fmt: skip

                if checkpoint == FAILED_AFTER_SUCCESS:
                    failed = extraction_id(500, next(serial))
                    tables = {TOKEN_STATS: _token_table(failed, {(0, 0): 40.0})}
                    if evals:
                        tables[EVAL_RESULTS] = absurd_results(failed)
                    lake.write_extraction(partition, failed, tables, EXTRACTORS, status="failed",
                                          error="CUDA out of memory", duration_s=DURATION_S)  # fmt: skip
                    truth.invisible_ids.add(failed)

                if checkpoint == ORPHAN:
                    orphan = extraction_id(900, next(serial))
                    write(TOKEN_STATS, partition, orphan, _token_table(orphan, {(0, 0): 30.0}))
                    if evals:
                        write(EVAL_RESULTS, partition, orphan, absurd_results(orphan))
                    write(WEIGHT_STATS, partition, orphan,
                          _weight_table(orphan, _random_weight_rows(rng, 1e3)))  # fmt: skip
                    if probes:
                        write_probes(partition, orphan, checkpoint, absurd=True, manifest=False)
                    truth.invisible_ids.add(orphan)

            # The training log: an older file replaced by a newer one.
            run = run_partition(SUITE, size, seed_)
            older, newer = extraction_id(1, next(serial)), extraction_id(2, next(serial))
            log_steps = list(range(0, 101, 10))
            log = {s: float(5.0 / (1 + s / 20) + rng.uniform(0, 0.1)) for s in log_steps}
            for extraction, values in ((older, {s: 99.0 for s in log_steps}), (newer, log)):
                lake.write_training_log(run, extraction, values)
            truth.training_losses[(size, seed_)] = log

    # A failed attempt at a missing expected checkpoint.
    size, seed_ = FAILED_MISSING
    failed = extraction_id(600, next(serial))
    lake.write_extraction(checkpoint_partition(SUITE, size, seed_, MISSING_STEP), failed, {}, EXTRACTORS,
                          status="failed", error="checkpoint not found", duration_s=DURATION_S)  # fmt: skip

    if evals:
        # The deduplicated twin, ingested from one file without samples.
        size, seed_, step = DEDUPED
        partition = checkpoint_partition(DEDUPED_SUITE, size, seed_, step)
        twin = extraction_id(3100, next(serial))
        twin_eval = _evaluate(eval_rng, targets[size], 0.8, _BASE_TIME + timedelta(days=3))
        ingest(partition, twin, twin_eval, ("mc_task",), DEDUPED_PATH, "deduped",
               with_samples=False)  # fmt: skip
        record(DEDUPED_SUITE, DEDUPED, twin, twin_eval, "ingest", "deduped",
               tasks=("mc_task",), with_samples=False)  # fmt: skip
        truth.eval_findings |= {
            ("missing_results", SUITE, size, seed_, MISSING_STEP, None, None)
            for size in SIZES for seed_ in SEEDS
        }  # fmt: skip
        truth.eval_findings.add(("missing_results", SUITE, *MISSING_EVALS, None, None))

    # The suite grid: an older one (with a step 5 since dropped), then the current one.
    grids = (
        (extraction_id(0, next(serial)), (0, 5)),
        (extraction_id(5, next(serial)), (*STEPS, MISSING_STEP)),
    )
    for extraction, steps in grids:
        rows = [
            (size, seed_, step, name)
            for size in SIZES for seed_ in SEEDS for step in steps
            for name in (*EXTRACTORS, "evals", "probes")
            if (evals or name != "evals") and (probes or name != "probes")
        ]  # fmt: skip
        write(SUITE_GRID, {"suite": SUITE}, extraction, pa.table({
            "extraction_id": [extraction] * len(rows),
            "model_size": [r[0] for r in rows],
            "seed": [r[1] for r in rows],
            "step": [r[2] for r in rows],
            "extractor": [r[3] for r in rows],
            "source": ["local"] * len(rows),
        }))  # fmt: skip
    return truth


def poison_token_stats(root, checkpoint: Checkpoint, extraction: str) -> None:
    """Add a newer successful token_stats extraction with an impossible row.

    Its one row has ``target_logprob`` = +0.5 (a probability above 1), which the
    staging invariant ``target_logprob <= 0`` must catch.
    """
    table = _token_table(extraction, {(0, 0): -0.5})
    SyntheticLake(root).write_extraction(checkpoint_partition(SUITE, *checkpoint), extraction,
                                         {TOKEN_STATS: table}, ("token_stats",), duration_s=DURATION_S)  # fmt: skip
