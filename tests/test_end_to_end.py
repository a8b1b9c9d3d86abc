"""The whole pipeline on a very small micro suite: train, extract, build, report.

The marts' numbers are checked against numpy on the lake's own rows; a corrupt
checkpoint and a missing step are recorded while everything else is extracted.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import (
    EVAL_RESULTS,
    EVAL_SAMPLES,
    PROBE_PREDICTIONS,
    PROBE_RESULTS,
    TOKEN_STATS,
    TRAINING_LOG,
    WEIGHT_STATS,
)

pytestmark = pytest.mark.slow

SIZES, SEEDS, STEPS = ("200k", "1m"), 3, 8


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    lake, db, reports, micro = root / "lake", root / "wh.duckdb", root / "reports", root / "micro"
    cli = CliRunner()

    def invoke(*args):
        return cli.invoke(app, [str(a) for a in args])

    trained = invoke(
        "micro",
        "train",
        "--out",
        micro,
        "--sizes",
        ",".join(SIZES),
        "--seeds",
        SEEDS,
        "--steps",
        STEPS,
        "--lake",
        lake,
        "--no-progress",
    )
    assert trained.exit_code == 0, trained.output

    # Break two checkpoints of the suite before extracting.
    corrupt = micro / "1m/seed1/step4/model.safetensors"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    shutil.rmtree(micro / "200k/seed2/step8")

    first = invoke("extract", "--suite", micro / "suite.yaml", "--lake", lake, "--no-progress")
    assert first.exit_code == 1, first.output  # failures are reported in the exit status
    rerun = invoke("extract", "--suite", micro / "suite.yaml", "--lake", lake, "--no-progress")
    assert "0 extractions succeeded" in rerun.output  # only the two broken ones were retried

    # with the docs site and dbt's unit tests: one build serves the marts' tests, the
    # docs' test and the CLI's --unit-tests
    built = invoke("build", "--lake", lake, "--db", db, "--docs", "--unit-tests")
    assert built.exit_code == 0, built.output
    unit_tests = re.search(r"(\d+) unit tests passed", " ".join(built.output.split()))
    assert unit_tests and int(unit_tests[1]) > 0, built.output
    reported = invoke("report", "--db", db, "--out", reports)
    assert reported.exit_code == 0, reported.output
    return {"lake": Lake(lake), "db": db, "reports": reports}


def _mart(db, query):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(query).fetchdf()


def _token_losses(lake):
    table = lake.read(TOKEN_STATS)
    frame = table.select(["model_size", "seed", "step", "doc_id", "position", "target_logprob"]).to_pandas()
    frame["loss"] = -frame["target_logprob"].astype(np.float64)
    return frame


def test_broken_checkpoints_are_recorded_and_the_rest_is_extracted(pipeline):
    checkpoints = _mart(pipeline["db"], "select * from dim_checkpoints")
    expected = len(SIZES) * SEEDS * 9  # --steps 8 checkpoints every step 0…8
    assert len(checkpoints) == expected
    missing = checkpoints[~checkpoints["is_present"]]
    assert sorted(zip(missing["model_size"], missing["seed"], missing["step"])) == [("1m", 1, 4), ("200k", 2, 8)]
    assert (missing["n_failed_attempts"] == 2 * 4).all()  # two attempts × four extractors
    assert missing["last_error"].str.len().min() > 0
    runs = _mart(pipeline["db"], "select * from dim_runs order by model_size, seed")
    assert len(runs) == len(SIZES) * SEEDS
    assert set(runs["nominal_parameters"]) == {2e5, 1e6}


def test_loss_consistency_matches_numpy_on_the_lake(pipeline):
    frame = _token_losses(pipeline["lake"])
    per_run = frame.groupby(["model_size", "step", "seed"])["loss"].mean()
    mart = _mart(pipeline["db"], "select * from fct_loss_consistency")
    assert len(mart) == len(per_run.reset_index()[["model_size", "step"]].drop_duplicates())
    for row in mart.itertuples():
        losses = per_run.loc[(row.model_size, row.step)].to_numpy()
        assert row.n_seeds == len(losses)
        assert row.loss_median == pytest.approx(np.median(losses), rel=1e-6)
        assert row.loss_q25 == pytest.approx(np.percentile(losses, 25), rel=1e-6)
        assert row.loss_q75 == pytest.approx(np.percentile(losses, 75), rel=1e-6)
        assert row.loss_mean == pytest.approx(losses.mean(), rel=1e-6)
        assert row.loss_min == pytest.approx(losses.min(), rel=1e-6)
        assert row.loss_max == pytest.approx(losses.max(), rel=1e-6)
        if len(losses) > 1:
            assert row.loss_std == pytest.approx(losses.std(ddof=1), rel=1e-5, abs=1e-9)


def test_token_loss_agreement_matches_numpy_on_the_lake(pipeline):
    frame = _token_losses(pipeline["lake"])
    mart = _mart(pipeline["db"], "select * from fct_token_loss_agreement")
    assert len(mart) > 0
    for row in mart.itertuples():
        here = frame[(frame.model_size == row.model_size) & (frame.step == row.step)]
        wide = here.pivot_table(index=["doc_id", "position"], columns="seed", values="loss")
        shared = wide.dropna(thresh=2)
        stds = shared.std(axis=1, ddof=1)
        assert row.mean_token_loss_std == pytest.approx(stds.mean(), rel=1e-5)
        correlations = [
            np.corrcoef(pair.to_numpy().T)[0, 1]
            for a, b in itertools.combinations(wide.columns, 2)
            for pair in [wide[[a, b]].dropna()]
        ]
        assert row.n_seed_pairs == len(correlations)
        assert row.mean_pairwise_pearson == pytest.approx(np.mean(correlations), rel=1e-5, abs=1e-7)


def test_weight_features_match_numpy_on_the_lake(pipeline):
    table = pipeline["lake"].read(WEIGHT_STATS)
    matrices = table.filter(pc.invert(pc.is_in(table["kind"], pc.cast(["all_weights", "all_biases"], "string"))))
    frame = matrices.to_pandas()
    expected = frame.groupby(["model_size", "seed", "step"])[["l1", "spectral", "sv_var"]].mean()
    mart = _mart(pipeline["db"], "select * from fct_weight_features").set_index(["model_size", "seed", "step"])
    assert len(mart) == len(expected)
    for key, row in expected.iterrows():
        assert mart.loc[key, "l1_mean"] == pytest.approx(row["l1"], rel=1e-9)
        assert mart.loc[key, "spectral_mean"] == pytest.approx(row["spectral"], rel=1e-9)
        assert mart.loc[key, "sv_var_mean"] == pytest.approx(row["sv_var"], rel=1e-9)


def test_training_logs_reach_the_warehouse(pipeline):
    logged = pipeline["lake"].read(TRAINING_LOG)
    assert logged.num_rows == len(SIZES) * SEEDS * STEPS
    staged = _mart(
        pipeline["db"],
        "select count(*) as n, min(step) as first, max(step) as last from staging.stg_lake__training_log",
    )
    assert (staged.n[0], staged["first"][0], staged["last"][0]) == (logged.num_rows, 1, STEPS)


def test_the_report_charts_the_loss(pipeline):
    index = (pipeline["reports"] / "index.html").read_text()
    assert "Training loss across seeds" in index
    assert (pipeline["reports"] / "loss_curves.png").stat().st_size > 10_000


def test_the_warehouse_opens_in_the_duckdb_shell_and_the_sql_verb(pipeline):
    shell = Path(sys.executable).parent / "duckdb"
    query = "select model_size, step, n_seeds from fct_loss_consistency order by model_size, step limit 3"
    printed = subprocess.run(
        [shell, "-readonly", "-csv", str(pipeline["db"]), "-c", query],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = _mart(pipeline["db"], query)
    assert printed.strip().splitlines() == ["model_size,step,n_seeds"] + [
        f"{r.model_size},{r.step},{r.n_seeds}" for r in expected.itertuples()
    ]
    cli = CliRunner()
    as_csv = cli.invoke(app, ["sql", query, "--db", str(pipeline["db"]), "--format", "csv"])
    assert as_csv.exit_code == 0 and as_csv.output.strip() == printed.strip()
    as_json = json.loads(cli.invoke(app, ["sql", query, "--db", str(pipeline["db"]), "--format", "json"]).output)
    assert [row["n_seeds"] for row in as_json] == expected["n_seeds"].tolist()
    table = cli.invoke(app, ["sql", query, "--db", str(pipeline["db"])])
    assert table.exit_code == 0 and "n_seeds" in table.output
    bad = cli.invoke(app, ["sql", "select * from no_such_mart", "--db", str(pipeline["db"])])
    assert bad.exit_code == 2 and "no_such_mart" in bad.output


def test_build_writes_the_docs_site(pipeline):
    catalog = json.loads((pipeline["db"].parent / ".dbt/target/catalog.json").read_text())
    assert any(node.endswith("fct_loss_consistency") for node in catalog["nodes"])


def _eval_predictions(lake):
    """Per item: the predicted choice (multiple choice) or acc (log-likelihood), and acc."""
    frame = lake.read(EVAL_SAMPLES).to_pandas()
    metrics = frame["metrics"].map(dict)
    frame["acc"] = metrics.map(lambda m: m["acc"])
    frame["prediction"] = frame["predicted"].where(frame["predicted"].notna(), frame["acc"])
    return frame


def test_eval_consistency_matches_numpy_on_the_lake(pipeline):
    results = pipeline["lake"].read(EVAL_RESULTS).to_pandas()
    assert set(results["task"]) == {"micro_gender_agreement", "micro_lambada", "micro_verb_agreement"}
    acc = results[results.metric == "acc"]
    mart = _mart(pipeline["db"], "select * from fct_eval_consistency where metric = 'acc'")
    assert len(mart) == len(acc[["model_size", "step", "task"]].drop_duplicates())
    for row in mart.itertuples():
        values = acc[(acc.model_size == row.model_size) & (acc.step == row.step) & (acc.task == row.task)]
        values = values["value"].to_numpy()
        assert row.n_runs == len(values)
        assert row.value_median == pytest.approx(np.median(values))
        assert row.value_q25 == pytest.approx(np.percentile(values, 25))
        assert row.value_q75 == pytest.approx(np.percentile(values, 75))
        if len(values) > 1:
            assert row.value_std == pytest.approx(values.std(ddof=1), abs=1e-12)


def test_eval_accuracy_is_the_mean_of_the_items(pipeline):
    items = _eval_predictions(pipeline["lake"])
    per_run = items.groupby(["model_size", "seed", "step", "task"])["acc"].mean()
    scores = _mart(pipeline["db"], "select * from fct_eval_scores where metric = 'acc'")
    assert len(scores) == len(per_run)
    for row in scores.itertuples():
        assert row.value == pytest.approx(per_run.loc[(row.model_size, row.seed, row.step, row.task)])


def test_kappas_match_sklearn_on_the_micro_suite(pipeline):
    items = _eval_predictions(pipeline["lake"])
    wide = items.pivot_table(index=["model_size", "step", "task", "doc_id"], columns="seed", values="prediction")
    agreement = _mart(pipeline["db"], "select * from fct_inter_seed_agreement")
    assert len(agreement) > 0
    checked = 0
    for row in agreement.itertuples():
        pair = wide.loc[(row.model_size, row.step, row.task)][[row.reference_seed, row.seed]].dropna()
        expected = cohen_kappa_score(pair[row.reference_seed], pair[row.seed])
        assert row.n_items == len(pair)
        if np.isnan(expected):
            assert row.kappa is None or np.isnan(row.kappa)
        else:
            assert row.kappa == pytest.approx(expected, abs=1e-9)
            checked += 1
    assert checked > 0

    final = items.groupby(["model_size", "seed"])["step"].transform("max")
    last = items[items.step == final].set_index(["model_size", "seed", "task", "doc_id"])["prediction"]
    self_consistency = _mart(pipeline["db"], "select * from fct_self_consistency")
    assert len(self_consistency) > 0
    for row in self_consistency.sample(n=min(40, len(self_consistency)), random_state=0).itertuples():
        here = items[
            (items.model_size == row.model_size)
            & (items.seed == row.seed)
            & (items.step == row.step)
            & (items.task == row.task)
        ]
        reference = last.loc[(row.model_size, row.seed, row.task)].reindex(here["doc_id"]).to_numpy()
        expected = cohen_kappa_score(here["prediction"].to_numpy(), reference)
        if np.isnan(expected):
            assert row.kappa is None or np.isnan(row.kappa)
        else:
            assert row.kappa == pytest.approx(expected, abs=1e-9)


def test_item_stability_counts_the_seeds_right(pipeline):
    items = _eval_predictions(pipeline["lake"])
    expected = items.groupby(["model_size", "step", "task", "doc_id"])["acc"].agg(["mean", "count"])
    mart = _mart(pipeline["db"], "select * from fct_item_stability")
    assert len(mart) == len(expected)
    merged = mart.set_index(["model_size", "step", "task", "doc_id"]).join(expected)
    np.testing.assert_allclose(merged["fraction_correct"], merged["mean"])
    assert (merged["n_seeds"] == merged["count"]).all()


def test_the_report_charts_the_evaluations(pipeline):
    index = (pipeline["reports"] / "index.html").read_text()
    for figure in ("performance", "gender_bias"):
        assert (pipeline["reports"] / f"{figure}.png").stat().st_size > 10_000
        assert f"{figure}.html" in index or figure in index


def _probe_accuracy(lake):
    results = lake.read(PROBE_RESULTS).to_pandas()
    return results[results.metric == "accuracy"]


def test_probe_accuracy_is_recomputed_from_the_predictions(pipeline):
    predictions = pipeline["lake"].read(PROBE_PREDICTIONS).to_pandas()
    predictions["correct"] = predictions["gold"] == predictions["predicted"]
    recomputed = predictions.groupby(["model_size", "seed", "step", "task", "layer"])["correct"].mean()
    accuracy = _probe_accuracy(pipeline["lake"])
    assert set(accuracy["task"]) == {"pos", "antecedent"}
    assert set(accuracy["layer"]) == {0, 1, 2, 3, 4}
    stored = accuracy.set_index(["model_size", "seed", "step", "task", "layer"])["value"]
    assert len(stored) == len(recomputed)
    np.testing.assert_allclose(stored.sort_index(), recomputed.sort_index())


def test_probe_marts_match_numpy_and_sklearn_on_the_lake(pipeline):
    accuracy = _probe_accuracy(pipeline["lake"])
    mart = _mart(pipeline["db"], "select * from fct_probe_consistency where metric = 'accuracy'")
    assert len(mart) == len(accuracy[["model_size", "step", "task", "layer"]].drop_duplicates())
    for row in mart.itertuples():
        values = accuracy[
            (accuracy.model_size == row.model_size)
            & (accuracy.step == row.step)
            & (accuracy.task == row.task)
            & (accuracy.layer == row.layer)
        ]["value"].to_numpy()
        assert row.n_runs == len(values)
        assert row.value_median == pytest.approx(np.median(values))
        assert row.value_q25 == pytest.approx(np.percentile(values, 25))
        assert row.value_q75 == pytest.approx(np.percentile(values, 75))

    predictions = pipeline["lake"].read(PROBE_PREDICTIONS).to_pandas()
    wide = predictions.pivot_table(
        index=["model_size", "step", "task", "layer", "item_id"], columns="seed", values="predicted", aggfunc="first"
    )
    agreement = _mart(pipeline["db"], "select * from fct_probe_agreement")
    checked = 0
    for row in agreement.sample(n=min(60, len(agreement)), random_state=0).itertuples():
        pair = wide.loc[(row.model_size, row.step, row.task, row.layer)][[row.reference_seed, row.seed]].dropna()
        expected = cohen_kappa_score(pair[row.reference_seed], pair[row.seed])
        assert row.n_items == len(pair)
        if np.isnan(expected):
            assert row.kappa is None or np.isnan(row.kappa)
        else:
            assert row.kappa == pytest.approx(expected, abs=1e-9)
            checked += 1
    assert checked > 0


def test_the_larger_models_pos_probe_learns_part_of_speech(pipeline):
    """Issue 4's expectation: at the final checkpoint the 1m model's best layer is
    far above its step-0 score and above the majority-class baseline (on words the
    probe never saw in training: the micro POS split is lexical)."""
    pos = _probe_accuracy(pipeline["lake"])
    pos = pos[(pos.task == "pos") & (pos.model_size == "1m")]
    best = pos.groupby(["seed", "step"])["value"].max()
    majority = pos["majority_accuracy"].iloc[0]
    for seed in sorted(pos["seed"].unique()):
        at_start, at_end = best.loc[(seed, 0)], best.loc[(seed, STEPS)]
        assert at_end > majority
        assert at_end > 2 * at_start, (seed, at_start, at_end)


def test_the_report_charts_the_probes(pipeline):
    for figure in ("probe_accuracy", "probe_layers"):
        assert (pipeline["reports"] / f"{figure}.png").stat().st_size > 10_000
