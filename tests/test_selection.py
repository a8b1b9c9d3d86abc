"""--sizes, --seeds, --steps narrow a suite's grid for `extract` and `status`; they
never widen it, and a selection that names something the suite lacks, or that
leaves no work, is one clear line (exit status 2). --set changes a suite setting."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract.runner import build_extractors, plan
from polypythias.extract.suite import SuiteError, load_suite
from polypythias.warehouse.lake import Lake


@pytest.mark.parametrize("command", ["extract", "status"])
@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (["--sizes", "14m,1b"], "--sizes: 1b not in suite 'polypythias' (14m, 31m, 70m, 160m, 410m)"),
        (["--seeds", "0,10"], "--seeds: 10 not in suite 'polypythias'"),
        (["--steps", "3"], "--steps: 3 not in suite 'polypythias' (0, 1 … 143000 (154 in all))"),
        (["--steps", "1000:3000:500"], "--steps: 1500, 2500 not in suite"),
        (["--seeds", "one"], "--seeds: one: give non-negative integers"),
        (["--sizes", ","], "--sizes ',': selects nothing"),
    ],
)
def test_a_selection_outside_the_suite_is_one_clear_line(command, selection, message, tmp_path):
    result = CliRunner().invoke(app, [command, "--suite", "polypythias", "--lake", str(tmp_path), *selection])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_selection_that_leaves_an_extractor_nothing_is_refused(tmp_path):
    # 2000 is a checkpoint of the suite but not of the evaluation grid evals run on.
    result = CliRunner().invoke(
        app,
        [
            "extract",
            "--suite",
            "polypythias",
            "--lake",
            str(tmp_path),
            "--steps",
            "2000",
            "--extractors",
            "evals",
        ],
    )
    assert result.exit_code == 2
    assert "matches no checkpoint of evals" in result.output and result.output.count("\n") == 1


def test_narrowing_selects_a_subgrid_and_status_reports_it(tiny_suite, tmp_path):
    suite = load_suite(tiny_suite)
    narrowed = suite.narrowed(None, [1], [0, 2])
    lake = Lake(tmp_path / "lake")
    tasks = plan(narrowed, lake, build_extractors(narrowed, None))
    assert [(t.checkpoint.seed, t.checkpoint.step) for t in tasks] == [(1, 0), (1, 2)]
    assert narrowed.whole is suite and len(suite.checkpoints_for("token_stats")) == 6

    result = CliRunner().invoke(
        app,
        [
            "status",
            "--suite",
            str(tiny_suite),
            "--lake",
            str(lake.root),
            "--seeds",
            "1",
            "--steps",
            "0,2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│ tiny" in line]
    assert len(rows) == 1 and "(selected: 2 of 3 steps)" in result.output
    cells = [cell.strip() for cell in rows[0].split("│") if cell.strip()]
    # done, diverged, damaged, stale, failed, missing: 2 steps × 2 extractors missing
    assert cells == ["tiny", "1", "0", "0", "0", "0", "0", "4"]


def test_set_changes_a_setting_before_validation(tiny_suite):
    suite = load_suite(tiny_suite, ["extractors.token_stats.top_k=3", "extractors.weight_stats.steps=all"])
    assert suite.extractor_options("token_stats").top_k == 3
    with pytest.raises(SuiteError, match=r"extractors.token_stats: top_k: Input should be a valid integer"):
        load_suite(tiny_suite, ["extractors.token_stats.top_k=many"])
    with pytest.raises(SuiteError, match=r"--set 'top_k': give KEY=VALUE"):
        load_suite(tiny_suite, ["top_k"])
    with pytest.raises(SuiteError, match=r"--set sizes.x: sizes is not a mapping"):
        load_suite(tiny_suite, ["sizes.x=1"])
