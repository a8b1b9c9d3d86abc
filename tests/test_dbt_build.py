"""`dbt build` over a toy lake: the marts against numpy/scipy, the extraction rules,
missing checkpoints, dbt's own tests, failures, and lakes that lack datasets."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest
from scipy import stats

from lake_fixtures import (
    FAILED_AFTER_SUCCESS,
    FAILED_MISSING,
    MISSING_STEP,
    SEEDS,
    SIZES,
    STEPS,
    SUITE,
    Truth,
    extraction_id,
    poison_token_stats,
    write_lake,
)
from polypythias.warehouse.dbt import PROJECT_DIR, DbtBuildError, build, state_dir

pytestmark = pytest.mark.slow

MARTS = [
    "dim_checkpoints",
    "dim_runs",
    "fct_checkpoint_integrity",
    "fct_checkpoint_losses",
    "fct_eval_consistency",
    "fct_eval_integrity",
    "fct_eval_scores",
    "fct_inter_seed_agreement",
    "fct_item_stability",
    "fct_loss_consistency",
    "fct_loss_spikes",
    "fct_probe_agreement",
    "fct_probe_consistency",
    "fct_probe_emergence",
    "fct_probe_scores",
    "fct_run_outliers",
    "fct_self_consistency",
    "fct_stability_forecast",
    "fct_token_loss_agreement",
    "fct_training_map_transitions",
    "fct_training_phases",
    "fct_weight_features",
]
STAGING = [
    "stg_lake__data_files",
    "stg_lake__eval_files",
    "stg_lake__eval_results",
    "stg_lake__eval_samples",
    "stg_lake__manifest",
    "stg_lake__probe_predictions",
    "stg_lake__probe_results",
    "stg_lake__suite_grid",
    "stg_lake__token_stats",
    "stg_lake__training_log",
    "stg_lake__training_map_states",
    "stg_lake__weight_stats",
]
INTERMEDIATE = [
    "int_checkpoint_extractors_aggregated",
    "int_diverged_checkpoints",
    "int_diverged_seeds_counted",
    "int_eval_items_predicted",
    "int_eval_prediction_pairs_agreed",
    "int_outlier_checkpoints",
    "int_outlier_loss_spikes",
    "int_outlier_signals_by_step",
    "int_outlier_training_map_departures",
    "int_outlier_z_scores",
    "int_probe_prediction_pairs_agreed",
    "int_seed_pairs_correlated",
    "int_token_losses_aggregated_across_seeds",
    "int_training_map_states",
    "int_training_map_states_fitted",
]


@dataclass
class Built:
    db: Path
    truth: Truth
    seconds: float


def _build(tmp: Path, marts: list[str] | None = None, unit_tests: bool = False, **lake_options) -> Built:
    """A warehouse over a toy lake: every model, or only ``marts`` and what they read
    (and no test of a model outside that); dbt's unit tests only where asked (they do
    not read the lake, so one build that runs them all is enough)."""
    truth = write_lake(tmp / "lake", **lake_options)
    db = tmp / "warehouse" / "polypythias.duckdb"
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        selection = " ".join(f"+{mart}" for mart in marts) if marts else None
        build(str(tmp / "lake"), db, select=selection, unit_tests=unit_tests)
    return Built(db, truth, time.perf_counter() - started)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Built:
    return _build(tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def partial(young_lake_warehouse) -> Built:
    """A lake with only the manifest and token statistics: no weights, logs or grid."""
    return young_lake_warehouse


def query(db: Path, sql: str) -> list[dict]:
    # Read-only and closed at once: an open connection would block the next build.
    with duckdb.connect(str(db), read_only=True) as con:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def by_key(rows: list[dict], *key: str) -> dict[tuple, dict]:
    return {tuple(row[k] for k in key): row for row in rows}


# -- the marts against an independent computation --------------------------------


def test_marts_are_tables_in_main(full):
    assert sorted(p.stem for p in (PROJECT_DIR / "models/marts").glob("*.sql")) == MARTS
    tables = query(
        full.db,
        "select table_name from information_schema.tables "
        "where table_schema = 'main' and table_type = 'BASE TABLE' order by table_name",
    )
    assert [t["table_name"] for t in tables] == MARTS


def test_checkpoint_losses_are_mean_token_losses(full):
    rows = query(full.db, "select * from fct_checkpoint_losses")
    rows = by_key(rows, "model_size", "seed", "step")
    assert set(rows) == set(full.truth.token_losses)
    for checkpoint, losses in full.truth.token_losses.items():
        values = np.array(list(losses.values()))
        assert rows[checkpoint]["n_tokens"] == len(values)
        assert rows[checkpoint]["mean_token_loss"] == pytest.approx(values.mean(), rel=1e-12)
        assert rows[checkpoint]["suite"] == SUITE


def test_loss_consistency_matches_numpy(full):
    rows = by_key(query(full.db, "select * from fct_loss_consistency"), "model_size", "step")
    assert set(rows) == {(size, step) for size in SIZES for step in STEPS}
    for (size, step), row in rows.items():
        per_seed = np.array([
            np.mean(list(full.truth.token_losses[(size, seed, step)].values())) for seed in SEEDS
        ])  # fmt: skip
        q25, median, q75 = np.quantile(per_seed, [0.25, 0.5, 0.75])  # linear, numpy's default
        expected = {
            "n_seeds": len(SEEDS),
            "loss_median": median,
            "loss_q25": q25,
            "loss_q75": q75,
            "loss_mean": per_seed.mean(),
            "loss_std": per_seed.std(ddof=1),
            "loss_min": per_seed.min(),
            "loss_max": per_seed.max(),
        }
        for column, value in expected.items():
            assert row[column] == pytest.approx(value, rel=1e-9), (size, step, column)
    assert rows[("14m", 0)]["nominal_parameters"] == 14e6
    assert rows[("1.4b", 0)]["nominal_parameters"] == 1.4e9


def test_token_loss_agreement_matches_numpy_and_scipy(full):
    rows = by_key(query(full.db, "select * from fct_token_loss_agreement"), "model_size", "step")
    assert set(rows) == {(size, step) for size in SIZES for step in STEPS}
    for (size, step), row in rows.items():
        by_seed = {seed: full.truth.token_losses[(size, seed, step)] for seed in SEEDS}
        tokens = set().union(*by_seed.values())
        stds = []
        for token in tokens:
            values = [losses[token] for losses in by_seed.values() if token in losses]
            if len(values) >= 2:
                stds.append(np.std(values, ddof=1))
        pearsons = []
        for a, b in itertools.combinations(SEEDS, 2):
            shared = sorted(set(by_seed[a]) & set(by_seed[b]))
            x = [by_seed[a][t] for t in shared]
            y = [by_seed[b][t] for t in shared]
            pearsons.append(stats.pearsonr(x, y).statistic)
        assert row["n_seeds"] == len(SEEDS)
        assert row["n_tokens"] == len(stds) == len(tokens) - 1  # one token has one seed only
        assert row["mean_token_loss_std"] == pytest.approx(np.mean(stds), rel=1e-9)
        assert row["n_seed_pairs"] == 3
        assert row["mean_pairwise_pearson"] == pytest.approx(np.mean(pearsons), rel=1e-9)
        assert -1 <= row["mean_pairwise_pearson"] <= 1


def test_weight_features_match_numpy(full):
    rows = by_key(query(full.db, "select * from fct_weight_features"), "model_size", "seed", "step")
    assert set(rows) == set(full.truth.weight_rows)
    for checkpoint, weight_rows in full.truth.weight_rows.items():
        row = rows[checkpoint]
        matrices = [r for r in weight_rows if r["kind"] not in ("all_weights", "all_biases")]
        square = [r for r in matrices if r["n_rows"] == r["n_cols"]]
        assert row["n_matrices"] == len(matrices) == 4
        assert row["n_square_matrices"] == len(square) == 2
        for stat in ("l1", "l2", "spectral", "code_sparsity", "sv_mean", "sv_var"):
            expected = np.mean([r[stat] for r in matrices])
            assert row[f"{stat}_mean"] == pytest.approx(expected, rel=1e-12), stat
        for stat in ("trace", "computational_sparsity"):
            expected = np.mean([r[stat] for r in square])
            assert row[f"{stat}_mean"] == pytest.approx(expected, rel=1e-12), stat
        for kind, prefix in (("all_weights", "weights"), ("all_biases", "biases")):
            (aggregate,) = [r for r in weight_rows if r["kind"] == kind]
            for stat in ("mean", "median", "var"):
                assert row[f"{prefix}_{stat}"] == aggregate[stat]


# -- the extraction rules ---------------------------------------------------------


def test_staging_keeps_only_the_latest_successful_extraction(full):
    for model in ("stg_lake__token_stats", "stg_lake__weight_stats"):
        ids = query(
            full.db,
            f"select model_size, seed, step, list(distinct extraction_id) as ids from staging.{model} group by all",
        )
        found = {(r["model_size"], r["seed"], r["step"]): r["ids"] for r in ids}
        assert found == {c: [i] for c, i in full.truth.current_ids.items()}, model
        assert not {i for ids_ in found.values() for i in ids_} & full.truth.invisible_ids
    n_tokens = query(full.db, "select count(*) as n from staging.stg_lake__token_stats")[0]["n"]
    assert n_tokens == sum(len(losses) for losses in full.truth.token_losses.values())

    latest = query(
        full.db,
        "select count(*) filter (where is_latest_success) as current, "
        "count(*) filter (where not is_success) as failed from staging.stg_lake__manifest",
    )[0]
    assert latest == {"current": len(full.truth.current_ids) * 2, "failed": 4}

    log = query(full.db, "select model_size, seed, step, loss from staging.stg_lake__training_log")
    assert {(r["model_size"], r["seed"], r["step"]): r["loss"] for r in log} == {
        (size, seed, step): loss
        for (size, seed), losses in full.truth.training_losses.items()
        for step, loss in losses.items()
    }
    grid_steps = query(full.db, "select distinct step from staging.stg_lake__suite_grid order by 1")
    assert [r["step"] for r in grid_steps] == [*STEPS, MISSING_STEP]  # the older grid's 5 is gone


def test_missing_and_failed_checkpoints(full):
    rows = by_key(query(full.db, "select * from dim_checkpoints"), "model_size", "seed", "step")
    assert set(rows) == {(z, s, t) for z in SIZES for s in SEEDS for t in (*STEPS, MISSING_STEP)}
    for (_size, _seed, step), row in rows.items():
        assert row["is_expected"] is True
        assert row["is_present"] is (step != MISSING_STEP)
        assert row["has_token_stats"] is row["has_weight_stats"] is (step != MISSING_STEP)

    failed_missing = rows[(*FAILED_MISSING, MISSING_STEP)]
    assert failed_missing["n_failed_attempts"] == 2  # both extractors of the attempt
    assert failed_missing["last_error"] == "checkpoint not found"
    retried = rows[FAILED_AFTER_SUCCESS]
    assert retried["is_present"] is True  # the newer failure does not undo the success
    assert (retried["n_failed_attempts"], retried["last_error"]) == (2, "CUDA out of memory")
    clean = rows[(SIZES[0], SEEDS[0], STEPS[0])]
    assert (clean["n_failed_attempts"], clean["last_error"]) == (0, None)

    runs = query(full.db, "select * from dim_runs order by model_size, seed")
    assert len(runs) == len(SIZES) * len(SEEDS)
    for run in runs:
        assert run["n_expected_checkpoints"] == len(STEPS) + 1
        assert run["n_present_checkpoints"] == len(STEPS)
        assert run["nominal_parameters"] == {"14m": 14e6, "1.4b": 1.4e9}[run["model_size"]]


def test_dbt_tests_ran_and_passed(full):
    results = json.loads((state_dir(full.db) / "target" / "run_results.json").read_text())
    by_type: dict[str, list[str]] = {}
    for result in results["results"]:
        kind = result["unique_id"].split(".")[0]
        by_type.setdefault(kind, []).append(result["status"])
    assert len(by_type["test"]) >= 40
    assert len(by_type["model"]) == len(MARTS) + len(STAGING) + len(INTERMEDIATE)
    assert set(by_type["test"]) == {"pass"}
    assert "unit_test" not in by_type  # left out here; test_dbt_unit_tests runs them all
    assert set(by_type["model"]) == {"success"}
    # dbt's files went next to the warehouse
    assert (state_dir(full.db) / "logs" / "dbt.log").is_file()


# -- failures and young lakes -----------------------------------------------------


def test_a_failing_invariant_makes_build_raise(tmp_path):
    write_lake(tmp_path / "lake", datasets=("manifest", "token_stats"))
    # the newest success of one checkpoint holds a positive log-probability
    poison_token_stats(tmp_path / "lake", ("14m", 0, 0), extraction_id(10_000, 0xBAD))
    with pytest.raises(DbtBuildError) as raised:
        build(str(tmp_path / "lake"), tmp_path / "w.duckdb", select="+stg_lake__token_stats", unit_tests=False)
    message = str(raised.value)
    assert "expression_is_true_stg_lake__token_stats_target_logprob" in message
    assert "[fail]" in message
    assert [f.status for f in raised.value.failures] == ["fail"]


def test_a_lake_with_some_datasets_builds(full, partial):
    assert query(partial.db, "select count(*) as n from fct_weight_features")[0]["n"] == 0
    logs = query(partial.db, "select count(*) as n from staging.stg_lake__training_log")
    assert logs[0]["n"] == 0
    checkpoints = query(partial.db, "select * from dim_checkpoints")
    # without a grid nothing is expected; what was attempted and succeeded is present
    assert {r["is_expected"] for r in checkpoints} == {False}
    assert sum(r["is_present"] for r in checkpoints) == len(partial.truth.current_ids)
    losses = query(partial.db, "select * from fct_loss_consistency")
    assert len(losses) == len(SIZES) * len(STEPS)
    # the empty stand-ins have the types the real datasets have
    for model in STAGING:
        describe = f"select column_name, column_type from (describe staging.{model})"
        assert query(partial.db, describe) == query(full.db, describe), model


def test_a_missing_or_unsafe_lake_root_is_refused_before_dbt_runs(tmp_path):
    with pytest.raises(DbtBuildError, match="does not exist"):
        build(str(tmp_path / "nowhere"), tmp_path / "w.duckdb")
    (tmp_path / "it's").mkdir()
    with pytest.raises(DbtBuildError, match="contains"):
        build(str(tmp_path / "it's"), tmp_path / "w.duckdb")
    assert not (tmp_path / ".dbt").exists()


def test_spill_files_of_a_killed_build_are_removed_by_the_next(tmp_path):
    db = tmp_path / "warehouse" / "w.duckdb"
    spill = state_dir(db) / "tmp" / "spill"
    spill.mkdir(parents=True)
    left_behind = spill / "duckdb_temp_storage_DEFAULT-0.tmp"  # by a build that was killed
    left_behind.write_bytes(b"x" * 1024)

    (tmp_path / "lake").mkdir()
    build(str(tmp_path / "lake"), db, select="+stg_lake__manifest", unit_tests=False)

    assert not left_behind.exists()
    assert not spill.exists()  # its own spill folder is gone too


def test_a_second_build_of_a_warehouse_being_built_is_refused(tmp_path):
    db = tmp_path / "warehouse" / "w.duckdb"
    lock = state_dir(db) / "tmp" / ".lock"
    lock.parent.mkdir(parents=True)
    running = lock.parent / "spill" / "duckdb_temp_storage_DEFAULT-0.tmp"  # the running build's
    running.parent.mkdir()
    running.write_bytes(b"x")
    (tmp_path / "lake").mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DbtBuildError, match="another build is writing a warehouse in"):
            build(str(tmp_path / "lake"), db, select="+stg_lake__manifest", unit_tests=False)
        assert running.exists()  # left to the build that owns it
    finally:
        holder.kill()
        holder.wait()
    build(str(tmp_path / "lake"), db, select="+stg_lake__manifest", unit_tests=False)  # lock released


def test_a_rebuild_reuses_the_last_parse_of_the_project(tmp_path):
    db = tmp_path / "warehouse" / "w.duckdb"
    (tmp_path / "lake").mkdir()
    log = state_dir(db) / "logs" / "dbt.log"
    build(str(tmp_path / "lake"), db, select="+stg_lake__manifest", unit_tests=False)
    first = log.read_text()
    assert "Unable to do partial parsing because saved manifest not found" in first
    build(str(tmp_path / "lake"), db, select="+stg_lake__manifest", unit_tests=False)
    second = log.read_text()[len(first) :]
    assert "Unable to do partial parsing" not in second
    assert "Partial parsing enabled: 0 files deleted, 0 files added, 0 files changed" in second
