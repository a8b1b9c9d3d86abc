"""Several processes on one suite: `torchrun` (what `accelerate launch` runs) with
two CPU processes on the micro suite, and SLURM-style shards planned at different
times: every (checkpoint, extractor) pair is done exactly once."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from polypythias.extract.micro.train import TrainConfig, train_suite
from polypythias.extract.runner import build_extractors, plan, run_extraction
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST

pytestmark = pytest.mark.slow


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


def test_workers_share_the_suite_and_extract_side_by_side(micro, tmp_path):
    lake = tmp_path / "lake"
    polypythias = Path(sys.executable).with_name("polypythias")
    result = subprocess.run(
        [str(polypythias), "extract", "--suite", str(micro), "--lake", str(lake), "--workers", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {(c.seed, c.step) for c in load_suite(micro).checkpoints_for("token_stats")}
    assert f"{len(expected)} checkpoints extracted" in result.stdout
    attempts = _attempts(Lake(lake))
    assert set(attempts) == {(*c, e) for c in expected for e in ("token_stats", "weight_stats")}
    assert all(statuses == ["success"] for statuses in attempts.values())
    # One process runs its extractors one after another; two workers overlap in time.
    runs = sorted((row["started_at"], row["finished_at"]) for row in Lake(lake).read(MANIFEST).to_pylist())
    assert any(later[0] < earlier[1] for earlier, later in zip(runs, runs[1:])), runs


def test_workers_are_refused_under_several_accelerate_processes(micro, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    polypythias = Path(sys.executable).with_name("polypythias")
    result = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--no-python", str(polypythias), "extract",
         "--suite", str(micro), "--lake", str(tmp_path / "lake"), "--workers", "2", "--no-progress"],
        env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "accelerate launch --num_processes" in result.stdout + result.stderr
    assert not (tmp_path / "lake/manifest").exists()  # refused before any work


def test_a_killed_worker_fails_the_job_loudly_and_the_rerun_finishes(micro, tmp_path):
    lake = tmp_path / "lake"
    polypythias = Path(sys.executable).with_name("polypythias")
    command = [str(polypythias), "extract", "--suite", str(micro), "--lake", str(lake),
               "--workers", "2", "--no-progress"]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    manifest = lake / "manifest"
    deadline = time.monotonic() + 120
    while not (manifest.is_dir() and any(manifest.rglob("*.parquet"))):
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    workers = [pid for pid in _children(job.pid) if "spawn_main" in _cmdline(pid)]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    output = job.communicate(timeout=300)[0]

    assert job.returncode == 2  # an error of the job, not a failed extraction
    assert "extraction worker" in output and "died (exit code -9)" in output and "run the job again" in output
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    expected = {(c.seed, c.step) for c in load_suite(micro).checkpoints_for("token_stats")}
    attempts = _attempts(Lake(lake))
    assert set(attempts) == {(*c, e) for c in expected for e in ("token_stats", "weight_stats")}
    assert all(statuses == ["success"] for statuses in attempts.values())


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir() for child in (task / "children").read_text().split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
