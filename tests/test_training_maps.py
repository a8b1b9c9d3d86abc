"""The training maps (int_training_map_states_fitted, a dbt Python model, and the marts on
it) over a lake with known phases: states and BIC choice against an independent hmmlearn
fit, scores against sklearn's PCA, three clear phases found with consistent transitions,
an outlier run's own state, transitions against pandas, causal horizons, imported maps,
and a rebuild that gives the same states."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM
from sklearn.decomposition import PCA

from polypythias.extract.ingest_training_map import ingest_training_map
from polypythias.warehouse.dbt import build
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.synthetic import SyntheticLake
from test_dbt_build import query
from training_map_fixtures import (
    NORMAL_CHANGES,
    OUTLIER,
    STEPS,
    SUITE,
    Written,
    write_checkpoint,
    write_training_map_lake,
)

pytestmark = pytest.mark.slow

#: What the build needs: the training maps and what they read (dim_checkpoints for the
#: has_parent test of fct_weight_features), not the rest of the project; with
#: "cautious" indirect selection, only tests whose parents are all built run.
SELECT = "+fct_training_map_transitions +dim_checkpoints"
#: The defaults of the vars training_map_max_states, training_map_restarts and
#: training_map_random_state (dbt_project.yml).
MAX_STATES, RESTARTS, RANDOM_STATE = 8, 4, 0
#: An imported map of size a: (seed, step, state, score).
IMPORTED = [(0, 0, 3, -1.5), (0, 50, 1, 0.0), (0, 90, 1, 2.5), (1, 0, 3, None), (1, 90, 0, None)]


@dataclass
class Maps:
    db: Path
    lake: Path
    written: Written


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Maps:
    tmp = tmp_path_factory.mktemp("maps")
    written = write_training_map_lake(tmp / "lake")
    imported = tmp / "published.tsv"
    imported.write_text(
        "seed\tstep\tstate\tscore\n"
        + "".join(
            f"{seed}\t{step}\t{state}\t{'' if score is None else score}\n" for seed, step, state, score in IMPORTED
        )
    )
    # A decoy imported first: the marts must read only the newest import.
    decoy = tmp / "decoy.tsv"
    decoy.write_text("seed\tstep\tstate\n0\t0\t9\n")
    ingest_training_map(decoy, Lake(tmp / "lake"), SUITE, "a")
    ingest_training_map(imported, Lake(tmp / "lake"), SUITE, "a")
    db = tmp / "warehouse" / "polypythias.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        build(str(tmp / "lake"), db, select=SELECT, unit_tests=False)
    return Maps(db, tmp / "lake", written)


def fitted(maps: Maps) -> pd.DataFrame:
    return pd.DataFrame(query(maps.db, "select * from intermediate.int_training_map_states_fitted"))


# -- an independent fit -------------------------------------------------------------


@dataclass
class Reference:
    n_states: int
    states: np.ndarray  # hmmlearn's labels, rows in (seed, step) order
    probability: np.ndarray
    log_likelihood: float
    bic: float
    score: np.ndarray


def reference_fit(written: Written, size: str, horizon: int) -> tuple[list[tuple[int, int]], Reference]:
    """The training map of one size at one horizon, straight from the written features."""
    keys = [(seed, step) for seed in written.runs(size) for step in written.steps(size) if step <= horizon]
    blocks, lengths = [], []
    for seed in written.runs(size):
        values = np.array([written.features[size, seed, step] for s, step in keys if s == seed])
        std = values.std(axis=0)
        blocks.append(np.where(std > 0, (values - values.mean(axis=0)) / np.where(std > 0, std, 1), 0.0))
        lengths.append(len(values))
    x = np.vstack(blocks)
    x = x[:, np.any(x != 0, axis=0)]
    n_rows, n_features = x.shape
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(1, MAX_STATES + 1):
            free = (n - 1) + n * (n - 1) + 2 * n * n_features  # start, transitions, means, variances
            if n > 1 and free > x.size:
                continue
            fits = []
            for restart in range(RESTARTS):
                hmm = GaussianHMM(
                    n, covariance_type="diag", n_iter=100, random_state=RANDOM_STATE + restart, implementation="scaling"
                )
                hmm.fit(x, lengths)
                fits.append((hmm.score(x, lengths), -restart, hmm))
            log_likelihood, _, hmm = max(fits, key=lambda f: f[:2])
            bic = -2 * log_likelihood + free * np.log(n_rows)
            if best is None or bic < best[0]:
                best = (bic, log_likelihood, hmm)
        bic, log_likelihood, hmm = best
        states = hmm.predict(x, lengths)
        probability = hmm.predict_proba(x, lengths)[np.arange(n_rows), states]
    index = np.array([STEPS.index(step) for _, step in keys], dtype=float)
    score = PCA(n_components=1).fit_transform(x)[:, 0]
    if np.corrcoef(score, index)[0, 1] < 0:
        score = -score
    return keys, Reference(hmm.n_components, states, probability, log_likelihood, bic, score)


def same_partition(a, b) -> bool:
    """Whether two labellings group the rows the same (equal up to renaming labels)."""
    pairs = set(zip(a, b, strict=True))
    return len(pairs) == len(set(a)) == len(set(b))


@pytest.mark.parametrize(("size", "horizon"), [("a", 50), ("b", 90)])
def test_states_match_an_independent_hmmlearn_fit(maps, size, horizon):
    rows = fitted(maps)
    rows = rows[(rows.model_size == size) & (rows.horizon_step == horizon)].sort_values(["seed", "step"])
    keys, expected = reference_fit(maps.written, size, horizon)
    assert list(zip(rows.seed, rows.step, strict=True)) == keys
    assert set(rows.n_states) == {expected.n_states}
    assert same_partition(rows.state.tolist(), expected.states.tolist())
    np.testing.assert_allclose(rows.state_probability, expected.probability, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(rows.score, expected.score, rtol=1e-6, atol=1e-9)
    assert rows.log_likelihood.iloc[0] == pytest.approx(expected.log_likelihood, rel=1e-9)
    assert rows.bic.iloc[0] == pytest.approx(expected.bic, rel=1e-9)
    assert set(rows.n_features) == {4} and set(rows.n_observations) == {len(keys)}
    assert set(rows.n_runs) == {len(maps.written.runs(size))}


def test_labels_are_canonical(maps):
    rows = fitted(maps)
    for _, horizon_rows in rows[rows.model_size.isin(["a", "b"])].groupby(["model_size", "horizon_step"]):
        mean_index = horizon_rows.groupby("state").checkpoint_index.mean()
        # visited states are 0 … k-1, in the order of their mean checkpoint index
        assert list(mean_index.index) == list(range(len(mean_index)))
        assert mean_index.is_monotonic_increasing
        assert (horizon_rows.checkpoint_index == horizon_rows.step.map(STEPS.index)).all()


# -- what the maps show -------------------------------------------------------------


def phases(maps: Maps, source: str = "hmm") -> pd.DataFrame:
    return pd.DataFrame(query(maps.db, f"select * from fct_training_phases where map_source = '{source}'"))


def paths(rows: pd.DataFrame) -> dict[int, tuple[int, ...]]:
    return {seed: tuple(run.sort_values("step").state) for seed, run in rows.groupby("seed")}


def test_three_clear_phases_give_three_states_that_every_run_passes_in_order(maps):
    rows = phases(maps)
    size_a = rows[rows.model_size == "a"]
    assert set(size_a.n_states) == {3}
    regime_state = {"A": 0, "B": 1, "C": 2}
    for row in size_a.itertuples():
        assert row.state == regime_state[maps.written.regimes["a", row.seed, row.step]], row
    assert (size_a.state_probability > 0.99).all()
    transitions = query(
        maps.db, "select * from fct_training_map_transitions where model_size = 'a' and map_source = 'hmm'"
    )
    expected = {(regime_state[a], regime_state[b]): step for (a, b), step in NORMAL_CHANGES.items()}
    assert {(t["from_state"], t["to_state"]): t["first_step"] for t in transitions} == expected
    for t in transitions:
        assert t["n_runs"] == t["n_transitions"] == t["n_runs_of_map"] == 4
        assert t["seeds"] == [0, 1, 2, 3]
        assert t["median_step"] == t["first_step"]


def test_the_outlier_run_visits_a_state_no_other_run_visits(maps):
    rows = phases(maps)
    size_b = rows[rows.model_size == "b"]
    by_seed = paths(size_b)
    outlier = OUTLIER[1]
    others = {seed: path for seed, path in by_seed.items() if seed != outlier}
    assert len(set(others.values())) == 1  # the stable runs take one path
    own = set(by_seed[outlier]) - set().union(*others.values())
    assert own
    entered = size_b[(size_b.seed == outlier) & size_b.state.isin(own)].step.min()
    assert maps.written.regimes["b", outlier, entered] == "D"
    assert all(
        maps.written.regimes["b", outlier, step] == "D"
        for step in size_b[(size_b.seed == outlier) & size_b.state.isin(own)].step
    )
    # the score tells the phases apart too: it rises with the step on average
    for _, run in size_b.groupby("seed"):
        run = run.sort_values("step")
        assert run.score.iloc[-1] > run.score.iloc[0]


def test_transitions_match_pandas(maps):
    rows = pd.DataFrame(query(maps.db, "select * from fct_training_phases")).sort_values(
        ["suite", "model_size", "map_source", "seed", "step"]
    )
    rows["from_state"] = rows.groupby(["suite", "model_size", "map_source", "seed"]).state.shift()
    changes = rows[rows.from_state.notna() & (rows.from_state != rows.state)]
    expected = {}
    for (suite, size, source, from_state, to_state), group in changes.groupby(
        ["suite", "model_size", "map_source", "from_state", "state"]
    ):
        expected[suite, size, source, int(from_state), int(to_state)] = {
            "n_transitions": len(group),
            "n_runs": group.seed.nunique(),
            "seeds": sorted(group.seed.unique().tolist()),
            "n_runs_of_map": rows[(rows.model_size == size) & (rows.map_source == source)].seed.nunique(),
            "first_step": group.step.min(),
            "median_step": float(np.median(group.step)),
        }
    found = {
        (t["suite"], t["model_size"], t["map_source"], t["from_state"], t["to_state"]): t
        for t in query(maps.db, "select * from fct_training_map_transitions")
    }
    assert set(found) == set(expected)
    assert {k[2] for k in expected} == {"hmm", "imported"}
    for key, values in expected.items():
        for column, value in values.items():
            assert found[key][column] == value, (key, column)


def test_horizons_are_prefixes_from_the_third_step(maps):
    rows = fitted(maps)
    for size in ("a", "b"):
        size_rows = rows[rows.model_size == size]
        assert sorted(size_rows.horizon_step.unique()) == list(STEPS[2:])
        for horizon, at in size_rows.groupby("horizon_step"):
            expected = {(seed, step) for seed in maps.written.runs(size) for step in STEPS if step <= horizon}
            assert set(zip(at.seed, at.step, strict=True)) == expected
    # two steps: no horizon, no map
    assert "short" not in set(rows.model_size)
    # nothing varies: one state, certain, score 0
    flat = rows[rows.model_size == "flat"]
    assert len(flat) == 6
    assert set(flat.n_features) == {0} and set(flat.n_states) == {1} and set(flat.state) == {0}
    assert set(flat.state_probability) == {1.0} and set(flat.score) == {0.0}
    assert flat.bic.isna().all()
    # fct_training_phases is the final horizon of each map
    final = phases(maps)
    assert len(final) == len(rows[rows.horizon_step == rows.groupby("model_size").horizon_step.transform("max")])
    assert set(final.horizon_step) == {90, 20}


def test_the_horizon_cap_spreads_the_horizons_evenly():
    from polypythias.warehouse import training_map as module

    steps = [0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256]  # the micro suite's
    every = steps[2:]
    assert module.horizons_of(steps, 0) == module.horizons_of(steps, 12) == module.horizons_of(steps, 99) == every
    # 4 of the 12: indexes 0, 11/3, 22/3, 11 rounded = 0, 4, 7, 11 of every
    assert module.horizons_of(steps, 4) == [2, 32, 128, 256]
    assert module.horizons_of(steps, 1) == [256]
    assert module.horizons_of(steps[:2], 0) == []


def test_an_imported_map_sits_next_to_the_fitted_one(maps):
    rows = phases(maps, "imported").sort_values(["seed", "step"])
    assert [(r.seed, r.step, r.state) for r in rows.itertuples()] == [(s, t, q) for s, t, q, _ in IMPORTED]
    assert [None if pd.isna(x) else x for x in rows.score] == [score for *_, score in IMPORTED]
    assert rows.state_probability.isna().all()
    assert set(rows.model_size) == {"a"} and set(rows.suite) == {SUITE}
    assert set(rows.n_states) == {3}  # states 0, 1, 3
    assert set(rows.horizon_step) == {90}
    # the fitted map of the same size is untouched
    assert len(phases(maps)[lambda r: r.model_size == "a"]) == 4 * len(STEPS)


KEYS = "suite, model_size, horizon_step, seed, step"


def test_a_rebuild_gives_the_same_states(maps):
    """Near the end of the module: refits the Python model in place."""
    before = query(maps.db, f"select * from intermediate.int_training_map_states_fitted order by {KEYS}")
    build(str(maps.lake), maps.db, select="int_training_map_states_fitted", full_refresh=True, unit_tests=False)
    after = query(maps.db, f"select * from intermediate.int_training_map_states_fitted order by {KEYS}")
    assert after == before


def test_an_incremental_build_refits_only_the_horizons_that_changed(maps):
    """Last in the module: adds checkpoints to the lake and removes a size."""
    import duckdb

    # A mark no fit writes (a valid probability, for the model's data tests): a
    # horizon that still has it after the build was kept, not refitted.
    mark = 0.987654321
    with duckdb.connect(str(maps.db)) as connection:
        connection.execute(f"update intermediate.int_training_map_states_fitted set state_probability = {mark}")
    # Size a gets step 100 for seed 0; short gets its 3rd step (so its first map);
    # flat leaves the lake.
    for serial, (size, step) in enumerate([("a", 100), ("short", 20)], start=10_000):
        write_checkpoint(SyntheticLake(maps.lake), size, 0, step, serial, np.full(4, 3.0))
    shutil.rmtree(maps.lake / f"weight_stats/suite={SUITE}/model_size=flat")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        build(str(maps.lake), maps.db, select="+int_training_map_states_fitted", unit_tests=False)
    incremental = fitted(maps).sort_values(KEYS.split(", ")).reset_index(drop=True)

    kept = incremental.state_probability == mark
    horizon_kept = kept.groupby([incremental.model_size, incremental.horizon_step]).all()
    assert set(incremental.model_size) == {"a", "b", "short"}  # flat's maps are gone
    assert horizon_kept.loc["b"].all()  # b did not change
    assert horizon_kept.loc["a"].drop(100).all()  # nor did a's prefixes up to step 90
    assert not kept[incremental.horizon_step.eq(100) | incremental.model_size.eq("short")].any()
    assert set(incremental[~kept].model_size) == {"a", "short"}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        build(str(maps.lake), maps.db, select="+int_training_map_states_fitted", full_refresh=True, unit_tests=False)
    refreshed = fitted(maps).sort_values(KEYS.split(", ")).reset_index(drop=True)
    assert not (refreshed.state_probability == mark).any()
    # The same maps as refitting everything: kept horizons in all but the mark.
    pd.testing.assert_frame_equal(
        incremental.drop(columns="state_probability"), refreshed.drop(columns="state_probability")
    )
    pd.testing.assert_series_equal(incremental.state_probability[~kept], refreshed.state_probability[~kept])
