"""The package installs from a wheel and runs from where it is installed.

The wheel is built from this source tree (offline, with the setuptools of the test
environment) and installed without dependencies into a fresh virtual environment that
sees the test environment's packages through a ``.pth`` file; `polypythias build` and
`polypythias report` then run from another directory, on a small lake.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import duckdb
import pytest

from lake_fixtures import write_lake

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _run(*args, cwd: Path | None = None, env: dict | None = None) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `polypythias` console script of a fresh environment holding only the wheel."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a copy, so the build leaves no build/ in the checkout
    tracked = _run("git", "-C", REPO, "ls-files", "-co", "--exclude-standard").split()
    for name in tracked:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    wheels = work / "wheels"
    log = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-v",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--wheel-dir",
        wheels,
        source,
    )
    # No packaging warning of setuptools (its "byte-compiling is disabled" notes are not).
    assert "Warning" not in log and "!!" not in log, log
    (wheel,) = wheels.glob("polypythias-*.whl")

    fresh = work / "fresh"
    _run(sys.executable, "-m", "venv", "--without-pip", fresh)
    fresh_python = fresh / "bin" / "python"
    fresh_site = Path(_run(fresh_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    # The dependencies come from the test environment, after the fresh one's own packages.
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(sys.executable, "-m", "pip", "--python", fresh_python, "install", "--no-deps", "--no-index", "--quiet", wheel)
    return fresh / "bin" / "polypythias"


def _package_dir(script: Path) -> Path:
    python = script.parent / "python"
    where = "import polypythias, os; print(os.path.dirname(polypythias.__file__))"
    # Run outside the checkout: `python -c` would import its polypythias/ folder.
    return Path(_run(python, "-c", where, cwd=script.parent).strip())


def test_the_wheel_ships_the_dbt_project(installed):
    package = _package_dir(installed)
    assert package.is_relative_to(installed.parent.parent)  # not the checkout
    shipped = {f for f in _files(package / "dbt_project") if "__pycache__" not in f}
    tracked = _run("git", "-C", REPO / "dbt_project", "ls-files", "-co", "--exclude-standard", ".").split()
    # Everything but the SQL linter's settings.
    assert shipped == {f for f in tracked if not f.startswith(".sqlfluff")}
    assert (package / "extract" / "suites" / "micro.yaml").is_file()
    assert (package / "extract" / "micro" / "tasks" / "micro_lambada.yaml").is_file()


def test_an_installed_package_builds_and_reports_from_another_directory(installed, tmp_path):
    truth = write_lake(tmp_path / "lake", datasets=("manifest", "token_stats"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    package = _package_dir(installed)
    before = _files(package)
    env = {**os.environ, "POLYPYTHIAS_LAKE": str(tmp_path / "lake")}
    env.pop("POLYPYTHIAS_DB", None)
    built = _run(installed, "build", cwd=elsewhere, env=env)
    assert "warehouse built" in built
    db = elsewhere / "warehouse" / "polypythias.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        present = con.execute("select count(*) from dim_checkpoints where is_present").fetchone()[0]
    assert present == len(truth.current_ids)
    # dbt's target/ and logs/ are next to the warehouse, nothing is written into the package.
    assert (elsewhere / "warehouse" / ".dbt" / "target" / "manifest.json").is_file()
    assert (elsewhere / "warehouse" / ".dbt" / "logs" / "dbt.log").is_file()
    assert _files(package) == before

    reported = _run(installed, "report", cwd=elsewhere, env=env)
    assert "report:" in reported
    assert (elsewhere / "reports" / "index.html").is_file()
    assert (elsewhere / "reports" / "loss_curves.png").is_file()
    assert _files(package) == before
