"""The lake writer: layout, atomic partitions, schemas, validation."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polypythias.warehouse.lake import Lake, LakeError, new_extraction_id, validate_partition_value
from polypythias.warehouse.schemas import SCHEMA_VERSION_KEY, SUITE_GRID, TRAINING_LOG

PARTITION = {"suite": "micro", "model_size": "1m", "seed": 3}


def _log(extraction_id: str, steps=(3, 1, 2)) -> pa.Table:
    n = len(steps)
    return pa.table(
        {
            "extraction_id": [extraction_id] * n,
            "step": list(steps),
            "loss": [1.0] * n,
            "lr": [0.1] * n,
            "grad_norm": [None] * n,
            "tokens_seen": [10] * n,
        }
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("model_size", "../etc"),
        ("model_size", "a/b"),
        ("suite", "x=1"),
        ("suite", ""),
        ("suite", ".hidden"),
        ("seed", -1),
        ("step", "3"),
        ("seed", True),
        ("nope", "x"),
    ],
)
def test_unsafe_partition_values_are_refused(column, value):
    with pytest.raises(LakeError):
        validate_partition_value(column, value)


def test_safe_partition_values_pass():
    assert validate_partition_value("model_size", "1.4b") == "1.4b"
    assert validate_partition_value("step", 143000) == "143000"


def test_write_is_hive_partitioned_sorted_and_leaves_no_temporary(tmp_path):
    lake = Lake(tmp_path / "lake")
    extraction_id = new_extraction_id()
    path = lake.write(TRAINING_LOG, PARTITION, extraction_id, _log(extraction_id))
    assert path == f"{tmp_path}/lake/training_log/suite=micro/model_size=1m/seed=3/{extraction_id}.parquet"
    folder = tmp_path / "lake/training_log/suite=micro/model_size=1m/seed=3"
    assert [p.name for p in folder.iterdir()] == [f"{extraction_id}.parquet"]
    file = pq.ParquetFile(path)
    assert file.metadata.row_group(0).column(0).compression == "ZSTD"
    assert file.schema_arrow.metadata[SCHEMA_VERSION_KEY] == b"1"
    assert pq.read_table(path)["step"].to_pylist() == [1, 2, 3]
    table = lake.read(TRAINING_LOG)
    assert table.num_rows == 3
    assert set(table["model_size"].to_pylist()) == {"1m"}


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 2, 0, 3, 1]], ids=["in order", "shuffled"])
def test_rows_are_sorted_by_every_key_column(tmp_path, order):
    # suite_grid sorts by (model_size, seed, step, extractor): ties on the first keys.
    rows = [("1m", 0, 0, "a"), ("1m", 0, 1, "a"), ("1m", 1, 0, "a"), ("1m", 1, 0, "b"), ("2m", 0, 0, "a")]
    shuffled = [rows[i] for i in order]
    table = pa.table(
        {
            "extraction_id": ["x"] * len(rows),
            "model_size": [r[0] for r in shuffled],
            "seed": [r[1] for r in shuffled],
            "step": [r[2] for r in shuffled],
            "extractor": [r[3] for r in shuffled],
            "source": [f"{r}" for r in shuffled],
        }
    )
    path = Lake(tmp_path).write(SUITE_GRID, {"suite": "micro"}, new_extraction_id(), table)
    written = pq.read_table(path)
    assert written["source"].to_pylist() == [f"{r}" for r in rows]


def test_write_refuses_wrong_columns_and_types(tmp_path):
    lake = Lake(tmp_path)
    extraction_id = new_extraction_id()
    with pytest.raises(LakeError, match="columns"):
        lake.write(TRAINING_LOG, PARTITION, extraction_id, _log(extraction_id).drop(["lr"]))
    bad = _log(extraction_id).set_column(2, "loss", pa.array(["x", "y", "z"]))
    with pytest.raises(LakeError, match="fit the schema"):
        lake.write(TRAINING_LOG, PARTITION, extraction_id, bad)
    with pytest.raises(LakeError, match="partitioned by"):
        lake.write(TRAINING_LOG, {**PARTITION, "step": 1}, extraction_id, _log(extraction_id))
    with pytest.raises(LakeError, match="extraction id"):
        lake.write(TRAINING_LOG, PARTITION, "../x", _log(extraction_id))
    assert not (tmp_path / "training_log").exists() or not any((tmp_path / "training_log").rglob("*.parquet"))


def test_read_of_an_empty_lake_is_an_empty_typed_table(tmp_path):
    table = Lake(tmp_path).read(TRAINING_LOG)
    assert table.num_rows == 0
    assert table.schema.field("seed").type == pa.int64()


def test_read_refuses_files_of_another_schema_version(tmp_path):
    lake = Lake(tmp_path)
    extraction_id = new_extraction_id()
    path = lake.write(TRAINING_LOG, PARTITION, extraction_id, _log(extraction_id))
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"0"}), path)
    with pytest.raises(LakeError, match="schema version 0"):
        lake.read(TRAINING_LOG)


def test_failed_write_leaves_nothing_visible(tmp_path):
    lake = Lake(tmp_path)
    (tmp_path / "training_log").write_text("a file where the folder should be")
    extraction_id = new_extraction_id()
    with pytest.raises(LakeError, match="cannot write"):
        lake.write(TRAINING_LOG, PARTITION, extraction_id, _log(extraction_id))


def test_extraction_ids_sort_by_time():
    ids = [new_extraction_id() for _ in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50


def test_discard_unfinished_removes_only_hidden_temporaries_of_that_checkpoint(tmp_path):
    lake = Lake(tmp_path)
    checkpoint = {"suite": "s", "model_size": "m", "seed": 0, "step": 8}
    folders = {
        name: tmp_path / f"{name}/suite=s/model_size=m/seed=0/step={step}"
        for name, step in (("token_stats", 8), ("manifest", 8), ("weight_stats", 16))
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / ".20260101T000000000000Z-00000000.parquet.tmp").write_bytes(b"half")
        (folder / "20260101T000000000000Z-00000001.parquet").write_bytes(b"whole")
    run_level = tmp_path / "training_log/suite=s/model_size=m/seed=0"
    run_level.mkdir(parents=True)
    (run_level / ".20260101T000000000000Z-00000002.parquet.tmp").write_bytes(b"half")

    assert lake.discard_unfinished(checkpoint) == 2
    remaining = {name: sorted(p.name for p in folder.iterdir()) for name, folder in folders.items()}
    assert remaining["token_stats"] == remaining["manifest"] == ["20260101T000000000000Z-00000001.parquet"]
    assert len(remaining["weight_stats"]) == 2  # another step: not this checkpoint's
    assert len(list(run_level.iterdir())) == 1  # partitioned by run, not by checkpoint
    assert lake.discard_unfinished({**checkpoint, "step": 32}) == 0  # no folders: nothing to do
