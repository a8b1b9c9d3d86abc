"""Torch's thread pools sized from the CPUs a process may really use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from polypythias.extract.threads import THREADS_ENV, cgroup_cpu_quota, thread_count, usable_cpus


def _cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(proc_line + "\n")
    return root, proc


def test_cgroup_v2_quota_caps_the_affinity(tmp_path):
    root, proc = _cgroup(
        tmp_path,
        "0::/job/step",
        {
            "job/cpu.max": "250000 100000\n",  # 2.5 CPUs for the job
            "job/step/cpu.max": "max 100000\n",  # no limit of its own
        },
    )
    assert cgroup_cpu_quota(root, proc) == 2.5
    assert usable_cpus(set(range(16)), root, proc) == 3  # rounded up
    assert usable_cpus({0, 1}, root, proc) == 2  # the affinity is smaller


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    root, proc = _cgroup(
        tmp_path,
        "4:cpu,cpuacct:/slurm/job7",
        {
            "cpu,cpuacct/slurm/job7/cpu.cfs_quota_us": "50000\n",
            "cpu,cpuacct/slurm/job7/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_quota(root, proc) == 0.5
    assert usable_cpus(set(range(8)), root, proc) == 1
    unlimited, proc = _cgroup(
        tmp_path / "other",
        "4:cpu,cpuacct:/",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_quota(unlimited, proc) is None
    assert usable_cpus({0, 1, 2}, unlimited, proc) == 3


def test_the_override_wins_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert thread_count() == 3 and thread_count(5) == 5
    monkeypatch.setenv(THREADS_ENV, "lots")
    with pytest.raises(ValueError, match=THREADS_ENV):
        thread_count()


def test_extract_sets_the_pools_before_torch_loads():
    """In a fresh process, as `polypythias extract` runs it: OpenMP is told to let idle
    threads sleep, and both torch pools get the usable CPUs (here: an override)."""
    code = (
        "import os, sys\n"
        "from polypythias.extract.threads import configure_threads\n"
        "assert 'torch' not in sys.modules\n"
        "n = configure_threads(3)\n"
        "import torch\n"
        "print(n, torch.get_num_threads(), torch.get_num_interop_threads(), os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OMP_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["3", "3", "3", "PASSIVE"]
