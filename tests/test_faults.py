"""Faults with nothing lost: kill -9 at random moments, a full disk, a read-only lake.

The jobs are real `polypythias extract` processes on a tiny suite of random
GPT-NeoX checkpoints (bench/faults.py builds it and holds the checks, which its
benchmark runs with more trials: `make bench-faults`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST

pytestmark = pytest.mark.slow


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "faults.py"
    spec = importlib.util.spec_from_file_location("bench_faults", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


faults = _load_bench()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny suite (2 seeds × 3 steps) and its uninterrupted extraction."""
    return faults.prepare(tmp_path_factory.mktemp("faults"))


# -- kill -9 ------------------------------------------------------------------


def test_the_checks_see_partial_files_and_missing_data(reference, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(reference.lake, lake)
    assert faults.inspect_lake(lake).problems == []
    token_files = sorted((lake / "token_stats").rglob("*.parquet"))
    # A file cut short where a reader can see it, a temporary file under a visible
    # name, and a recorded data file gone.
    whole = token_files[0].read_bytes()
    (token_files[0].parent / "20990101T000000000000Z-00000000.parquet").write_bytes(whole[: len(whole) // 2])
    (token_files[1].parent / "20990101T000000000000Z-00000001.parquet.tmp").write_bytes(whole)
    token_files[2].unlink()
    problems = faults.inspect_lake(lake).problems
    assert any("pyarrow cannot read" in p and "20990101T000000000000Z-00000000" in p for p in problems)
    assert any("not Parquet" in p and "00000001.parquet.tmp" in p for p in problems)
    assert any(token_files[2].name in p and "missing" in p for p in problems)
    assert any("DuckDB cannot read token_stats" in p for p in problems)
    (token_files[0].parent / "20990101T000000000000Z-00000000.parquet").unlink()
    assert faults.differences(faults.content(lake), reference.content) != []


def test_kill_9_at_random_moments_loses_nothing(reference, tmp_path):
    report = faults.run_trials(tmp_path, reference, trials=10, seed=6)
    summary = faults.summary(report)
    pairs = report.checkpoints * len(faults.DATA)
    assert len(report.trials) == 10
    kills = [t for t in report.trials if not t.finished]
    # The kills hit the job while it worked, not only before or after.
    assert kills and any(0 < t.done < pairs for t in kills), summary
    # No reader saw a partial or unreadable file, or a manifest row without its data.
    assert [p for t in report.trials for p in t.problems] == [], summary
    # Staging keeps exactly what the manifest records (no rows of killed attempts).
    assert report.staged is not None and report.staged[0] == report.staged[1], summary
    # The rerun completes and every lake equals the uninterrupted run's.
    assert report.rerun_exit == 0, summary
    assert report.not_done == [], summary
    assert report.problems == [], summary
    assert report.ok


# -- a full disk and a read-only lake -----------------------------------------


def _namespace_available(folder: Path) -> str | None:
    """Why a tmpfs cannot be mounted in a user namespace here (None: it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(folder))}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if probe.returncode:
        return f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"
    return None


def _pages(path: Path) -> int:
    """4 KiB pages a file takes on a tmpfs."""
    return -(-path.stat().st_size // 4096)


def _cramped_size_k(lake: Path) -> int:
    """KiB for a tmpfs that fills half-way through the third checkpoint's token_stats
    file: room for the suite grid, the first two checkpoints' files (written in the
    order of the grid), two claims held at once and half that file."""
    grid = sum(_pages(p) for p in (lake / "suite_grid").rglob("*.parquet"))
    per_checkpoint: dict[Path, int] = {}
    for name in ("token_stats", "weight_stats", "manifest"):
        for path in (lake / name).rglob("*.parquet"):
            key = path.parent.relative_to(lake / name)
            per_checkpoint[key] = per_checkpoint.get(key, 0) + _pages(path)
    first, second, third = sorted(per_checkpoint)[:3]
    tokens = _pages(next((lake / "token_stats" / third).glob("*.parquet")))
    assert tokens >= 16, "token_stats files too small to place the fill inside one"
    return 4 * (grid + per_checkpoint[first] + per_checkpoint[second] + 2 + tokens // 2)


def _snapshot(lake: Path) -> dict[str, str]:
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(lake.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cramped(reference, tmp_path_factory):
    """In one user and mount namespace: extract onto a tmpfs that fills up in the
    third checkpoint's data, then with the tmpfs read-only, then writable with room;
    after each job the lake is copied out (the tmpfs vanishes with the namespace)."""
    root = tmp_path_factory.mktemp("cramped")
    lake = root / "lake"
    lake.mkdir()
    reason = _namespace_available(lake)
    if reason:
        pytest.skip(reason)
    size_k = _cramped_size_k(reference.lake)
    extract = shlex.join(faults.extract_command(reference.suite, lake))
    steps = [("full", f"mount -t tmpfs -o size={size_k}k tmpfs {lake}"),
             ("read_only", f"mount -o remount,ro {lake}"),
             ("grown", f"mount -o remount,rw,size=64m {lake}")]  # fmt: skip
    script = "set -u\n" + "".join(
        f"{mount} || exit 90\n"
        f"{extract} >{root}/{name}.out 2>{root}/{name}.err; echo $? >{root}/{name}.rc\n"
        f"cp -a {lake} {root}/{name}\n"
        for name, mount in steps
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=faults.environment(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {
        name: {
            "rc": int((root / f"{name}.rc").read_text()),
            "stderr": (root / f"{name}.err").read_text(),
            "lake": root / name,
        }
        for name, _ in steps
    } | {"path": lake}


def _one_line_error(job: dict, lake: Path, reason: str) -> None:
    assert job["rc"] != 0
    assert "Traceback" not in job["stderr"]
    lines = job["stderr"].strip().splitlines()
    assert len(lines) == 1, f"the error spans {len(lines)} lines:\n{job['stderr']}"
    assert lines[0].startswith("error: ") and str(lake) in lines[0] and reason in lines[0], lines[0]


def test_a_full_disk_stops_the_job_with_a_clear_error(cramped):
    _one_line_error(cramped["full"], cramped["path"], "No space left on device")


def test_a_full_disk_leaves_only_complete_files_and_a_readable_manifest(reference, cramped):
    lake = cramped["full"]["lake"]
    state = faults.inspect_lake(lake)
    assert state.problems == []
    # Some work was done before the disk filled, not all of it.
    assert 0 < len(state.succeeded) < len(reference.content["manifest"])
    manifest = Lake(lake).read(MANIFEST)
    assert manifest.num_rows >= len(state.succeeded)


def test_a_full_disk_is_not_recorded_as_failed_checkpoints(cramped):
    # The lake is full for every checkpoint alike: the job stops at the first write
    # that finds no space (here a data file: the manifest rows before it fit)
    # instead of recording that checkpoint and each later one as failed.
    state = faults.inspect_lake(cramped["full"]["lake"])
    assert len(state.succeeded) == 2 * len(faults.DATA)
    manifest = Lake(cramped["full"]["lake"]).read(MANIFEST).to_pylist()
    assert [(r["step"], r["extractor"], r["error"]) for r in manifest if r["status"] != "success"] == []


def test_a_read_only_lake_stops_the_job_with_a_clear_error_and_changes_nothing(cramped):
    _one_line_error(cramped["read_only"], cramped["path"], "Read-only file system")
    assert _snapshot(cramped["read_only"]["lake"]) == _snapshot(cramped["full"]["lake"])


def test_the_rerun_with_room_completes_and_equals_an_uninterrupted_run(reference, cramped):
    grown = cramped["grown"]
    assert grown["rc"] == 0, grown["stderr"]
    assert faults.inspect_lake(grown["lake"]).problems == []
    assert faults.all_done(reference.suite, grown["lake"]) == []
    assert faults.differences(faults.content(grown["lake"]), reference.content) == []
