"""The command line: instant help, clear errors, every verb documented."""

import subprocess
import sys

from typer.testing import CliRunner

from polypythias.cli import app

VERBS = ("demo", "extract", "status", "build", "sql", "report", "micro")


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from polypythias.cli import app; "
        "from typer.testing import CliRunner; CliRunner().invoke(app, ['extract', '--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'dbt', 'lm_eval', 'altair') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_every_verb_explains_itself():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for verb in VERBS:
        assert verb in top.output
        assert runner.invoke(app, [verb, "--help"]).exit_code == 0
    assert "--shard" in runner.invoke(app, ["extract", "--help"]).output


def test_bad_inputs_get_clear_errors(tmp_path):
    runner = CliRunner()
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nsizes: [a/b]\n")
    result = runner.invoke(app, ["status", "--suite", str(suite)])
    assert result.exit_code == 2 and str(suite) in result.output and "sizes" in result.output
    result = runner.invoke(app, ["extract", "--suite", "polypythias", "--shard", "4/4"])
    assert result.exit_code == 2 and "0 <= i < n" in result.output
    result = runner.invoke(app, ["sql", "select 1", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "none.duckdb" in result.output
    result = runner.invoke(app, ["build", "--lake", str(tmp_path / "no-lake"), "--db", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2 and "no-lake" in result.output
    result = runner.invoke(app, ["report", "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "none.duckdb" in result.output
