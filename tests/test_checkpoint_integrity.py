"""Checkpoint integrity: the weight_stats value samples and fct_checkpoint_integrity.

The samples are checked against the checkpoints' own tensors, the distance they
estimate against numpy's exact distance, and the mart on a tiny micro suite with a
copied, a deleted and a swapped-in checkpoint against the truth of what was done
to it (and against numpy's ratios on the lake's samples).
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from transformers import GPTNeoXForCausalLM
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract.extractors import get_extractor
from polypythias.extract.extractors.weight_stats import SAMPLE_SIZE, classify, sample_positions, split_qkv
from polypythias.extract.micro.train import TrainConfig, train_suite
from polypythias.extract.suite import CheckpointId, load_suite
from polypythias.warehouse.dbt import build
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import WEIGHT_STATS

pytestmark = pytest.mark.slow

SEEDS, TOTAL_STEPS = (0, 1, 2), 16
STEPS = [0, 1, 2, 4, 6, 8, 10, 12, 14, 16]  # Pythia-style for 16 steps, 8 linear
FACTOR = 2.5  # dbt var lineage_break_factor's default


# -- the micro suite ------------------------------------------------------------


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """200k × 3 seeds × 16 steps, trained by the product; its suite runs weight_stats only."""
    out = tmp_path_factory.mktemp("integrity") / "micro"
    config = TrainConfig(
        sizes=["200k"],
        seeds=list(SEEDS),
        total_steps=TOTAL_STEPS,
        corpus_docs=400,
        eval_docs=4,
        eval_task_items=4,
        workers=1,
    )
    assert config.checkpoint_steps == STEPS
    train_suite(config, out, progress=False)
    suite = yaml.safe_load((out / "suite.yaml").read_text())
    suite["extractors"] = {"weight_stats": {"steps": "all"}}
    (out / "suite.yaml").write_text(yaml.safe_dump(suite))
    return out


def _matrices(folder) -> dict[str, np.ndarray]:
    """A checkpoint's matrices as weight_stats names them (q, k, v split), float64.

    Named as the loaded model names its parameters (transformers may rename the
    file's, e.g. embed_out → lm_head)."""
    model = GPTNeoXForCausalLM.from_pretrained(folder)
    heads = model.config.num_attention_heads
    out = {}
    for name, parameter in model.named_parameters():
        found = classify(name)
        if found is None:
            continue
        tensor = parameter.detach()
        if found[0] == "qkv":
            for part, matrix in split_qkv(tensor, heads).items():
                out[f"{name}[{part}]"] = matrix.numpy().astype(np.float64)
        else:
            out[name] = tensor.numpy().astype(np.float64)
    return out


def _checkpoint(micro, seed, step):
    return _matrices(micro / "200k" / f"seed{seed}" / f"step{step}")


# -- sample positions -------------------------------------------------------------


def test_sample_positions_are_distinct_sorted_and_cover_small_matrices():
    positions = sample_positions("layers.0.mlp.dense_h_to_4h.weight", (256, 64))
    assert len(positions) == SAMPLE_SIZE == len(set(positions))
    assert positions == sorted(positions) and 0 <= positions[0] and positions[-1] < 256 * 64
    assert sample_positions("tiny", (5, 7)) == list(range(35))  # fewer values than m: all


def test_sample_positions_are_stable_across_processes_and_differ_across_tensors():
    names = [f"gpt_neox.layers.0.attention.query_key_value.weight[{p}]" for p in "qkv"]
    here = [sample_positions(name, (64, 64)) for name in names]
    code = (
        "import json; from polypythias.extract.extractors.weight_stats import sample_positions as s; "
        f"print(json.dumps([s(n, (64, 64)) for n in {names!r}]))"
    )
    # A fresh interpreter with another hash seed: Python's salted hash() would differ.
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(there.stdout) == here
    assert len({tuple(p) for p in here}) == 3  # q, k, v: same shape, other positions
    assert sample_positions(names[0], (32, 128)) != here[0]  # same name, other shape


def test_value_samples_are_the_checkpoints_values_at_the_positions_in_every_instance(micro):
    suite = load_suite(micro / "suite.yaml")
    from polypythias.extract.checkpoints import load_model

    checkpoint = CheckpointId(suite.name, "200k", 1, 8)
    model, _ = load_model(suite, checkpoint, torch.device("cpu"))
    tables = [
        get_extractor("weight_stats")(suite.extractor_options("weight_stats"), suite).run(
            model, None, checkpoint, torch.device("cpu")
        )["weight_stats"]
        for _ in range(2)
    ]
    assert tables[0]["value_sample"].to_pylist() == tables[1]["value_sample"].to_pylist()
    matrices = _checkpoint(micro, 1, 8)
    rows = {r["tensor_name"]: r for r in tables[0].to_pylist()}
    assert len(matrices) == 26  # 4 layers × (q, k, v, attn_out, ffn_in, ffn_out) + embed, unembed
    for name, matrix in matrices.items():
        expected = matrix.ravel()[sample_positions(name, matrix.shape)]
        np.testing.assert_array_equal(np.array(rows[name]["value_sample"]), expected)
    assert rows["all_weights"]["value_sample"] is None and rows["all_biases"]["value_sample"] is None


# -- the distance estimate -------------------------------------------------------


def _estimate(a, b, salt=""):
    """numel / m · Σ (a − b)² over each matrix's sample, summed: an estimate of d²."""
    total = 0.0
    for name in a:
        positions = sample_positions(name + salt, a[name].shape)
        diff = a[name].ravel()[positions] - b[name].ravel()[positions]
        total += a[name].size / len(positions) * (diff**2).sum()
    return total


def _estimate_sd(a, b):
    """The standard deviation of ``_estimate``'s d² over uniformly drawn positions
    (sampling m of N without replacement: N²/m · s² · (N − m)/(N − 1) per matrix)."""
    variance = 0.0
    for name in a:
        squares = ((a[name] - b[name]) ** 2).ravel()
        n, m = squares.size, min(SAMPLE_SIZE, squares.size)
        variance += n * n / m * squares.var() * (n - m) / max(n - 1, 1)
    return math.sqrt(variance)


def test_distance_estimate_is_unbiased_and_within_20_percent_on_real_checkpoints(micro):
    """Why 20%: with m = 64 the d² of one matrix is estimated to a relative sd of
    about √(2/64) ≈ 18% for Gaussian-like differences; 26 matrices of comparable
    weight bring d² to a few % (2.8–4.2% on these pairs), and d (a square root)
    halves it. A 20% error on d is at least 36% on d²; the exact sd of each pair's
    estimate is computed below from its true differences and 36% must be more than
    4 of them, so a failure is a bug, not bad luck."""
    pairs = [((seed, a), (seed, b)) for seed in SEEDS for a, b in itertools.pairwise(STEPS)]
    pairs += [((0, 16), (1, 16)), ((0, 4), (2, 12)), ((1, 0), (1, 16))]
    cache = {}

    def weights(key):
        if key not in cache:
            cache[key] = _checkpoint(micro, *key)
        return cache[key]

    for first, second in pairs:
        a, b = weights(first), weights(second)
        exact = sum(((a[n] - b[n]) ** 2).sum() for n in a)
        estimate = _estimate(a, b)
        assert abs(math.sqrt(estimate) / math.sqrt(exact) - 1) < 0.2, (first, second)
        assert _estimate_sd(a, b) / exact < 0.36 / 4
    # Unbiased: over 200 other draws of positions (salted names) the mean estimate of
    # d² is within 4 standard errors of the exact value.
    a, b = weights((0, 8)), weights((0, 10))
    exact = sum(((a[n] - b[n]) ** 2).sum() for n in a)
    draws = np.array([_estimate(a, b, salt=f"#{k}") for k in range(200)])
    assert abs(draws.mean() - exact) < 4 * _estimate_sd(a, b) / math.sqrt(len(draws))
    assert draws.std() == pytest.approx(_estimate_sd(a, b), rel=0.25)


# -- the mart on a damaged suite -------------------------------------------------


@pytest.fixture(scope="module")
def damaged(micro, tmp_path_factory):
    """Seed 0: step 6 copied over step 8 (duplicate), step 12 deleted (missing).
    Seed 1: step 12 replaced by seed 0's step 4 (lineage break and duplicate).
    Seed 2: untouched."""
    root = tmp_path_factory.mktemp("damaged")
    suite_dir = root / "micro"
    shutil.copytree(micro, suite_dir)
    runs = suite_dir / "200k"
    shutil.rmtree(runs / "seed0/step8")
    shutil.copytree(runs / "seed0/step6", runs / "seed0/step8")
    shutil.rmtree(runs / "seed0/step12")
    shutil.rmtree(runs / "seed1/step12")
    shutil.copytree(runs / "seed0/step4", runs / "seed1/step12")

    lake, db = root / "lake", root / "wh.duckdb"
    extracted = CliRunner().invoke(
        app, ["extract", "--suite", str(suite_dir / "suite.yaml"), "--lake", str(lake), "--no-progress"]
    )
    assert extracted.exit_code == 1, extracted.output  # the deleted checkpoint failed
    # Seed 0's step 0 as weight_stats version 1 wrote it: no value_sample column.
    (old_file,) = (lake / "weight_stats/suite=micro/model_size=200k/seed=0/step=0").glob("*.parquet")
    pq.write_table(pq.read_table(old_file).drop_columns(["value_sample"]), old_file)
    # Only this mart and what it reads; "cautious": no test of a model outside that.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        build(str(lake), db, select="+fct_checkpoint_integrity", unit_tests=False)
    with duckdb.connect(str(db), read_only=True) as con:
        frame = con.execute("select * from fct_checkpoint_integrity").fetchdf()
        unsampled = con.execute(
            "select distinct seed, step from staging.stg_lake__weight_stats "
            "where value_sample is null and not is_aggregate"
        ).fetchall()
    return {"findings": frame, "lake": Lake(str(lake)), "dir": suite_dir, "unsampled": unsampled}


def _keys(frame, finding):
    rows = frame[frame.finding == finding]
    return sorted((r.seed, r.step, r.other_seed, r.other_step) for r in rows.itertuples())


def test_files_without_value_sample_read_as_null(damaged):
    assert damaged["unsampled"] == [(0, 0)]
    rows = damaged["lake"].read(WEIGHT_STATS).to_pylist()
    old = [r for r in rows if (r["seed"], r["step"]) == (0, 0)]
    assert len(old) == 28 and all(r["value_sample"] is None for r in old)
    matrices = [r for r in rows if r["seed"] == 2 and not r["kind"].startswith("all_")]
    assert all(r["value_sample"] is not None for r in matrices)


def test_copied_checkpoints_are_duplicates_both_ways(damaged):
    assert _keys(damaged["findings"], "duplicate_weights") == [
        (0, 4, 1, 12),
        (0, 6, 0, 8),
        (0, 8, 0, 6),
        (1, 12, 0, 4),
    ]
    duplicates = damaged["findings"][damaged["findings"].finding == "duplicate_weights"]
    assert (duplicates.other_model_size == "200k").all()
    assert duplicates.detail.str.startswith("all 26 weight matrices are identical").all()


def test_deleted_checkpoint_is_missing_with_its_error(damaged):
    missing = damaged["findings"][damaged["findings"].finding == "missing_checkpoint"]
    assert [(r.seed, r.step) for r in missing.itertuples()] == [(0, 12)]
    assert "failed" in missing.detail.iloc[0] and "last error:" in missing.detail.iloc[0]
    assert missing.other_step.isna().all() and missing.score.isna().all()


def _lake_samples(lake):
    """seed → step → tensor → (sample, numel), from the lake's rows."""
    table = lake.read(WEIGHT_STATS).to_pylist()
    out = {}
    for row in table:
        if row["value_sample"] is not None:
            out.setdefault(row["seed"], {}).setdefault(row["step"], {})[row["tensor_name"]] = (
                np.array(row["value_sample"], dtype=np.float64),
                row["n_rows"] * row["n_cols"],
            )
    return out


def _distance(a, b):
    return math.sqrt(sum(n / len(x) * ((x - b[name][0]) ** 2).sum() for name, (x, n) in a.items()))


def test_swapped_in_checkpoint_breaks_lineage_and_nothing_else_does(damaged):
    findings = damaged["findings"]
    breaks = findings[findings.finding == "lineage_break"]
    assert [(r.seed, r.step, r.other_step) for r in breaks.itertuples()] == [(1, 12, 10)]
    # Untouched seed 2 has no finding at all; seed 0 only its duplicate and its gap.
    assert not (findings.seed == 2).any()
    # The score against numpy on the lake's samples: path ratio around seed 1 step 12.
    samples = _lake_samples(damaged["lake"])[1]
    d = {(p, q): _distance(samples[p], samples[q]) for p, q in ((10, 12), (12, 14), (10, 14), (8, 10))}
    path = (d[10, 12] + d[12, 14]) / d[10, 14]
    step = d[10, 12] / (d[8, 10] * 1.0)  # equal gaps: g = 1
    row = breaks.iloc[0]
    assert row.score == pytest.approx(max(path, step), rel=1e-9)
    assert row.threshold == FACTOR and row.score > FACTOR
    assert "× the direct distance" in row.detail


def test_normal_runs_stay_below_the_factor_at_every_step(damaged):
    """Every ratio of the untouched run, numpy on the lake's samples: the early,
    log-spaced steps included, with a margin below the factor."""
    samples = _lake_samples(damaged["lake"])[2]
    steps = sorted(samples)
    assert steps == STEPS
    ratios = []
    for i, step in enumerate(steps):
        if 0 < i < len(steps) - 1:
            p, n = steps[i - 1], steps[i + 1]
            ratios.append(
                (_distance(samples[p], samples[step]) + _distance(samples[step], samples[n]))
                / _distance(samples[p], samples[n])
            )
        if i >= 2:
            p, p2 = steps[i - 1], steps[i - 2]
            g = (step - p) / (p - p2)
            ratios.append(
                _distance(samples[p], samples[step]) / (_distance(samples[p2], samples[p]) * max(g, math.sqrt(g)))
            )
    assert max(ratios) < FACTOR / 1.5
