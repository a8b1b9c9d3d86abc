"""Claims: which job is extracting which checkpoint, so concurrent jobs never share work.

A claim is a small JSON file, ``<lake>/_claims/<suite>/<model_size>/<seed>/<step>.json``,
created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFS v3+, the
filesystems a cluster's lake lives on). Its holder keeps it fresh: a heartbeat thread
touches it every quarter lease, and the file's modification time is the heartbeat.
Another job treats a claim as free when

- its lease expired: no heartbeat for ``lease_s`` seconds (a job on another node was
  killed, or the node died), or
- its holder ran on this host and that process is gone (killed with -9: taken over
  at once, without waiting for the lease).

Taking over renames the stale file away first (rename is atomic: of two jobs taking
over at once, one wins) and checks that what it moved is the stale claim it judged.
A job stopped for longer than its lease (SIGSTOP, a frozen node) can lose its claim
while it still works; then two jobs write the same checkpoint. That costs time,
never data: the lake is append-only and staging keeps the latest extraction.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from polypythias.extract.suite import CheckpointId
from polypythias.warehouse.lake import Lake, LakeError, validate_partition_value

log = logging.getLogger(__name__)

CLAIMS_DIR = "_claims"
DEFAULT_LEASE_S = 600.0
#: A job writes its claim's record right after creating the file: a claim file that
#: is still empty or unreadable after this long was left by a job killed in between
#: (or is garbage) and holds nothing.
UNREADABLE_CLAIM_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim this job holds."""

    path: Path
    token: str
    #: Whether it was taken over from a dead or silent job (which may have left
    #: unfinished files behind).
    took_over: bool = False


def _process_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot), None when it is gone.

    Compared along with the pid, it tells a dead holder from a new process that
    reuses its pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2, in parentheses) may contain spaces.
    return stat.rpartition(")")[2].split()[19]


class ClaimStore:
    """The claims of one suite's checkpoints in one lake."""

    def __init__(self, lake: Lake, suite: str, lease_s: float = DEFAULT_LEASE_S) -> None:
        if not lake.is_local:
            raise LakeError(
                f"claims need a POSIX filesystem (local or NFS); {lake.uri} is an object "
                "store, whose jobs --shard keeps apart"
            )
        if lease_s <= 0:
            raise LakeError(f"the lease must be positive, got {lease_s} s")
        self.lake = lake
        self.suite = suite
        self.root = Path(lake.root) / CLAIMS_DIR / validate_partition_value("suite", suite)
        self.lease_s = lease_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._held: dict[Path, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def path(self, checkpoint: CheckpointId) -> Path:
        parts = checkpoint.partition()
        return (
            self.root
            / validate_partition_value("model_size", parts["model_size"])
            / validate_partition_value("seed", parts["seed"])
            / f"{validate_partition_value('step', parts['step'])}.json"
        )

    # -- claiming -------------------------------------------------------------

    def acquire(self, checkpoint: CheckpointId) -> Claim | None:
        """Claim the checkpoint, or None when another live job holds it."""
        path = self.path(checkpoint)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LakeError(f"cannot create the claims folder {path.parent}: {error}") from error
        if path.is_dir():
            raise LakeError(f"the claim {path} is a folder, not a claim file: remove it")
        took_over = False
        for _ in range(3):  # a free claim can only be lost to a racing job so often
            claim = self._create(path, took_over)
            if claim:
                return claim
            seen = self._read(path)
            if seen is None:
                continue  # released or taken over meanwhile: try again
            if not self._is_stale(seen):
                return None
            self._take_over(path, seen)
            took_over = True
        return None

    def release(self, claim: Claim) -> None:
        """Give the claim up (after the checkpoint's manifest rows are written)."""
        with self._lock:
            self._held.pop(claim.path, None)
        current = self._read(claim.path)
        if current and current["token"] == claim.token:
            claim.path.unlink(missing_ok=True)

    def _create(self, path: Path, took_over: bool) -> Claim | None:
        token = secrets.token_hex(8)
        record = {
            "token": token,
            "host": self.host,
            "pid": self.pid,
            "process_start": _process_start(self.pid),
            "lease_s": self.lease_s,
            "claimed_at": time.time(),
        }
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        except OSError as error:
            raise LakeError(f"cannot write the claim {path}: {error}") from error
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(record, file)
        except OSError as error:
            path.unlink(missing_ok=True)
            raise LakeError(f"cannot write the claim {path}: {error}") from error
        claim = Claim(path, token, took_over)
        with self._lock:
            self._held[path] = claim
        return claim

    @staticmethod
    def _read(path: Path) -> dict | None:
        """The claim's record with its heartbeat, None when there is no claim."""
        try:
            heartbeat = path.stat().st_mtime
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a claim record")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Being written right now, or left empty by a job killed while writing
            # it, or garbage: judge it by its age alone.
            try:
                heartbeat = path.stat().st_mtime
            except FileNotFoundError:
                return None
            record = {"token": None, "unreadable": True}
        record["heartbeat"] = heartbeat
        return record

    def _is_stale(self, record: dict) -> bool:
        age = time.time() - record["heartbeat"]
        if record.get("unreadable"):
            return age > UNREADABLE_CLAIM_GRACE_S
        try:
            lease = float(record.get("lease_s") or self.lease_s)
        except (TypeError, ValueError):
            lease = self.lease_s
        if age > lease:
            return True
        if record.get("host") == self.host and isinstance(record.get("pid"), int):
            start = _process_start(record["pid"])
            return start is None or start != record.get("process_start")
        return False

    def _take_over(self, path: Path, seen: dict) -> None:
        """Move the stale claim away; restore it if what moved was a fresh one."""
        moved = path.with_name(f".{path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return
        current = self._read(moved)
        if current is not None and current.get("token") != seen.get("token"):
            # Another job took it over between our look and our rename: put its
            # claim back (link refuses to overwrite a third job's).
            try:
                os.link(moved, path)
            except FileExistsError:
                log.warning("claim %s changed hands twice at once; one job may redo it", path)
        else:
            log.info("taking over the stale claim %s (%s pid %s)", path, seen.get("host"), seen.get("pid"))
        moved.unlink(missing_ok=True)

    # -- heartbeat ------------------------------------------------------------

    def sweep(self) -> int:
        """Delete the suite's stale claims (of jobs that died after their checkpoint's
        manifest rows were written, so no later job claims that checkpoint again) and
        the renamed leftovers of a take-over that was killed; returns how many."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in sorted(self.root.glob("*/*/*.json")):
            seen = self._read(path) if path.is_file() else None
            if seen is None or not self._is_stale(seen):
                continue
            size, seed, step = path.parent.parent.name, path.parent.name, path.stem
            if not (seed.isdigit() and step.isdigit()):
                continue
            # Claimed like any checkpoint, so no live job writes there meanwhile.
            checkpoint = CheckpointId(self.suite, size, int(seed), int(step))
            try:
                claim = self.acquire(checkpoint)
            except LakeError:  # a folder no job would have made: not a claim
                continue
            if claim:
                if claim.took_over:
                    self.lake.discard_unfinished(checkpoint.partition())
                self.release(claim)
                removed += 1
        for leftover in self.root.rglob(".*.json.stale-*"):
            try:
                if time.time() - leftover.stat().st_mtime > UNREADABLE_CLAIM_GRACE_S:
                    leftover.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def __enter__(self) -> ClaimStore:
        self.sweep()
        self._heartbeat = threading.Thread(target=self._beat, name="claims-heartbeat", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._heartbeat:
            self._heartbeat.join()
        with self._lock:
            held = list(self._held.values())
        for claim in held:
            self.release(claim)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            with self._lock:
                held = list(self._held.values())
            for claim in held:
                current = self._read(claim.path)
                if current is None or current["token"] != claim.token:
                    log.warning("lost the claim %s to another job (lease expired)", claim.path)
                    with self._lock:
                        self._held.pop(claim.path, None)
                    continue
                try:
                    os.utime(claim.path)
                except OSError as error:
                    log.warning("cannot renew the claim %s: %s", claim.path, error)
