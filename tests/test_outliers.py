"""The outlier and early-warning marts (fct_run_outliers, fct_stability_forecast) over
a small lake with one planted outlier run (tests/outlier_fixtures.py), against an
independent computation of every signal with numpy, pandas and sklearn from the
values the lake was written with: leave-one-out z-scores, Gwet's AC1, rolling
median / MAD of the training log, the training-map departures; then the flags at
every checkpoint, the verdict at the end, lead times and false alarms. The planted
run fires every signal with a plain-language reason; no other run fires any."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from outlier_fixtures import (
    LOG_STEPS,
    OUTLIER,
    OUTLIER_FROM,
    SEEDS,
    SIZE,
    SMALL,
    SPIKE_STEPS,
    STEPS,
    SUITE,
    TASKS,
    write_lake,
)
from polypythias.warehouse.dbt import PROJECT_DIR, build
from test_dbt_build import query

pytestmark = pytest.mark.slow

SIGNALS = ("training_map", "performance", "loss_spikes", "final_loss", "agreement", "diverged")
FINAL = max(STEPS)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outliers")
    truth = write_lake(tmp / "lake")
    db = tmp / "warehouse" / "polypythias.duckdb"
    build(str(tmp / "lake"), db, unit_tests=False)
    return db, truth


@pytest.fixture(scope="module")
def settings() -> dict:
    """The vars the build used: dbt_project.yml's defaults."""
    project = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())
    return project["vars"]


@pytest.fixture(scope="module")
def expected(built, settings):
    return Expected(built[1], settings)


# -- the independent computation ----------------------------------------------------


def loo_z(values: dict[int, float]) -> dict[int, float | None]:
    """Each seed against the mean and sample std of the other seeds; None under 3 seeds."""
    out = {}
    for seed, value in values.items():
        others = np.array([v for s, v in values.items() if s != seed])
        sd = others.std(ddof=1) if len(others) >= 2 else 0.0
        out[seed] = (value - others.mean()) / sd if len(values) >= 3 and sd > 0 else None
    return out


def gwet_ac1(a: list[int], b: list[int]) -> float:
    """Gwet's AC1 from a confusion matrix: p_e = Σ π_c (1 − π_c) / (Q − 1), π_c the
    raters' mean share of label c over the labels either uses; 1 with a single label."""
    labels = sorted(set(a) | set(b))
    if len(labels) == 1:
        return 1.0
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    table /= table.sum()
    pi = (table.sum(axis=1) + table.sum(axis=0)) / 2
    chance = (pi * (1 - pi)).sum() / (len(labels) - 1)
    return float((np.trace(table) - chance) / (1 - chance))


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


class Expected:
    """Every signal of every run at every checkpoint, and the verdicts."""

    def __init__(self, truth, settings: dict):
        self.settings = settings
        self.warmup = settings["outlier_warmup_fraction"] * FINAL
        self.runs = [(size, seed) for size, seeds in SEEDS.items() for seed in seeds]
        self.scores: dict[tuple, float | None] = {}  # (size, seed, signal, step) → score
        self.flags: dict[tuple, bool] = {}
        self._performance(truth)
        self._final_loss(truth)
        self._agreement(truth)
        self._loss_spikes(truth)
        self._training_map(truth)
        self._diverged()
        persistence = settings["signal_persistence"]
        for size, seed in self.runs:
            for signal in SIGNALS:
                if signal == "loss_spikes":
                    continue
                held = 0  # consecutive checkpoints beyond the threshold, up to the step
                for step in STEPS:
                    score = self.scores[(size, seed, signal, step)]
                    beyond = score is not None and self._beyond(signal, score)
                    held = held + 1 if beyond else 0
                    # states must persist (or hold at the run's end); a divergence is an event
                    persists = signal == "diverged" or held >= persistence or step == FINAL
                    # a divergence and an imported map's departures flag during warm-up too
                    self.flags[(size, seed, signal, step)] = (
                        (step >= self.warmup or signal in ("diverged", "training_map")) and beyond and persists
                    )
        self._verdicts()

    def _beyond(self, signal: str, score: float) -> bool:
        s = self.settings
        return {
            "training_map": score >= 1,
            "performance": score < s["performance_z_threshold"],
            "final_loss": score > s["final_loss_z_threshold"],
            "agreement": score < s["agreement_z_threshold"],
            "diverged": score >= 1,
        }[signal]

    def _diverged(self):
        """Diverged checkpoints of the run up to each step: this lake has none
        (tests/test_divergence.py plants one)."""
        for size, seed in self.runs:
            for step in STEPS:
                self.scores[(size, seed, "diverged", step)] = 0.0

    def _per_size_step(self, signal, values_of):
        for size, seeds in SEEDS.items():
            for step in STEPS:
                for seed, z in values_of(size, seeds, step).items():
                    self.scores[(size, seed, signal, step)] = z

    def _performance(self, truth):
        def values(size, seeds, step):
            per_task = [loo_z({seed: truth.accuracies[(size, seed, step, task)] for seed in seeds}) for task in TASKS]
            return {seed: mean_or_none(z[seed] for z in per_task) for seed in seeds}

        self._per_size_step("performance", values)

    def _final_loss(self, truth):
        self._per_size_step(
            "final_loss",
            lambda size, seeds, step: loo_z({seed: truth.token_losses[(size, seed, step)] for seed in seeds}),
        )

    def _agreement(self, truth):
        def values(size, seeds, step):
            per_task = {seed: [] for seed in seeds}
            for task in TASKS:
                pairs = {seed: [] for seed in seeds}
                for a, b in itertools.combinations(seeds, 2):
                    k = gwet_ac1(truth.predictions[(size, a, step, task)],
                                 truth.predictions[(size, b, step, task)])  # fmt: skip
                    pairs[a].append(k)
                    pairs[b].append(k)
                for seed in seeds:
                    if pairs[seed]:
                        per_task[seed].append(np.mean(pairs[seed]))
            means = {seed: float(np.mean(v)) for seed, v in per_task.items() if v}
            return loo_z(means)

        self._per_size_step("agreement", values)

    def _loss_spikes(self, truth):
        window, k = self.settings["loss_spike_window"], self.settings["loss_spike_k"]
        self.deviations: dict[tuple[str, int], pd.Series] = {}
        # (size, seed, step) → the spike's loss, window median, robust deviation, deviation
        self.spikes: dict[tuple[str, int, int], dict[str, float]] = {}
        for run in self.runs:
            loss = pd.Series(truth.training_losses[run]).sort_index()
            deviation = pd.Series(np.nan, index=loss.index)
            window_median = pd.Series(np.nan, index=loss.index)
            robust = pd.Series(np.nan, index=loss.index)
            for i in range(window, len(loss)):
                previous = loss.iloc[i - window : i].to_numpy()
                median = np.median(previous)
                mad = np.median(np.abs(previous - median))
                window_median.iloc[i], robust.iloc[i] = median, 1.4826 * mad
                if mad > 0:
                    deviation.iloc[i] = (loss.iloc[i] - median) / (1.4826 * mad)
            after = deviation[deviation.index >= self.warmup].dropna()
            self.deviations[run] = after
            spikes = after[after > k]
            for step, score in spikes.items():
                self.spikes[(*run, int(step))] = {
                    "loss": float(loss[step]),
                    "window_median": float(window_median[step]),
                    "robust_deviation": float(robust[step]),
                    "deviation": float(score),
                }
            for step in STEPS:
                seen = after[after.index <= step]
                self.scores[(*run, "loss_spikes", step)] = float(seen.max()) if len(seen) else None
                self.flags[(*run, "loss_spikes", step)] = bool((spikes.index <= step).any())

    def _training_map(self, truth):
        """The imported maps: a horizon at each step, the states up to it; departures
        as the rules say."""
        s = self.settings
        for size, seeds in SEEDS.items():
            paths = {seed: truth.map_states[(size, seed)] for seed in seeds}
            for step in STEPS:
                prefix = {seed: {t: state for t, state in path.items() if t <= step} for seed, path in paths.items()}
                departures = self.departures(prefix, s["training_map_rare_fraction"],
                                             s["training_map_entry_shift"])  # fmt: skip
                for seed in seeds:
                    score = departures[seed] if len(seeds) >= 3 else None
                    self.scores[(size, seed, "training_map", step)] = score

    @staticmethod
    def departures(paths: dict[int, dict[int, int]], rare_fraction, entry_shift):
        """Departures per seed from {seed: {step: state}} (at one horizon)."""
        n = len(paths)
        index = {step: i for i, step in enumerate(sorted({s for p in paths.values() for s in p}))}
        entries = {
            seed: {state: min(index[s] for s, st in path.items() if st == state)
                   for state in set(path.values())}
            for seed, path in paths.items()
        }  # fmt: skip
        visits = {}
        for entry in entries.values():
            for state in entry:
                visits[state] = visits.get(state, 0) + 1
        common = sorted(state for state, count in visits.items() if count == n)
        orders = {seed: tuple(sorted(common, key=lambda st: (entry[st], st))) for seed, entry in entries.items()}
        counts = pd.Series(list(orders.values())).value_counts()
        majority = counts.index[0] if counts.iloc[0] > n / 2 else None
        medians = {state: np.median([entry[state] for entry in entries.values()])
                   for state in common}  # fmt: skip
        moves = {  # seed → [(from, to, index of the step)] where the state changes
            seed: [(a, b, index[t]) for (_, a), (t, b) in zip(sorted(path.items()), sorted(path.items())[1:])
                   if a != b]
            for seed, path in paths.items()
        }  # fmt: skip
        out = {}
        for seed, entry in entries.items():
            rare = sum(visits[state] < rare_fraction * n for state in entry)
            skipped = sum(count == n - 1 and state not in entry for state, count in visits.items())
            order = majority is not None and orders[seed] != majority
            shifted = sum(abs(entry[state] - medians[state]) > entry_shift for state in common)
            taken_by_others = {(a, b) for other, m in moves.items() if other != seed for a, b, _ in m}
            backward = sum(entry[b] < i and (a, b) not in taken_by_others for a, b, i in moves[seed])
            out[seed] = rare + skipped + int(order) + shifted + backward
        return out

    def _verdicts(self):
        """fct_run_outliers: score, fires, first_step per run × signal."""
        k = self.settings["loss_spike_k"]
        self.first_flag: dict[tuple, int | None] = {}
        self.outliers: dict[tuple, dict] = {}
        for run in self.runs:
            for signal in SIGNALS:
                flagged = [t for t in STEPS if self.flags[(*run, signal, t)]]
                self.first_flag[(*run, signal)] = min(flagged) if flagged else None
                scored = [t for t in STEPS if self.scores[(*run, signal, t)] is not None]
                if signal == "performance":
                    after = [self.scores[(*run, signal, t)] for t in scored if t >= self.warmup]
                    score = min(after) if after else None
                    fires = bool(flagged)
                    first = min(flagged) if flagged else None
                elif signal == "loss_spikes":
                    deviations = self.deviations[run]
                    score = float(deviations.max()) if len(deviations) else None
                    spikes = deviations[deviations > k]
                    fires = len(spikes) > 0
                    first = int(spikes.index.min()) if fires else None
                else:
                    last = max(scored) if scored else None
                    score = self.scores[(*run, signal, last)] if last is not None else None
                    fires = last is not None and self.flags[(*run, signal, last)]
                    first = self.first_flag[(*run, signal)] if fires else None
                self.outliers[(*run, signal)] = {"score": score, "fires": fires, "first_step": first}
        self.is_outlier = {run: any(self.outliers[(*run, signal)]["fires"] for signal in SIGNALS) for run in self.runs}


def approx(value):
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)


# -- the marts against it ------------------------------------------------------------


def test_forecast_scores_and_flags_match_an_independent_computation(built, expected):
    rows = query(built[0], "select * from fct_stability_forecast")
    found = {(r["model_size"], r["seed"], r["signal"], r["step"]): r for r in rows}
    assert set(found) == set(expected.scores)
    for key, row in found.items():
        assert row["suite"] == SUITE
        assert row["score"] == approx(expected.scores[key]), key
        assert row["flags"] == expected.flags[key], key
        assert row["final_step"] == FINAL


def test_run_outliers_match_an_independent_computation(built, expected):
    rows = query(built[0], "select * from fct_run_outliers")
    found = {(r["model_size"], r["seed"], r["signal"]): r for r in rows}
    assert set(found) == set(expected.outliers)
    for key, row in found.items():
        want = expected.outliers[key]
        assert row["score"] == approx(want["score"]), key
        assert row["fires"] == want["fires"], key
        assert row["first_step"] == want["first_step"], key
        run = key[:2]
        assert row["is_outlier"] == expected.is_outlier[run]
        assert row["n_signals_firing"] == sum(expected.outliers[(*run, signal)]["fires"] for signal in SIGNALS)


def test_the_planted_run_fires_every_signal_with_a_reason_and_no_other_run_fires(built, expected):
    rows = query(built[0], "select * from fct_run_outliers order by model_size, seed, signal")
    outlier = {r["signal"]: r for r in rows if (r["model_size"], r["seed"]) == OUTLIER}
    # every signal but diverged (its checkpoints are finite)
    assert all(r["fires"] for signal, r in outlier.items() if signal != "diverged")
    assert outlier["diverged"]["reason"].startswith("within threshold: no diverged checkpoint")
    # At step 60 the planted run enters state 3, which no other run visits, while the
    # other four have all entered state 2, which it never visits until step 100; the
    # departure flags once it has held for signal_persistence checkpoints.
    persisted = STEPS[STEPS.index(60) + expected.settings["signal_persistence"] - 1]
    assert outlier["training_map"]["reason"] == (
        f"visits state 3, which 1 of 5 runs of {SIZE} visit; never visits state 2, which the other 4 runs visit "
        f"(first at step {persisted})"
    )
    assert outlier["loss_spikes"]["reason"].startswith(
        f"{len(SPIKE_STEPS)} loss spikes after warm-up; the first at step {SPIKE_STEPS[0]}: loss "
    )
    assert outlier["loss_spikes"]["first_step"] == SPIKE_STEPS[0]
    assert outlier["performance"]["reason"].startswith("mean z-score -")
    assert f"at step {persisted} (" in outlier["performance"]["reason"]
    assert "first flagged below -4 after warm-up" in outlier["performance"]["reason"]
    assert outlier["final_loss"]["reason"].startswith("token loss ")
    assert outlier["agreement"]["reason"].startswith("mean AC1 ")

    others = [r for r in rows if (r["model_size"], r["seed"]) != OUTLIER]
    assert not any(r["fires"] or r["is_outlier"] for r in others)
    assert all(r["reason"].startswith(("within threshold: ", "no score: ")) for r in others)
    small = [r for r in others if r["model_size"] == SMALL and r["signal"] not in ("loss_spikes", "diverged")]
    assert small and all(r["score"] is None for r in small)
    assert {r["reason"] for r in small} == {f"no score: 2 seeds of {SMALL}, a comparison needs 3"}
    # a run's own training log needs no other seed
    small_logs = [r for r in others if r["model_size"] == SMALL and r["signal"] == "loss_spikes"]
    assert small_logs and all(r["score"] is not None for r in small_logs)


def test_lead_time_and_false_alarms_match_an_independent_computation(built, expected):
    rows = query(built[0], "select * from fct_stability_forecast")
    for row in rows:
        run = (row["model_size"], row["seed"])
        first = expected.first_flag[(*run, row["signal"])]
        assert row["first_flag_step"] == first
        assert row["is_outlier_at_end"] == expected.is_outlier[run]
        lead = FINAL - first if expected.is_outlier[run] and first is not None else None
        assert row["lead_steps"] == lead
        assert row["is_false_alarm"] == (row["flags"] and not expected.is_outlier[run])

    # The planted run: flagged once its turned data (from step 60) have held for
    # signal_persistence checkpoints, the imported map likewise from its entry into
    # state 3 (60), no other run has (the map is read up to each step); the spikes,
    # events, at the first checkpoint after them (80).
    persisted = STEPS[STEPS.index(OUTLIER_FROM) + expected.settings["signal_persistence"] - 1]
    leads = {r["signal"]: r["lead_steps"] for r in rows if (r["model_size"], r["seed"]) == OUTLIER}
    assert leads == {
        "final_loss": FINAL - persisted,
        "performance": FINAL - persisted,
        "agreement": FINAL - persisted,
        "loss_spikes": FINAL - min(t for t in STEPS if t >= SPIKE_STEPS[0]),
        "training_map": FINAL - persisted,
        "diverged": None,
    }
    false_alarms = sorted((r["model_size"], r["seed"], r["signal"], r["step"]) for r in rows if r["is_false_alarm"])
    assert false_alarms == sorted(
        key for key, flag in expected.flags.items() if flag and not expected.is_outlier[key[:2]]
    )


def test_loss_spikes_mart_holds_every_spike_of_an_independent_computation(built, expected):
    rows = query(built[0], "select * from fct_loss_spikes")
    found = {(r["model_size"], r["seed"], r["step"]): r for r in rows}
    assert set(found) == set(expected.spikes)
    assert {r["suite"] for r in rows} == {SUITE}
    # the planted run's spikes, and no other run's
    assert sorted(found) == [(*OUTLIER, step) for step in SPIKE_STEPS]
    for key, spike in expected.spikes.items():
        row = found[key]
        for column, value in spike.items():
            assert row[column] == approx(value), (key, column)
        assert row["threshold"] == expected.settings["loss_spike_k"]
        assert row["is_after_warmup"] is True


def test_nothing_flags_before_warm_up(built, expected):
    rows = query(built[0], "select * from fct_stability_forecast where step < "
                 f"{expected.warmup}")  # fmt: skip
    # (an imported map's states are given: its departures may flag in warm-up; here none does)
    assert rows and not any(r["flags"] for r in rows)
    # the log is read up to each checkpoint: no training-log step after warm-up yet
    assert all(r["score"] is None for r in rows if r["signal"] == "loss_spikes")
    assert len(LOG_STEPS) > expected.settings["loss_spike_window"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"loss_spike_window": 1.5}, "var loss_spike_window must be an integer >= 2"),
        ({"outlier_warmup_fraction": 2}, "var outlier_warmup_fraction must be a number >= 0 and"),
        ({"performance_tasks": "piqa"}, "var performance_tasks must be a non-empty list"),
        ({"agreement_z_threshold": 3}, "var agreement_z_threshold must be a number <= 0"),
        ({"signal_persistence": 0}, "var signal_persistence must be an integer >= 1"),
        ({"signal_persistence": 2.5}, "var signal_persistence must be an integer >= 1"),
    ],
)
def test_a_bad_var_stops_the_build_naming_it(tmp_path, override, message):
    from dbt.cli.main import dbtRunner

    target = tmp_path / "target"
    args = [
        "compile", "--quiet", "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(target), "--log-path", str(tmp_path / "logs"),
        "--select", "int_outlier_checkpoints", "--vars", json.dumps(override),
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POLYPYTHIAS_DB", str(tmp_path / "w.duckdb"))
        patch.setenv("POLYPYTHIAS_LAKE", str(tmp_path / "lake"))
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        result = dbtRunner().invoke(args)
    assert not result.success
    assert f"outliers: {message}" in str(result.exception)
