"""Early warning from an imported training map: the forecast is causal (at step t a run is
judged on the imported states up to t), a run that departs at t is flagged at t, a
backward transition no other run takes is a departure, a departure flags once it has
held for `signal_persistence` checkpoints, and the reason names the first departure and
each later kind. The map as pandas writes it (index column, a `group`
column) gives the same marts as the clean file.

The planted map, written out by hand: five runs, a checkpoint every 1000 steps up to
143000. The normal runs (seeds 1–4) go 0 → 1 → 2 → 3 → 4, two of them one checkpoint
after the other two at each change but the first, so that no run is ever alone ahead
or behind. Seed 0 enters state 1 at step 1000, twelve checkpoints before any other
run (13000), then follows the later group, and returns from state 4 to state 1 at
step 83000, which no other run does.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from polypythias.extract.ingest_training_map import ingest_training_map
from polypythias.warehouse.dbt import PROJECT_DIR, build
from polypythias.warehouse.lake import Lake
from test_dbt_build import query

SIZE = "70m"
STEPS = list(range(0, 143001, 1000))
FINAL = STEPS[-1]
OUTLIER, FIRST_DEPARTURE, RETURN_STEP = 0, 1000, 83000
#: The step each normal run enters states 1, 2, 3, 4.
NORMAL_ENTRIES = {
    1: (13000, 33000, 53000, 73000),
    2: (13000, 33000, 53000, 73000),
    3: (13000, 34000, 54000, 74000),
    4: (13000, 34000, 54000, 74000),
}
SELECT = "+fct_stability_forecast +fct_run_outliers +fct_training_phases"
#: The departure has held for `signal_persistence` checkpoints (the default) here.
PROJECT_VARS = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
PERSISTENCE = PROJECT_VARS["signal_persistence"]
FIRST_FLAG = STEPS[STEPS.index(FIRST_DEPARTURE) + PERSISTENCE - 1]


def state_of(seed: int, step: int) -> int:
    if seed == OUTLIER:
        if step >= RETURN_STEP:
            return 1
        entries = (FIRST_DEPARTURE, *NORMAL_ENTRIES[3][1:])
    else:
        entries = NORMAL_ENTRIES[seed]
    return sum(step >= entry for entry in entries)


def planted_map() -> pd.DataFrame:
    rows = [
        {
            "score": step / FINAL,
            "state": state_of(seed, step),
            "step": step,
            "seed": seed,
            "group": "outlier" if seed == OUTLIER else "stable",
        }
        for seed in range(5)
        for step in STEPS
    ]
    return pd.DataFrame(rows, index=range(100, 100 + len(rows)))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forecast")
    frame = planted_map()
    released, clean = tmp / "released.tsv", tmp / "clean.tsv"
    frame.to_csv(released, sep="\t")  # as the PolyPythias map was released
    frame[["step", "seed", "state", "score"]].to_csv(clean, sep="\t", index=False)
    lake = Lake(tmp / "lake")
    assert ingest_training_map(released, lake, "released", SIZE).map.ignored_columns == ("group",)
    ingest_training_map(clean, lake, "clean", SIZE)
    db = tmp / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        build(str(tmp / "lake"), db, select=SELECT, unit_tests=False)
    return db


def test_the_planted_map_is_what_the_docstring_says():
    paths = {seed: [state_of(seed, step) for step in STEPS] for seed in range(5)}
    assert paths[OUTLIER][:2] == [0, 1] and paths[1][12:14] == [0, 1]
    assert [state_of(OUTLIER, s) for s in (82000, 83000, FINAL)] == [4, 1, 1]
    assert all(paths[seed][-1] == 4 for seed in NORMAL_ENTRIES)


def test_the_outlier_is_flagged_at_its_first_departure_and_no_other_run_ever(warehouse):
    rows = query(warehouse, "select * from fct_stability_forecast where suite = 'clean' and signal = 'training_map'")
    flagged = {(r["seed"], r["step"]) for r in rows if r["flags"]}
    assert {seed for seed, _ in flagged} == {OUTLIER}
    outlier_steps = sorted(step for _, step in flagged)
    assert outlier_steps[0] == FIRST_FLAG > FIRST_DEPARTURE
    # From its first departure on, the outlier departs at every checkpoint (early entry, then
    # the shifted entry into state 1, then the return): flagged from the checkpoint where
    # the departure has persisted on.
    assert outlier_steps == [s for s in STEPS if s >= FIRST_FLAG]
    outlier = [r for r in rows if r["seed"] == OUTLIER]
    assert {r["first_flag_step"] for r in outlier} == {FIRST_FLAG}
    assert {r["lead_steps"] for r in outlier} == {FINAL - FIRST_FLAG}
    assert all(r["is_outlier_at_end"] for r in outlier)
    others = [r for r in rows if r["seed"] != OUTLIER]
    assert not any(r["is_outlier_at_end"] or r["is_false_alarm"] for r in others)
    assert {r["first_flag_step"] for r in others} == {None} and {r["lead_steps"] for r in others} == {None}


def test_at_each_step_the_forecast_reads_only_the_states_up_to_it(warehouse):
    rows = query(
        warehouse,
        "select * from fct_stability_forecast where suite = 'clean' and signal = 'training_map'"
        " and seed = 0 order by step",
    )
    detail = {r["step"]: r for r in rows}
    # Before step 13000 no other run is in state 1: the outlier is alone there.
    assert detail[1000]["score"] == 1 and "visits state 1, which 1 of 5 runs" in _details(warehouse, 1000)
    # The return at 83000 is unknown at 82000 and a departure from 83000 on.
    assert "returns from" not in _details(warehouse, 82000)
    assert "returns from state 4 to state 1 at step 83000, a transition no other run takes" in _details(
        warehouse, 83000
    )


def _details(db: Path, step: int) -> str:
    (row,) = query(
        db,
        "select departures from intermediate.int_outlier_training_map_departures "
        f"where suite = 'clean' and seed = 0 and horizon_step = {step}",
    )
    return row["departures"] or ""


def test_the_reason_names_the_first_departure_and_each_later_kind(warehouse):
    rows = query(warehouse, "select * from fct_run_outliers where suite = 'clean' and signal = 'training_map'")
    by_seed = {r["seed"]: r for r in rows}
    outlier = by_seed.pop(OUTLIER)
    assert outlier["fires"] and outlier["first_step"] == FIRST_FLAG
    assert outlier["reason"] == (
        f"visits state 1, which 1 of 5 runs of 70m visit (first at step {FIRST_FLAG}); later: "
        "enters state 1 at step 1000 (median step 13000), 12 checkpoints earlier than the median run "
        "(found at step 13000); "
        "returns from state 4 to state 1 at step 83000, a transition no other run takes (found at step 83000)"
    )
    assert not any(r["fires"] for r in by_seed.values())


def test_a_map_as_pandas_writes_it_gives_the_same_marts(warehouse):
    for mart in ("fct_training_phases", "fct_run_outliers", "fct_stability_forecast"):
        suites = {}
        for suite in ("released", "clean"):
            rows = query(warehouse, f"select * exclude (suite) from {mart} where suite = '{suite}'")
            suites[suite] = sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))
        assert suites["released"] == suites["clean"] and suites["clean"], mart
