"""Several processes on one suite: `torchrun` (what `accelerate launch` runs) with
two CPU processes on the micro suite, and SLURM-style shards planned at different
times: every (checkpoint, extractor) pair is done exactly once."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from polypythias.extract.micro.train import TrainConfig, train_suite
from polypythias.extract.runner import build_extractors, plan, run_extraction
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """A micro suite of 200k × 2 seeds × 7 checkpoints; token_stats and weight_stats."""
    out = tmp_path_factory.mktemp("multiprocess") / "micro"
    config = TrainConfig(sizes=["200k"], seeds=[0, 1], total_steps=16, corpus_docs=200,
                         eval_docs=6, eval_task_items=4, workers=1)  # fmt: skip
    train_suite(config, out, progress=False)
    suite = yaml.safe_load((out / "suite.yaml").read_text())
    suite["extractors"] = {name: suite["extractors"][name] for name in ("token_stats", "weight_stats")}
    (out / "suite.yaml").write_text(yaml.safe_dump(suite))
    return out / "suite.yaml"


def _attempts(lake: Lake) -> dict[tuple, list[str]]:
    manifest = lake.read(MANIFEST).to_pylist()
    attempts: dict[tuple, list[str]] = {}
    for row in manifest:
        attempts.setdefault((row["seed"], row["step"], row["extractor"]), []).append(row["status"])
    return attempts


def test_two_torchrun_processes_split_the_micro_suite_exactly(micro, tmp_path):
    lake = tmp_path / "lake"
    torchrun = Path(sys.executable).with_name("torchrun")
    polypythias = Path(sys.executable).with_name("polypythias")
    result = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--no-python", str(polypythias), "extract",
         "--suite", str(micro), "--lake", str(lake), "--no-progress"],
        env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    expected = {(c.seed, c.step) for c in load_suite(micro).checkpoints_for("token_stats")}
    attempts = _attempts(Lake(lake))
    assert set(attempts) == {(*c, e) for c in expected for e in ("token_stats", "weight_stats")}
    assert all(statuses == ["success"] for statuses in attempts.values())
    # Both processes did a share: each prints its own summary line.
    shares = [int(n) for n in re.findall(r"(\d+) checkpoints extracted", result.stdout)]
    assert len(shares) == 2 and all(shares) and sum(shares) == len(expected), result.stdout


def test_shards_planned_at_different_times_still_cover_the_suite_once(micro, tmp_path):
    suite, lake = load_suite(micro), Lake(tmp_path / "lake")
    extractors = build_extractors(suite, None)
    # Shard 0 of 3 runs to the end before shards 1 and 2 even plan (an array job
    # whose tasks start minutes apart); the grid, not the pending work, is split.
    first = run_extraction(suite, lake, shard=(0, 3), progress=False)
    later = [plan(suite, lake, extractors, (i, 3)) for i in (1, 2)]
    assert not plan(suite, lake, extractors, (0, 3))
    for index in (1, 2):
        run_extraction(suite, lake, shard=(index, 3), progress=False)
    total = len(suite.checkpoints_for("token_stats"))
    assert first.checkpoints + sum(len(tasks) for tasks in later) == total
    attempts = _attempts(lake)
    assert len(attempts) == 2 * total
    assert all(statuses == ["success"] for statuses in attempts.values())
    manifest = lake.read(MANIFEST)
    assert pc.count_distinct(manifest["extraction_id"]).as_py() == total
