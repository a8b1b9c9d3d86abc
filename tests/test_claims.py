"""Claims with leases: concurrent jobs never do the same checkpoint twice, and a claim
left by a killed job is taken over (at once on this host, after the lease elsewhere)."""

import json
import os
import re
import subprocess
import sys
import time

import duckdb
import pytest

from polypythias.extract.claims import ClaimStore
from polypythias.extract.suite import CheckpointId
from polypythias.warehouse.lake import Lake, LakeError

CHECKPOINT = CheckpointId("tiny", "tiny", 0, 1)


def _store(tmp_path, lease_s=60.0) -> ClaimStore:
    return ClaimStore(Lake(tmp_path / "lake"), "tiny", lease_s)


def _foreign_claim(store: ClaimStore, **record) -> None:
    """A claim file as another job would have left it."""
    path = store.path(CHECKPOINT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "theirs", "lease_s": 60.0, **record}))


def test_a_claim_is_exclusive_until_released(tmp_path):
    first, second = _store(tmp_path), _store(tmp_path)
    claim = first.acquire(CHECKPOINT)
    assert claim is not None and claim.path == tmp_path / "lake/_claims/tiny/tiny/0/1.json"
    assert second.acquire(CHECKPOINT) is None  # held by a live process (this one)
    first.release(claim)
    assert not claim.path.exists()
    assert second.acquire(CHECKPOINT) is not None


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    store = _store(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    _foreign_claim(store, host=store.host, pid=int(dead.stdout), process_start="1")
    assert store.acquire(CHECKPOINT) is not None
    assert json.loads(store.path(CHECKPOINT).read_text())["pid"] == os.getpid()


def test_a_claim_from_another_host_is_taken_over_only_after_its_lease(tmp_path):
    store = _store(tmp_path)
    _foreign_claim(store, host="node-17", pid=1)
    assert store.acquire(CHECKPOINT) is None  # fresh: its job may be working
    expired = time.time() - 61
    os.utime(store.path(CHECKPOINT), (expired, expired))
    claim = store.acquire(CHECKPOINT)
    assert claim is not None
    assert json.loads(claim.path.read_text())["token"] == claim.token
    assert not list(claim.path.parent.glob(".*stale*"))  # the stale claim is gone


def test_an_unreadable_claim_is_judged_by_its_age(tmp_path):
    store = _store(tmp_path)
    path = store.path(CHECKPOINT)
    path.parent.mkdir(parents=True)
    path.write_text("")  # a job killed between creating and writing it
    assert store.acquire(CHECKPOINT) is None
    os.utime(path, (time.time() - 61,) * 2)
    assert store.acquire(CHECKPOINT) is not None


def test_the_heartbeat_keeps_a_held_claim_fresh_and_exit_releases_it(tmp_path):
    with _store(tmp_path, lease_s=0.4) as store:
        claim = store.acquire(CHECKPOINT)
        written = claim.path.stat().st_mtime
        time.sleep(0.5)
        assert claim.path.stat().st_mtime > written
    assert not claim.path.exists()


def test_claims_refuse_an_object_store_lake_and_a_bad_lease(tmp_path, monkeypatch):
    import polypythias.warehouse.lake as lake_module

    # pyarrow's in-memory object store, which `--lake` itself does not take
    monkeypatch.setattr(lake_module, "REMOTE_SCHEMES", (*lake_module.REMOTE_SCHEMES, "mock"))
    with pytest.raises(LakeError, match="POSIX"):
        ClaimStore(Lake("mock://bucket/lake"), "tiny")
    with pytest.raises(LakeError, match="lease"):
        ClaimStore(Lake(tmp_path), "tiny", lease_s=0)


@pytest.mark.slow
def test_two_jobs_started_at_once_share_the_suite_without_doing_anything_twice(tiny_suite, tmp_path):
    lake = tmp_path / "lake"
    command = [sys.executable, "-m", "polypythias", "extract", "--suite", str(tiny_suite),
               "--lake", str(lake), "--no-progress"]  # fmt: skip
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs

    per_pair = duckdb.sql(f"""
        select step, seed, extractor, count(*) as attempts, min(status) as status
        from read_parquet('{lake}/manifest/**/*.parquet', hive_partitioning = true)
        group by all
    """).fetchall()  # fmt: skip
    assert len(per_pair) == 12  # 2 seeds × 3 steps × 2 extractors
    assert {(attempts, status) for *_, attempts, status in per_pair} == {(1, "success")}
    assert not list((lake / "_claims").rglob("*.json"))  # every claim released
    extracted = [int(re.search(r"(\d+) checkpoints extracted", out).group(1)) for out in outputs]
    assert sum(extracted) == 6, outputs


def test_a_job_taking_over_a_dead_jobs_claim_removes_its_unfinished_files(tiny_suite, tmp_path):
    from polypythias.extract.runner import run_extraction
    from polypythias.extract.suite import load_suite

    suite, lake = load_suite(tiny_suite), Lake(tmp_path / "lake")
    checkpoint = CheckpointId("tiny", "tiny", 0, 1)
    store = ClaimStore(lake, "tiny")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = store.path(checkpoint)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"token": "theirs", "host": store.host, "pid": int(dead.stdout),
                                "process_start": "1", "lease_s": 60.0}))  # fmt: skip
    # What a job killed in the middle of writing this checkpoint leaves behind.
    partition = tmp_path / "lake/token_stats/suite=tiny/model_size=tiny/seed=0/step=1"
    partition.mkdir(parents=True)
    left = partition / ".20260101T000000000000Z-deadbeef.parquet.tmp"
    left.write_bytes(b"PAR1 half a file")
    untouched = tmp_path / "lake/token_stats/suite=tiny/model_size=tiny/seed=1/step=1/.x.parquet.tmp"
    untouched.parent.mkdir(parents=True)
    untouched.write_bytes(b"PAR1")  # no dead job's claim on seed 1: not touched

    summary = run_extraction(suite, lake, progress=False)

    assert summary.ok and summary.checkpoints == 6
    assert not left.exists()
    assert [p.name for p in partition.iterdir() if p.name.endswith(".parquet")]  # the new data
    assert untouched.exists()
