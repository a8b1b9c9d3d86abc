"""A synthetic lake of the real PolyPythias suite's shape, for sizing the warehouse.

Writes, through the lake writer the tests share (``warehouse/synthetic.py``: the
real ``Lake.write`` and the schemas of ``warehouse/``), what
`polypythias extract` would write for the ``polypythias`` preset
(extract/suites/polypythias.yaml): 5 sizes (14m 31m 70m 160m 410m) × 10 seeds;
``weight_stats`` on all 154 checkpoints of a run, ``eval_results`` and
``eval_samples`` on the 27-checkpoint evaluation grid for the suite's 11 lm-eval
tasks, a ``manifest`` file per checkpoint (status success, extractors ``evals`` and
``weight_stats``, one extraction id per checkpoint as the runner writes) and the
``suite_grid``. Nothing else (no token_stats, probes or training logs).

Items per task (the lm-eval 0.4 task's evaluation split):

| task | items | choices | source |
|---|---|---|---|
| arc_easy | 2376 | 4 | ARC-Easy test split (Clark et al. 2018) |
| arc_challenge | 1172 | 4 | ARC-Challenge test split |
| lambada_openai | 5153 | 1 (log-likelihood) | LAMBADA test split as OpenAI's GPT-2 release |
| logiqa | 651 | 4 | LogiQA test split |
| piqa | 1838 | 2 | PIQA validation split (lm-eval evaluates it) |
| sciq | 1000 | 4 | SciQ test split |
| winogrande | 1267 | 2 | WinoGrande-xl validation split (lm-eval evaluates it) |
| wsc | 273 | 2 | WSC273, as the brief of issue 6 gives (lm-eval's SuperGLUE `wsc` validation split has 104) |
| blimp_anaphor_gender_agreement | 1000 | 2 | every BLiMP paradigm has 1000 minimal pairs (Warstadt et al. 2020) |
| crows_pairs_english_gender | 262 | 2 | CrowS-Pairs' gender bias type (Nangia et al. 2020: 262 of 1508 pairs) |
| simple_cooccurrence_bias | 351 | 4 | oskarvanderwal/simple-cooccurrence-bias test split, 351 rows (datasets-server; found with the `search` tool) |

The split sizes are the datasets' published ones, recalled rather than looked up
in this session, except simple_cooccurrence_bias. 15,343 items per checkpoint
× 1,350 evaluated checkpoints = 20.7 million ``eval_samples`` rows.

Weight statistics: Pythia's layer counts and widths (14m: 6 × 128, 31m: 6 × 256,
70m: 6 × 512, 160m: 12 × 768, 410m: 24 × 1024; vocabulary 50304), matrices named
and classified as the weight_stats extractor names them (q, k, v split from the
fused query_key_value, attn_out, ffn_in, ffn_out, embed, unembed) plus the
all_weights / all_biases rows, each with a 64-value sample. The values are
synthetic: norms grow with log(step), with a seed-dependent drift.

Predictions: per task, items have a fixed difficulty and a fixed per-choice bias
shared by every run (so seeds agree beyond chance), each run adds its own fixed
per-item preference and each checkpoint fresh noise that shrinks with training; the
gold choice's margin grows with log(step) and with model size. So accuracy rises
with step and size, and κ between seeds and with a run's final checkpoint rises
with step: the agreement marts have something to measure.

Deterministic: the same --seed gives the same values and extraction ids.

    python bench/synthetic_lake.py --out /tmp/lake              # the full lake
    python bench/synthetic_lake.py --out /tmp/lake --fraction 0.5   # 5 of 10 seeds
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from polypythias.warehouse import synthetic
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import (
    EVAL_RESULTS,
    EVAL_SAMPLES,
    SUITE_GRID,
    WEIGHT_STATS,
)
from polypythias.warehouse.synthetic import SyntheticLake

SUITE = "polypythias"
SIZES = ("14m", "31m", "70m", "160m", "410m")
SEEDS = tuple(range(10))
#: Every published checkpoint (154) and the evaluation grid (27), as the preset.
ALL_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, *range(1000, 143001, 1000))
EVAL_STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 3000, *range(13000, 143001, 10000))
#: (layers, hidden width) of each Pythia size.
ARCHITECTURE = {"14m": (6, 128), "31m": (6, 256), "70m": (6, 512), "160m": (12, 768), "410m": (24, 1024)}
VOCABULARY = 50304
#: How far the gold choice's margin gets at the final step, per size.
SKILL = {"14m": 0.9, "31m": 1.3, "70m": 1.8, "160m": 2.4, "410m": 3.0}
SAMPLE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    items: int
    choices: int  # 1 = a log-likelihood task (one continuation, predicted null)
    metrics: tuple[str, ...]


TASKS = (
    Task("arc_challenge", 1172, 4, ("acc", "acc_norm")),
    Task("arc_easy", 2376, 4, ("acc", "acc_norm")),
    Task("blimp_anaphor_gender_agreement", 1000, 2, ("acc",)),
    Task("crows_pairs_english_gender", 262, 2, ("likelihood_diff", "pct_stereotype")),
    Task("lambada_openai", 5153, 1, ("perplexity", "acc")),
    Task("logiqa", 651, 4, ("acc", "acc_norm")),
    Task("piqa", 1838, 2, ("acc", "acc_norm")),
    Task("sciq", 1000, 4, ("acc", "acc_norm")),
    Task("simple_cooccurrence_bias", 351, 4, ("likelihood_diff", "pct_male_preferred")),
    Task("winogrande", 1267, 2, ("acc",)),
    Task("wsc", 273, 2, ("acc",)),
)
#: Sorted by name: the order Lake.write sorts eval_samples into anyway.
assert [t.name for t in TASKS] == sorted(t.name for t in TASKS)


@dataclass(slots=True)
class Spec:
    """What to write; the defaults are the full suite."""

    seed: int = 0
    sizes: tuple[str, ...] = SIZES
    seeds: tuple[int, ...] = SEEDS
    max_step: int | None = None
    item_fraction: float = 1.0
    _items: dict = field(default_factory=dict, repr=False)

    @property
    def all_steps(self) -> tuple[int, ...]:
        return tuple(s for s in ALL_STEPS if self.max_step is None or s <= self.max_step)

    @property
    def eval_steps(self) -> tuple[int, ...]:
        return tuple(s for s in EVAL_STEPS if self.max_step is None or s <= self.max_step)

    def n_items(self, task: Task) -> int:
        return max(4, round(task.items * self.item_fraction))

    def task_items(self, task: Task) -> dict:
        """Per-item constants of a task: shared by every checkpoint."""
        if task.name not in self._items:
            rng = _rng(self.seed, "items", task.name)
            n = self.n_items(task)
            self._items[task.name] = {
                "gold": rng.integers(0, task.choices, n).astype(np.int32),
                "difficulty": rng.normal(0.0, 1.0, n),
                "bias": rng.normal(0.0, 1.0, (n, task.choices)),
                "doc_hash": pa.array([hashlib.sha256(f"{task.name}/{i}".encode()).hexdigest() for i in range(n)]),
            }
        return self._items[task.name]


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def extraction_id(spec: Spec, size: str, seed: int, step: int, attempt: int = 0) -> str:
    """A valid, deterministic, time-sortable id (later attempts sort later)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    when = base + timedelta(
        days=attempt, seconds=SIZES.index(size) * 3_000_000 + seed * 200_000 + ALL_STEPS.index(step)
    )
    token = hashlib.sha256(f"{spec.seed}/{size}/{seed}/{step}/{attempt}".encode()).hexdigest()[:8]
    return synthetic.extraction_id(when, token)


def _progress(step: int) -> float:
    """Training progress in [0, 1]: log-scaled, as Pythia's metrics move."""
    return float(np.log1p(step) / np.log1p(ALL_STEPS[-1]))


# -- eval_samples and eval_results ------------------------------------------------


def eval_tables(spec: Spec, size: str, seed: int, step: int, eid: str, variant: int = 0) -> tuple[pa.Table, pa.Table]:
    """(eval_samples, eval_results) of one checkpoint. ``variant`` > 0 gives a
    re-extraction with other checkpoint noise (the same run, a different result)."""
    progress = _progress(step)
    margin_scale = SKILL[size] * progress
    samples, results = [], []
    evaluated_at = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(
        seconds=SIZES.index(size) * 1_000_000 + seed * 50_000 + ALL_STEPS.index(step) * 100 + variant * 10
    )
    for task in TASKS:
        items = spec.task_items(task)
        n, c = len(items["gold"]), task.choices
        run_rng = _rng(spec.seed, "run", size, seed, task.name)
        point_rng = _rng(spec.seed, "checkpoint", size, seed, step, task.name, variant)
        # shared item/choice bias + this run's own preference + checkpoint noise,
        # the noise shrinking as training settles; the gold choice gains with training
        noise = (1.0 - 0.6 * progress) * point_rng.normal(0.0, 1.0, (n, c))
        scores = 0.8 * items["bias"] + 0.6 * run_rng.normal(0.0, 1.0, (n, c)) + noise
        rows = np.arange(n)
        if c > 1:
            scores[rows, items["gold"]] += margin_scale * (1.5 - 0.5 * items["difficulty"])
            loglik = -2.0 - 5.0 * (1.0 - progress) + scores  # plausible magnitudes
            predicted = np.argmax(loglik, axis=1).astype(np.int32)
            # acc_norm: the argmax after a per-choice length normalisation
            normed = loglik / (1.0 + 0.1 * np.arange(1, c + 1))
            predicted_norm = np.argmax(normed, axis=1)
            correct = (predicted == items["gold"]).astype(float)
            greedy = point_rng.random((n, c)) < 0.1 + 0.5 * progress
            metric_values = {
                "acc": correct,
                "acc_norm": (predicted_norm == items["gold"]).astype(float),
                "likelihood_diff": np.abs(loglik[:, 0] - loglik[:, 1]),
                "pct_stereotype": (predicted == 0).astype(float),
                "pct_male_preferred": (predicted >= 2).astype(float),
            }
            target_index = pa.array(items["gold"], pa.int32())
            target = pa.array(items["gold"].astype(str))
            predicted_array = pa.array(predicted, pa.int32())
            flat_ll = loglik.reshape(-1)
        else:
            # one continuation: greedy (acc 1) when its margin beats a threshold
            margin = scores[:, 0] + margin_scale * (1.5 - 0.5 * items["difficulty"])
            is_greedy = margin > 1.5
            loglik = -(8.0 * (1.0 - progress) + 1.0) - np.abs(point_rng.normal(0, 1, n)) + 0.5 * margin
            correct = is_greedy.astype(float)
            greedy = is_greedy.reshape(n, 1)
            metric_values = {"acc": correct, "perplexity": np.exp(-loglik)}
            target_index = pa.nulls(n, pa.int32())
            target = pa.array(np.full(n, " word"))
            predicted_array = pa.nulls(n, pa.int32())
            flat_ll = loglik
        offsets = pa.array(np.arange(0, n * c + 1, c, dtype=np.int32))
        names = list(task.metrics)
        k = len(names)
        metric_keys = pa.array(np.tile(np.array(names, dtype=object), n), pa.string())
        metric_items = pa.array(np.column_stack([metric_values[m] for m in names]).reshape(-1))
        samples.append(
            pa.table(
                {
                    "extraction_id": pa.repeat(pa.scalar(eid), n),
                    "task": pa.repeat(pa.scalar(task.name), n),
                    "filter": pa.repeat(pa.scalar("none"), n),
                    "num_fewshot": pa.repeat(pa.scalar(0, pa.int32()), n),
                    "doc_id": pa.array(rows, pa.int64()),
                    "doc_hash": items["doc_hash"],
                    "target": target,
                    "target_index": target_index,
                    "choice_loglikelihoods": pa.ListArray.from_arrays(offsets, pa.array(flat_ll)),
                    "choice_is_greedy": pa.ListArray.from_arrays(offsets, pa.array(greedy.reshape(-1))),
                    "predicted": predicted_array,
                    "metrics": pa.MapArray.from_arrays(
                        pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), metric_keys, metric_items
                    ),
                }
            )
        )
        for metric in names:
            values = metric_values[metric]
            mean = float(values.mean())
            stderr = float(values.std(ddof=1) / np.sqrt(n)) if metric != "perplexity" else None
            results.append((eid, task.name, metric, "none", mean, stderr, n, 0, "1.0", "0.4.13", evaluated_at))
    results_table = pa.Table.from_pylist(
        [dict(zip(EVAL_RESULTS.schema.names, row, strict=True)) for row in results],
        schema=EVAL_RESULTS.schema,
    )
    return pa.concat_tables(samples), results_table


# -- weight_stats -----------------------------------------------------------------


def _matrices(size: str) -> list[tuple[str, str, int | None, int, int]]:
    """(tensor_name, kind, layer, n_rows, n_cols) as the extractor names them."""
    layers, width = ARCHITECTURE[size]
    out = [("gpt_neox.embed_in.weight", "embed", None, VOCABULARY, width)]
    for layer in range(layers):
        prefix = f"gpt_neox.layers.{layer}"
        for part in ("q", "k", "v"):
            out.append((f"{prefix}.attention.query_key_value.weight[{part}]", part, layer, width, width))
        out.append((f"{prefix}.attention.dense.weight", "attn_out", layer, width, width))
        out.append((f"{prefix}.mlp.dense_h_to_4h.weight", "ffn_in", layer, 4 * width, width))
        out.append((f"{prefix}.mlp.dense_4h_to_h.weight", "ffn_out", layer, width, 4 * width))
    out.append(("embed_out.weight", "unembed", None, VOCABULARY, width))
    return sorted(out)


def weight_table(spec: Spec, size: str, seed: int, step: int, eid: str) -> pa.Table:
    matrices = _matrices(size)
    m = len(matrices)
    progress = _progress(step)
    run_rng = _rng(spec.seed, "weights-run", size, seed)
    rng = _rng(spec.seed, "weights", size, seed, step)
    drift = 1.0 + run_rng.normal(0.0, 0.03) + run_rng.normal(0.0, 0.05, m) * progress
    rows = np.array([r for _, _, _, r, _ in matrices], dtype=float)
    cols = np.array([c for _, _, _, _, c in matrices], dtype=float)
    std0 = 0.02 * (1.0 + rng.normal(0.0, 0.002, m))
    std = std0 * (1.0 + 1.5 * progress * drift)
    l2 = std * np.sqrt(rows * cols)  # Frobenius
    l1 = l2 * np.sqrt(rows * cols) * np.sqrt(2 / np.pi)
    spectral = std * (np.sqrt(rows) + np.sqrt(cols)) * (1.0 + 2.0 * progress * drift)
    square = rows == cols
    trace = np.where(square, rng.normal(0.0, 1.0, m) * std * np.sqrt(rows) + 0.3 * progress * drift, np.nan)
    sv_mean = l2 / np.sqrt(np.minimum(rows, cols)) * (1.0 - 0.1 * progress)
    sv_var = np.maximum(spectral**2 / 10.0 - sv_mean**2 * 0.01, 1e-12)
    mean = rng.normal(0.0, 1e-4, m) + 1e-3 * progress * (drift - 1.0)
    var = std**2
    sample = rng.normal(0.0, 1.0, (m, SAMPLE_SIZE)) * std[:, None]
    names = [t for t, _, _, _, _ in matrices]
    n_weights = float((rows * cols).sum())
    table = {
        "extraction_id": [eid] * (m + 2),
        "tensor_name": names + ["all_biases", "all_weights"],
        "kind": [k for _, k, _, _, _ in matrices] + ["all_biases", "all_weights"],
        "layer": [layer for _, _, layer, _, _ in matrices] + [None, None],
        "n_rows": [int(r) for r in rows] + [1, 1],
        "n_cols": [int(c) for c in cols] + [ARCHITECTURE[size][1] * 40, int(n_weights)],
        "l1": [*l1, None, None],
        "l2": [*l2, None, None],
        "trace": [None if np.isnan(t) else t for t in trace] + [None, None],
        "spectral": [*spectral, None, None],
        "code_sparsity": [*(l1 / l2), None, None],
        "computational_sparsity": [None if np.isnan(t) else t / s for t, s in zip(trace, spectral, strict=True)]
        + [None, None],
        "sv_mean": [*sv_mean, None, None],
        "sv_var": [*sv_var, None, None],
        "mean": [*mean, 0.01 * progress * drift.mean(), float(mean.mean())],
        "median": [None] * m + [0.0, float(np.median(mean))],
        "var": [*var, 1e-3 * (1 + progress), float(var.mean())],
        "weight_hash": [hashlib.sha256(f"{eid}/{t}".encode()).hexdigest()[:16] for t in names] + [None, None],
        "value_sample": [*sample.astype(np.float32), None, None],
    }
    if "nonfinite" in WEIGHT_STATS.schema.names:  # helper D's column, when present
        table["nonfinite"] = [0] * (m + 2)
    return pa.Table.from_pydict(table, schema=WEIGHT_STATS.schema)


# -- checkpoints and grid ---------------------------------------------------------


def write_checkpoint(
    lake: Lake,
    spec: Spec,
    size: str,
    seed: int,
    step: int,
    attempt: int = 0,
    extractors: tuple[str, ...] = ("evals", "weight_stats"),
) -> int:
    """Write one checkpoint's partitions, then its manifest (as the runner does);
    returns the eval_samples rows written. ``attempt`` > 0 is a re-extraction: a
    later extraction id with other values, which supersedes the earlier one."""
    eid = extraction_id(spec, size, seed, step, attempt)
    tables: dict = {}
    written: dict[str, dict[str, int]] = {}
    if "evals" in extractors and step in spec.eval_steps:
        tables[EVAL_SAMPLES], tables[EVAL_RESULTS] = eval_tables(spec, size, seed, step, eid, variant=attempt)
        written["evals"] = {dataset.name: tables[dataset].num_rows for dataset in (EVAL_RESULTS, EVAL_SAMPLES)}
    if "weight_stats" in extractors:
        tables[WEIGHT_STATS] = weight_table(spec, size, seed, step, eid)
        written["weight_stats"] = {WEIGHT_STATS.name: tables[WEIGHT_STATS].num_rows}
    if written:
        repo = f"EleutherAI/pythia-{size}" + (f"-seed{seed}" if seed else "")
        SyntheticLake(lake).write_extraction(
            synthetic.checkpoint_partition(SUITE, size, seed, step), eid, tables, sorted(written),
            rows=written, source=f"{repo}@step{step}", device="cuda:0", duration_s=30.0,
        )  # fmt: skip
    return written.get("evals", {}).get(EVAL_SAMPLES.name, 0)


def write_grid(lake: Lake, spec: Spec) -> None:
    rows = []
    for size in spec.sizes:
        for seed in spec.seeds:
            repo = f"EleutherAI/pythia-{size}" + (f"-seed{seed}" if seed else "")
            for extractor, steps in (("evals", spec.eval_steps), ("weight_stats", spec.all_steps)):
                rows += [
                    {"extraction_id": "", "model_size": size, "seed": seed, "step": step,
                     "extractor": extractor, "source": f"{repo}@step{step}"}
                    for step in steps
                ]  # fmt: skip
    eid = extraction_id(spec, spec.sizes[0], 0, 0, attempt=0)
    for row in rows:
        row["extraction_id"] = eid
    lake.write(SUITE_GRID, {"suite": SUITE}, eid, pa.Table.from_pylist(rows, schema=SUITE_GRID.schema))


def write_lake(lake: Lake, spec: Spec, progress: bool = True, skip: set | None = None) -> int:
    """Write the whole synthetic lake; returns the eval_samples rows written.
    ``skip`` = {(size, seed, step)} checkpoints to leave out (to add later)."""
    from tqdm import tqdm

    write_grid(lake, spec)
    checkpoints = [
        (size, seed, step)
        for size in spec.sizes
        for seed in spec.seeds
        for step in spec.all_steps
        if (size, seed, step) not in (skip or set())
    ]
    total = 0
    bar = tqdm(checkpoints, disable=not progress, unit="ckpt", mininterval=2.0, file=sys.stderr)
    for size, seed, step in bar:
        total += write_checkpoint(lake, spec, size, seed, step)
        bar.set_postfix(eval_samples=f"{total:,}", refresh=False)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the lake folder to write (must be empty or new)")
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="share of the 10 seeds per size to write (rounded up, at least 2): "
                        "0.25 → 3 seeds, 0.5 → 5")  # fmt: skip
    parser.add_argument("--item-fraction", type=float, default=1.0, help="share of each task's items (at least 4)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated model sizes")
    parser.add_argument("--max-step", type=int, default=None, help="leave out checkpoints after this step")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1 or not 0 < args.item_fraction <= 1:
        parser.error("--fraction and --item-fraction must be in (0, 1]")
    sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip())
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty; the lake is append-only, give a new folder")
    n_seeds = max(2, int(np.ceil(len(SEEDS) * args.fraction - 1e-9)))
    spec = Spec(seed=args.seed, sizes=sizes, seeds=SEEDS[:n_seeds], max_step=args.max_step,
                item_fraction=args.item_fraction)  # fmt: skip
    started = time.perf_counter()
    total = write_lake(Lake(args.out), spec, progress=not args.quiet)
    print(
        f"wrote {args.out}: {len(sizes)} sizes × {n_seeds} seeds × {len(spec.all_steps)} steps "
        f"({len(spec.eval_steps)} evaluated), {total:,} eval_samples rows in "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
