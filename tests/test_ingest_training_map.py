"""`polypythias ingest training-map`: TSV and CSV maps into the lake, every kind of bad
input refused with the file and line named, re-imports that replace the map, and the
command line. (That imported rows reach fct_training_phases as map_source 'imported'
is checked with the built marts, in test_training_maps.py.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract.ingest_training_map import (
    TrainingMapError,
    ingest_training_map,
    read_training_map,
)
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import TRAINING_MAP_STATES


def rows_of(lake: Lake, suite: str, size: str) -> list[tuple]:
    table = lake.read(TRAINING_MAP_STATES)
    table = table.filter(pc.and_(pc.equal(table["suite"], suite), pc.equal(table["model_size"], size)))
    return sorted(zip(*(table[c].to_pylist() for c in ("seed", "step", "state", "score")), strict=True))


def newest_rows(lake: Lake, suite: str, size: str) -> list[tuple]:
    """The rows of the partition's newest import (what staging reads)."""
    table = lake.read(TRAINING_MAP_STATES)
    table = table.filter(pc.and_(pc.equal(table["suite"], suite), pc.equal(table["model_size"], size)))
    newest = pc.max(table["extraction_id"]).as_py()
    table = table.filter(pc.equal(table["extraction_id"], newest))
    return sorted(zip(*(table[c].to_pylist() for c in ("seed", "step", "state", "score")), strict=True))


def partition_files(lake_root: Path, suite: str, size: str) -> list[Path]:
    return sorted((lake_root / "training_map_states" / f"suite={suite}" / f"model_size={size}").glob("*.parquet"))


# -- good files ---------------------------------------------------------------------


def test_a_tsv_map_with_scores(tmp_path):
    # columns in any order and case, a byte-order mark, CRLF line ends and a blank line
    file = tmp_path / "published.tsv"
    content = "\ufeffState\tseed\tSTEP\tscore\r\n2\t0\t10\t-0.5\r\n\r\n0\t1\t0\t1e-3\r\n1\t0\t0\t\r\n"
    file.write_bytes(content.encode("utf-8"))
    lake = Lake(tmp_path / "lake")
    imported = ingest_training_map(file, lake, "pythia", "410m")
    assert rows_of(lake, "pythia", "410m") == [(0, 0, 1, None), (0, 10, 2, -0.5), (1, 0, 0, 0.001)]
    assert (imported.map.n_rows, imported.map.n_runs, imported.map.n_states, imported.superseded) == (3, 2, 3, 0)
    table = lake.read(TRAINING_MAP_STATES)
    assert set(table["source_file"].to_pylist()) == {str(file.absolute())}
    assert set(table["source_sha256"].to_pylist()) == {hashlib.sha256(file.read_bytes()).hexdigest()}
    assert table["ingested_at"].null_count == 0
    assert len(set(table["extraction_id"].to_pylist())) == 1
    assert partition_files(tmp_path / "lake", "pythia", "410m") == [Path(imported.file)]


def test_a_csv_map_without_scores(tmp_path):
    file = tmp_path / "map.csv"
    file.write_text("step,seed,state\n0,3,0\n1000,3,1\n2000,3,1\n")
    lake = Lake(tmp_path / "lake")
    ingest_training_map(file, lake, "pythia-deduped", "1.4b")
    assert rows_of(lake, "pythia-deduped", "1.4b") == [(3, 0, 0, None), (3, 1000, 1, None), (3, 2000, 1, None)]


def test_the_separator_of_another_extension_comes_from_the_header(tmp_path):
    tabs = tmp_path / "map.txt"
    tabs.write_text("step\tseed\tstate\n0\t0\t0\n")
    commas = tmp_path / "map"
    commas.write_text("step,seed,state,score\n0,0,4,2.5\n")
    assert read_training_map(tabs).delimiter == "\t"
    the_map = read_training_map(commas)
    assert the_map.delimiter == "," and the_map.states == [4] and the_map.scores == [2.5]


def test_a_map_as_pandas_writes_it(tmp_path):
    """The PolyPythias release: DataFrame.to_csv(sep="\\t") with its unnamed index column
    first, the columns score, state, step, seed, then a group column."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "score": [0.25, -1.0, 2.0, 0.5],
            "state": [0, 1, 0, 2],
            "step": [0, 1000, 0, 1000],
            "seed": [1, 1, 2, 2],
            "group": ["stable", "stable", "outlier", "outlier"],
        },
        index=[10, 11, 12, 13],
    )
    released = tmp_path / "released.tsv"
    frame.to_csv(released, sep="\t")
    assert released.read_text().startswith("\tscore\tstate\tstep\tseed\tgroup\n")
    clean = tmp_path / "clean.tsv"
    frame[["step", "seed", "state", "score"]].to_csv(clean, sep="\t", index=False)

    the_map = read_training_map(released)
    assert the_map.ignored_columns == ("group",)
    assert read_training_map(clean).ignored_columns == ()
    lakes = {name: Lake(tmp_path / name) for name in ("released", "clean")}
    ingest_training_map(released, lakes["released"], "pythia", "70m")
    ingest_training_map(clean, lakes["clean"], "pythia", "70m")
    expected = sorted(zip(frame["seed"], frame["step"], frame["state"], frame["score"], strict=True))
    assert rows_of(lakes["released"], "pythia", "70m") == rows_of(lakes["clean"], "pythia", "70m") == expected

    result = CliRunner().invoke(
        app,
        [
            "ingest",
            "training-map",
            str(released),
            "--suite",
            "pythia",
            "--model-size",
            "70m",
            "--lake",
            str(tmp_path / "cli"),
        ],
    )
    assert result.exit_code == 0, result.output
    (notice,) = [line for line in result.stderr.splitlines() if line.startswith("notice")]
    assert str(released) in notice and "'group'" in notice and "ignored" in notice


# -- bad files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.tsv", "", "the file is empty"),
        ("blank.tsv", "\n \n", "the file is empty"),
        ("header-only.csv", "step,seed,state\n", "no rows after the header (line 1)"),
        ("no-state.tsv", "step\tseed\tscore\n0\t0\t1\n", "line 1: the header lacks state"),
        ("unnamed.csv", "step,,seed,state\n0,1,0,0\n", "line 1: column 2 has no name"),
        (
            "not-an-index.csv",
            ",step,seed,state\nx,0,0,0\n",
            "line 2: the unnamed first column holds 'x', not a row index",
        ),
        (
            "huge-step.tsv",
            "step\tseed\tstate\n12345678901234567890123\t0\t0\n",
            "line 2: step 12345678901234567890123 is out of range",
        ),
        ("huge-state.csv", "step,seed,state\n0,0,2147483648\n", "line 2: state 2147483648 is out of range"),
        ("infinite.csv", "step,seed,state,score\n0,0,0,inf\n", "line 2: score 'inf' is not a finite number"),
        ("minus-infinity.csv", "step,seed,state,score\n0,0,0,-Infinity\n", "line 2: score '-Infinity' is not a finite"),
        ("twice.csv", "step,seed,state,Step\n0,0,0,0\n", "line 1: column(s) step appear more than once"),
        ("commas.tsv", "step,seed,state\n0,0,0\n", "line 1: one column 'step,seed,state': expected step, seed"),
        ("word.csv", "step,seed,state\n0,0,0\nten,0,1\n", "line 3: step 'ten' is not a non-negative integer"),
        ("negative.csv", "step,seed,state\n0,-1,0\n", "line 2: seed '-1' is not a non-negative integer"),
        ("fraction.csv", "step,seed,state\n0,0,1.5\n", "line 2: state '1.5' is not a non-negative integer"),
        ("empty-state.csv", "step,seed,state\n0,0,\n", "line 2: state '' is not a non-negative integer"),
        ("score.csv", "step,seed,state,score\n0,0,0,high\n", "line 2: score 'high' is not a number"),
        ("nan.csv", "step,seed,state,score\n0,0,0,nan\n", "line 2: score 'nan' is not a finite number"),
        ("short.csv", "step,seed,state\n0,0,0\n\n1,0\n", "line 4: 2 fields, but the header has 3"),
        ("long.tsv", "step\tseed\tstate\n0\t0\t0\t7\n", "line 2: 4 fields, but the header has 3"),
        (
            "duplicate.csv",
            "step,seed,state\n10,0,0\n10,1,0\n10,0,1\n",
            "line 4: seed 0 step 10 is already given on line 2",
        ),
        ("quote.csv", 'step,seed,state\n0,0,"1\n', "line 2: malformed comma-separated line"),
    ],
)
def test_bad_input_is_refused_naming_the_file_and_line(tmp_path, name, content, problem):
    file = tmp_path / name
    file.write_text(content)
    lake = Lake(tmp_path / "lake")
    with pytest.raises(TrainingMapError) as caught:
        ingest_training_map(file, lake, "pythia", "70m")
    message = str(caught.value)
    assert message.startswith(str(file)), message
    assert problem in message, message
    assert not (tmp_path / "lake" / "training_map_states").exists()


def test_a_file_that_is_not_text_or_not_there(tmp_path):
    binary = tmp_path / "map.tsv"
    binary.write_bytes(b"step\tseed\tstate\n\xff\xfe\t0\t0\n")
    with pytest.raises(TrainingMapError, match=r"map\.tsv: not a UTF-8 text file"):
        read_training_map(binary)
    with pytest.raises(TrainingMapError, match=r"missing\.tsv: cannot read the file"):
        read_training_map(tmp_path / "missing.tsv")


@pytest.mark.parametrize(
    ("suite", "size", "option"),
    [
        ("../x", "70m", "--suite"),
        ("pythia", "a/b", "--model-size"),
        ("pythia", "size=1", "--model-size"),
        ("", "70m", "--suite"),
    ],
)
def test_unsafe_suite_or_size_is_refused(tmp_path, suite, size, option):
    file = tmp_path / "map.csv"
    file.write_text("step,seed,state\n0,0,0\n")
    with pytest.raises(TrainingMapError, match=f"^{option}: "):
        ingest_training_map(file, Lake(tmp_path / "lake"), suite, size)
    assert not (tmp_path / "lake").exists()


# -- re-importing ---------------------------------------------------------------------


def test_a_reimport_supersedes_the_map_of_its_size_only(tmp_path):
    lake = Lake(tmp_path / "lake")
    first, second, other = tmp_path / "first.csv", tmp_path / "second.csv", tmp_path / "other.csv"
    first.write_text("step,seed,state\n0,0,0\n10,0,1\n20,0,2\n")
    second.write_text("step,seed,state,score\n0,5,1,0.5\n")
    other.write_text("step,seed,state\n0,0,7\n")
    earlier = ingest_training_map(first, lake, "pythia", "70m")
    ingest_training_map(other, lake, "pythia", "160m")
    imported = ingest_training_map(second, lake, "pythia", "70m")
    assert imported.superseded == 1
    # The lake is append-only: the earlier import stays, the newest id is the map.
    files = partition_files(tmp_path / "lake", "pythia", "70m")
    assert files == sorted([Path(earlier.file), Path(imported.file)])
    assert max(files, key=lambda f: f.stem) == Path(imported.file)
    assert newest_rows(lake, "pythia", "70m") == [(5, 0, 1, 0.5)]
    assert rows_of(lake, "pythia", "160m") == [(0, 0, 7, None)]
    # a bad file leaves the current map as it was
    bad = tmp_path / "bad.csv"
    bad.write_text("step,seed,state\n0,0,x\n")
    with pytest.raises(TrainingMapError):
        ingest_training_map(bad, lake, "pythia", "70m")
    assert len(partition_files(tmp_path / "lake", "pythia", "70m")) == 2
    assert newest_rows(lake, "pythia", "70m") == [(5, 0, 1, 0.5)]


# -- the command line -----------------------------------------------------------------


def test_the_command_line(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(app, ["ingest", "training-map", "--help"]).output
    assert "--suite" in help_text and "--model-size" in help_text
    file = tmp_path / "map.tsv"
    file.write_text("step\tseed\tstate\n0\t0\t0\n0\t1\t0\n10\t0\t1\n")
    lake = tmp_path / "lake"
    arguments = ["ingest", "training-map", str(file), "--suite", "pythia", "--model-size", "70m", "--lake", str(lake)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "pythia/70m" in result.output and "3 checkpoints of 2 run(s), 2 state(s)" in result.output
    again = runner.invoke(app, arguments)
    assert again.exit_code == 0 and "supersedes 1 earlier import(s)" in again.output
    file.write_text("step\tseed\tstate\n0\t0\t0\n0\t0\t1\n")
    failed = runner.invoke(app, arguments)
    assert failed.exit_code == 1
    assert "line 3: seed 0 step 0 is already given on line 2" in failed.output
    unsafe = runner.invoke(app, [*arguments[:4], "../up", *arguments[5:]])
    assert unsafe.exit_code == 1 and "--suite" in unsafe.output
    missing = runner.invoke(app, ["ingest", "training-map", str(file), "--model-size", "70m"])
    assert missing.exit_code == 2  # --suite is required


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("step\tseed\tstate\n12345678901234567890123\t0\t0\n", "line 2: step 12345678901234567890123 is out of range"),
        ("step\tseed\tstate\tscore\n0\t0\t0\tNaN\n", "line 2: score 'NaN' is not a finite number"),
        ("step\tseed\tstate\tscore\n0\t0\t0\tInfinity\n", "line 2: score 'Infinity' is not a finite number"),
        ("step\tseed\tstate\n0\t0\t0\n".encode("utf-16"), "not a UTF-8 text file"),
        ("stäp\tseed\tstate\n0\t0\t0\n".encode("latin-1"), "not a UTF-8 text file"),
    ],
)
def test_the_command_line_refuses_bad_values_in_one_line(tmp_path, content, problem):
    file = tmp_path / "map.tsv"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content)
    lake = tmp_path / "lake"
    result = CliRunner().invoke(
        app, ["ingest", "training-map", str(file), "--suite", "pythia", "--model-size", "70m", "--lake", str(lake)]
    )
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"failed {file}") and problem in line and len(line) <= 200, line
    assert "Traceback" not in result.output
    assert not (lake / "training_map_states").exists()


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from polypythias.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['ingest', 'training-map', '--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'dbt', 'lm_eval', 'hmmlearn', 'sklearn') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
