"""Torch's CPU threads sized to the CPUs this process may really use.

``os.cpu_count()`` counts the machine's cores, not this process's share of them: a
SLURM job, a container or a cron job on a shared node is often limited to fewer,
by CPU affinity (``taskset``, cpusets) or by a cgroup CPU quota (``cpu.max`` in
cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1). Torch sizes its
intra-op pool from the cores it sees; with more threads than CPUs, and OpenMP
threads that spin while they wait for work, a process next to other busy ones
slows down far more than its share would say (measured here: 3–10× beside two
busy processes on two cores, where a fair share is about 2×).

``configure_threads`` runs before torch is imported where it can: it tells OpenMP
to let idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``, read when the OpenMP
runtime loads) and sets torch's intra-op and inter-op pools to the usable CPUs
(or to ``POLYPYTHIAS_EXTRACT_THREADS`` / ``--threads``). An explicit
``OMP_WAIT_POLICY`` or ``OMP_NUM_THREADS`` in the environment is left as it is.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

#: Environment variable that overrides the thread count (``--threads`` sets it too).
THREADS_ENV = "POLYPYTHIAS_EXTRACT_THREADS"
_CGROUP = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(affinity: set[int] | None = None, cgroup_root: Path = _CGROUP, proc_cgroup: Path = _PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (rounded
    up: a quota of 1.5 CPUs gets 2 threads). At least 1."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cpus = max(1, len(affinity))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def cgroup_cpu_quota(root: Path = _CGROUP, proc_cgroup: Path = _PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (None: no quota, or unknown).

    cgroup v2: ``cpu.max`` ("max 100000" or "150000 100000") of this process's
    group and every group above it, the smallest one counting; v1:
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: no quota).
    """
    quotas = [quota for folder in _cgroup_folders(root, proc_cgroup) if (quota := _read_quota(folder)) is not None]
    return min(quotas) if quotas else None


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup folder and the ones above it, for v2 and v1 (cpu controller)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return [root]
    folders = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy (under unified/ in a hybrid setup)
            base = root / "unified" if (root / "unified").is_dir() else root
        elif "cpu" in controllers.split(","):
            base = next((root / name for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu") if (root / name).is_dir()), None)
            if base is None:
                continue
        else:
            continue
        relative = Path(path.lstrip("/"))
        # Inside a container the group's own path is often not mounted: the root is it.
        for candidate in [relative, *relative.parents]:
            folders.append(base / candidate)
    return folders


def _read_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def thread_count(override: int | None = None) -> int:
    """The thread count to use: `override`, else ``POLYPYTHIAS_EXTRACT_THREADS``, else
    the usable CPUs."""
    if override is not None:
        return override
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV}={value!r}: give a positive integer")
        return int(value)
    return usable_cpus()


def configure_threads(override: int | None = None) -> int:
    """Size torch's pools (and OpenMP's) for this process; returns the thread count.

    Call it before torch is imported when possible: OpenMP reads its wait policy
    and thread count once, when it loads. Torch's inter-op pool can only be sized
    before its first use; if it is already running it stays as it is.
    """
    threads = thread_count(override)
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already started (an earlier parallel region): keep it
        pass
    return threads
