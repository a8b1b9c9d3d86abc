"""The command line: instant help, clear errors, every verb documented."""

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from polypythias.cli import app
from shared_inputs import PYTHIA_EVALS

VERBS = ("demo", "extract", "status", "build", "sql", "report", "micro", "ingest")


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from polypythias.cli import app; "
        "from typer.testing import CliRunner; CliRunner().invoke(app, ['extract', '--help']); "
        "CliRunner().invoke(app, ['ingest', 'lm-eval', '--help']); "
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


def test_ingest_lm_eval(tmp_path):
    runner = CliRunner()
    assert "--pattern" in runner.invoke(app, ["ingest", "lm-eval", "--help"]).output
    folder = PYTHIA_EVALS / "pythia-v1" / "pythia-70m-deduped" / "intervention"
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", "lm-eval", str(folder), "--lake", str(lake), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "10 files: 10 ingested, 0 skipped" in result.output and "0 failed" in result.output
    assert sorted(p.name for p in (lake / "eval_files").iterdir()) == ["suite=polypythias-intervention-deduped"]
    again = runner.invoke(app, ["ingest", "lm-eval", str(folder), "--lake", str(lake)])
    assert again.exit_code == 0 and "0 ingested, 10 skipped" in again.output

    bad = tmp_path / "in" / "broken.json"
    bad.parent.mkdir()
    bad.write_text("{nope")
    good = bad.parent / "70m_step4000.json"  # the file says step 143000: a finding
    shutil.copy(PYTHIA_EVALS / "pythia-v1" / "pythia-70m" / "zero-shot" / "70m_step143000.json", good)
    result = runner.invoke(app, ["ingest", "lm-eval", str(bad.parent), "--lake", str(lake)])
    assert result.exit_code == 1
    assert "1 ingested" in result.output and "1 failed" in result.output and "findings: 1" in result.output
    assert str(bad) in result.output and "not valid JSON" in result.output
    assert "file name says step 4000 but model_args revision is step143000" in result.output
    result = runner.invoke(app, ["ingest", "lm-eval", str(good), "--lake", str(lake), "--pattern", "(?P<seed>1)"])
    assert result.exit_code == 2 and "'size'" in result.output


@pytest.mark.slow
def test_micro_train_options_default_to_the_training_config(tmp_path):
    import json

    from polypythias.extract.micro.train import TrainConfig

    out = tmp_path / "micro"
    result = CliRunner().invoke(
        app,
        [
            "micro",
            "train",
            "--out",
            str(out),
            "--sizes",
            "200k",
            "--seeds",
            "1",
            "--lake",
            str(tmp_path / "lake"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "200k" / "seed0" / "run.json").read_text())
    assert info["train"]["total_steps"] == TrainConfig().total_steps
    assert sorted(p.name for p in (out / "200k").iterdir()) == ["seed0"]
