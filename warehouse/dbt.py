"""The dbt runner: `dbt build` of ``dbt_project/`` over the lake into the warehouse.

dbt runs in-process through ``dbtRunner``, on the project shipped in the package
(``dbt_project/`` of the source tree, ``polypythias/dbt_project/`` once installed).
The lake root reaches the project as the environment variable ``POLYPYTHIAS_LAKE``,
which the sources read with ``env_var()`` (a changed ``--vars`` makes dbt reparse the
whole project, ~8 s; a changed environment variable only the files that read it);
the warehouse path as ``POLYPYTHIAS_DB``, which ``dbt_project/profiles.yml`` reads.
dbt's ``target/`` and ``logs/`` go next to the warehouse (``<db dir>/.dbt/``), never
into the project folder, so an installed copy of the package never writes into itself. Nothing phones home: usage statistics
are off in ``dbt_project.yml`` and in the environment of the run.

A dataset the lake does not hold yet is read as empty by the project's
``lake_source`` macro, so the build works on a young lake.

DuckDB settings for lakes of tens of millions of item rows (``profiles.yml`` reads
them from the environment set here): spill files go to ``<db dir>/.dbt/tmp/spill``
next to the warehouse (a later build removes those of a build that was killed);
``POLYPYTHIAS_MEMORY_LIMIT`` (e.g. ``8GB``) caps DuckDB's memory (default: DuckDB's
own, 80% of RAM) and ``POLYPYTHIAS_THREADS`` its threads (default: every core);
insertion order is not preserved, so large inserts stream.
Builds are incremental where it pays (the item-level eval models; training-map
horizons whose input is unchanged keep their fits); ``full_refresh`` rebuilds them
from the whole lake and refits every horizon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: The dbt project: package data next to the package's stages (the same relative
#: place in a source tree and in an installed package).
PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"

#: The environment variable the sources read the lake root from …
LAKE_ENV = "POLYPYTHIAS_LAKE"
#: … and ``profiles.yml`` the warehouse path.
DB_ENV = "POLYPYTHIAS_DB"
#: … and DuckDB's spill folder, memory limit and threads from.
TEMP_ENV = "POLYPYTHIAS_DUCKDB_TEMP"
MEMORY_ENV = "POLYPYTHIAS_MEMORY_LIMIT"
THREADS_ENV = "POLYPYTHIAS_THREADS"

#: What DuckDB's memory_limit accepts: a number and a unit (KB … TB, KiB … TiB) or a percentage.
_MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|%)\s*$", re.IGNORECASE)

# Characters that cannot reach DuckDB's read_parquet safely through the sources'
# external_location template: a quote ends the SQL string, `$` starts a template
# placeholder.
_UNSAFE_IN_ROOT = ("'", "$")


@dataclass(frozen=True, slots=True)
class NodeFailure:
    """One dbt node that did not pass: its dbt id, its status and dbt's message."""

    node: str
    status: str
    message: str

    def __str__(self) -> str:
        return f"{self.node} [{self.status}]: {_one_line(self.message)}"


def _one_line(message: str, limit: int = 400) -> str:
    """dbt's message on one line: DuckDB's SQL excerpt (from "LINE n:") left out."""
    text = " ".join(message.split("\nLINE ")[0].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DbtBuildError(RuntimeError):
    """`dbt build` (or `dbt docs generate`) failed; the message lists each failure."""

    def __init__(self, command: str, failures: list[NodeFailure], detail: str | None = None, log: Path | None = None):
        self.command = command
        self.failures = failures
        lines = [f"dbt {command} failed"]
        if detail:
            lines[0] += f": {detail}"
        if log:
            lines[0] += f" (dbt's log: {log})"
        lines += [f"  - {failure}" for failure in failures]
        super().__init__("\n".join(lines))


def state_dir(db_path: Path) -> Path:
    """Where dbt's target/ and logs/ for the warehouse ``db_path`` go."""
    return Path(db_path).resolve().parent / ".dbt"


def build(
    lake_root: str,
    db_path: Path,
    docs: bool = False,
    select: str | None = None,
    verbose: bool = False,
    full_refresh: bool = False,
    variables: dict[str, object] | None = None,
    unit_tests: bool = True,
) -> Counter[str]:
    """Build every model and run every test (data and unit) over the lake.

    Returns how many nodes of each kind ran (``model``, ``test``, ``unit_test``);
    ``verbose`` streams dbt's own log instead of only its errors.

    ``full_refresh`` rebuilds the incremental models from the whole lake (they
    otherwise process only checkpoints added or re-extracted since the last build)
    and refits every training-map horizon (otherwise those whose input is unchanged
    keep their rows).
    ``variables`` overrides project vars (e.g. ``{"training_map_max_horizons": 5}``).
    ``select`` is a dbt selection (``"fct_loss_consistency+"``, space-separated for
    several). ``unit_tests=False`` leaves out dbt's unit tests, which check the SQL
    on fixed rows and not the lake (the test suite runs them once, not in every
    build). With ``docs``, also writes the docs site (``dbt docs generate``) into
    ``<db dir>/.dbt/target``. Raises DbtBuildError naming each failed node; the
    warehouse stays as it was before the build (it is built in a copy, renamed
    over it on success).
    """
    if not (PROJECT_DIR / "dbt_project.yml").is_file():
        raise DbtBuildError("build", [], f"the dbt project is not at {PROJECT_DIR}; reinstall polypythias")
    root = _lake_root(lake_root)
    memory_limit, threads = _duckdb_settings()
    db_path = Path(db_path).resolve()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    overrides = {
        # A full refresh refits the training maps too, not only the incremental models.
        **({"training_map_reuse": False} if full_refresh else {}),
        **(variables or {}),
    }
    common = [
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(state_dir(db_path) / "target"),
        "--log-path", str(state_dir(db_path) / "logs"),
        *(["--vars", json.dumps(overrides)] if overrides else []),
    ]  # fmt: skip
    selection = ["--select", *select.split()] if select else []
    refresh = ["--full-refresh"] if full_refresh else []
    units = [] if unit_tests else ["--exclude-resource-type", "unit_test"]
    # dbt's log goes to <db dir>/.dbt/logs/dbt.log; the terminal gets it only with
    # --verbose, else the failures DbtBuildError lists, one line each.
    quiet = [] if verbose else ["--log-level", "none", "--log-level-file", "debug"]
    with _spill_dir(state_dir(db_path) / "tmp") as temp, _swapped_in_on_success(db_path) as building:
        settings = {
            LAKE_ENV: root,
            DB_ENV: str(building),
            TEMP_ENV: str(temp),
            MEMORY_ENV: memory_limit,
            THREADS_ENV: threads,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        with _environment(settings):
            log = state_dir(db_path) / "logs" / "dbt.log"
            outcome = _invoke("build", ["build", *quiet, *common, *selection, *refresh, *units], log)
            if docs:
                _invoke("docs generate", ["docs", "generate", *quiet, *common, *selection], log)
    return Counter(getattr(r.node, "resource_type", "?") for r in getattr(outcome, "results", None) or [])


@contextmanager
def _swapped_in_on_success(db_path: Path) -> Iterator[Path]:
    """A copy of the warehouse to build into, ``<db dir>/.dbt/building/<db name>``,
    renamed over the warehouse only when the build succeeds: a failed or killed build
    leaves the previous warehouse as it was, and readers never see one half built.

    A copy, not an empty file: the incremental models and the training-map fits
    that a build reuses live in the warehouse. The copy keeps the file's name, which
    DuckDB takes as the catalog name the views refer to, and its path is the same
    from build to build (dbt reparses the project when the profile changes).
    Callers hold the spill folder's lock, so one build at a time uses it.
    """
    building = state_dir(db_path) / "building" / db_path.name
    wal = Path(f"{building}.wal")
    building.parent.mkdir(parents=True, exist_ok=True)
    building.unlink(missing_ok=True)  # left by a killed build
    wal.unlink(missing_ok=True)
    try:
        if db_path.exists():
            shutil.copyfile(db_path, building)
            if Path(f"{db_path}.wal").exists():
                shutil.copyfile(f"{db_path}.wal", wal)
        yield building
        _release_warehouse()  # closed, so the write-ahead log is folded in
        Path(f"{db_path}.wal").unlink(missing_ok=True)
        os.replace(building, db_path)
    finally:
        building.unlink(missing_ok=True)
        wal.unlink(missing_ok=True)


@contextmanager
def _spill_dir(root: Path) -> Iterator[Path]:
    """The warehouse's folder for DuckDB's spill files, ``root/spill``, emptied before
    and after the build and locked while it runs.

    DuckDB deletes its spill files on a clean exit only (a killed build left tens of GB
    behind on the PolyPythias lake), so the next build removes them. The path is the
    same from build to build: dbt hashes the profile, which names it, and reparses the
    whole project (~8 s) when the hash changes. The lock (``root/.lock``; the kernel
    releases it when a build dies) keeps a second build in the same folder (whose
    warehouses share ``.dbt/``) from emptying the folder under a running one: that
    build is refused, as DuckDB would refuse a second writer of the same file anyway.
    """
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DbtBuildError(
                "build",
                [],
                f"another build is writing a warehouse in {root.parent.parent} "
                f"(it holds {lock.name}); wait for it to finish",
            ) from None
        spill = root / "spill"
        shutil.rmtree(spill, ignore_errors=True)
        spill.mkdir()
        try:
            yield spill
        finally:
            shutil.rmtree(spill, ignore_errors=True)


def _duckdb_settings() -> tuple[str, str]:
    """DuckDB's memory limit and threads: from the environment, checked, or the defaults."""
    memory_limit = os.environ.get(MEMORY_ENV) or _default_memory_limit()
    if not _MEMORY_LIMIT.match(memory_limit):
        raise DbtBuildError(
            "build",
            [],
            f"{MEMORY_ENV}={memory_limit!r} is not a memory size: give a number "
            "and a unit, e.g. 8GB or 500MiB, or a share of the memory, e.g. 80%",
        )
    threads = os.environ.get(THREADS_ENV) or str(os.cpu_count() or 1)
    if not threads.strip().isdigit() or int(threads) < 1:
        raise DbtBuildError(
            "build", [], f"{THREADS_ENV}={threads!r} is not a number of threads: give a whole number ≥ 1"
        )
    return memory_limit, threads.strip()


def _default_memory_limit() -> str:
    """DuckDB's own default, 80% of the machine's memory, in MiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return "4GB"
    return f"{int(total * 0.8) // 2**20}MB"


def _lake_root(lake_root: str) -> str:
    """The lake root as the project reads it: an absolute path or a URI."""
    text = str(lake_root)
    if "://" not in text:
        path = Path(text).resolve()
        if not path.is_dir():
            raise DbtBuildError(
                "build",
                [],
                f"the lake {path} does not exist; extract into it first "
                "(`polypythias extract`) or pass the right --lake",
            )
        text = str(path)
    text = text.rstrip("/")
    bad = [c for c in _UNSAFE_IN_ROOT if c in text]
    if bad:
        raise DbtBuildError(
            "build",
            [],
            f"the lake root {text!r} contains {' and '.join(map(repr, bad))}; move the lake to a path without them",
        )
    return text


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _invoke(command: str, args: list[str], log: Path | None = None) -> object:
    """Run one dbt command; returns dbt's result object, raises on any failure
    (naming dbt's `log` file)."""
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(args)
    _release_warehouse()
    if result.success:
        return result.result
    failures = _failures(result.result)
    detail = None
    if result.exception is not None:
        detail = _one_line(f"{type(result.exception).__name__}: {result.exception}")
    elif not failures:
        detail = "no node failed; see the dbt log"
    raise DbtBuildError(command, failures, detail, log)


#: Columns that say where a failing row comes from: its checkpoint and extraction,
#: which name its lake file (<dataset>/suite=…/model_size=…/seed=…/step=…/<extraction_id>.parquet).
_WHERE_COLUMNS = ("suite", "model_size", "seed", "step", "extractor", "extraction_id", "task", "metric", "source_file")


def _failures(outcome: object) -> list[NodeFailure]:
    failures = []
    for node_result in getattr(outcome, "results", None) or []:
        status = str(getattr(node_result.status, "value", node_result.status))
        if status in {"error", "fail", "runtime error"}:
            node = getattr(node_result, "node", None)
            name = getattr(node, "unique_id", None) or "?"
            message = (node_result.message or "").strip() or status
            if status == "fail":
                message += _first_failing_row(getattr(node, "compiled_code", None))
            failures.append(NodeFailure(name, status, message))
    return failures


def _first_failing_row(test_sql: str | None) -> str:
    """ "; first failing row: suite=…, step=…, extraction_id=…" of a failed data test,
    so the message names the checkpoint (and so the lake file) it is about."""
    path = os.environ.get(DB_ENV)
    if not test_sql or not path:
        return ""
    import duckdb

    try:
        with duckdb.connect(path, read_only=True) as con:
            cursor = con.execute(f"select * from ({test_sql}) limit 1")
            row = cursor.fetchone()
            columns = [d[0] for d in cursor.description]
    except duckdb.Error:
        return ""
    if row is None:
        return ""
    where = [f"{c}={v}" for c, v in zip(columns, row, strict=True) if c in _WHERE_COLUMNS and v is not None]
    return f"; first failing row: {', '.join(where)}" if where else ""


def _release_warehouse() -> None:
    """Close dbt-duckdb's process-wide DuckDB handle so others can open the file."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if environment is not None:
        try:
            environment.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
