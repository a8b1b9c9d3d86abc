"""The synthetic-lake writer the test lakes and the benchmark share (warehouse/synthetic.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from polypythias.warehouse.lake import Lake, LakeError
from polypythias.warehouse.schemas import MANIFEST, SUITE_GRID, TRAINING_LOG
from polypythias.warehouse.synthetic import (
    SyntheticLake,
    checkpoint_partition,
    extraction_id,
    run_partition,
    started_at,
)

MOMENT = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)


def grid_table(extraction: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"extraction_id": extraction, "model_size": "14m", "seed": 1, "step": 8, "extractor": "evals",
          "source": "local"}],
        schema=SUITE_GRID.schema,
    )  # fmt: skip


def test_ids_are_valid_sort_by_moment_and_give_their_moment_back():
    assert extraction_id(MOMENT, 10) == "20260504T030201123456Z-0000000a"
    assert extraction_id(MOMENT, "beefcafe") == "20260504T030201123456Z-beefcafe"
    assert started_at(extraction_id(MOMENT, 3)) == MOMENT
    later = [extraction_id(MOMENT + timedelta(seconds=s), 99 - s) for s in (0, 1, 60, 3600, 86400)]
    assert later == sorted(later)


def test_an_extraction_writes_its_files_then_one_manifest_row_per_extractor(tmp_path):
    lake = SyntheticLake(tmp_path)
    eid = extraction_id(MOMENT, 1)
    partition = checkpoint_partition("toy", "14m", 1, 8)
    lake.write_extraction(partition, eid, {}, ("evals", "weight_stats"), status="failed", error="boom",
                          duration_s=2.5, rows={"evals": {"eval_results": 4}})  # fmt: skip
    manifest = Lake(tmp_path).read(MANIFEST).to_pylist()
    assert [(r["extractor"], r["status"], r["error"]) for r in manifest] == [
        ("evals", "failed", "boom"),
        ("weight_stats", "failed", "boom"),
    ]
    first = manifest[0]
    assert (first["suite"], first["model_size"], first["seed"], first["step"]) == ("toy", "14m", 1, 8)
    assert first["started_at"] == MOMENT
    assert first["finished_at"] - first["started_at"] == timedelta(seconds=2.5)
    assert dict(first["rows"]) == {"eval_results": 4} and dict(manifest[1]["rows"]) == {}
    assert (tmp_path / f"manifest/suite=toy/model_size=14m/seed=1/step=8/{eid}.parquet").is_file()


def test_only_the_datasets_asked_for_are_written_and_an_orphan_has_no_manifest(tmp_path):
    eid = extraction_id(MOMENT, 2)
    SyntheticLake(tmp_path, datasets=("training_log",)).write_training_log(
        run_partition("toy", "14m", 0), eid, {10: 2.0, 0: 4.0}
    )
    SyntheticLake(tmp_path, datasets=("training_log",)).write_extraction(
        checkpoint_partition("toy", "14m", 0, 0), eid, {}, ("evals",)
    )
    log = Lake(tmp_path).read(TRAINING_LOG).to_pylist()
    assert [(r["step"], r["loss"], r["tokens_seen"], r["grad_norm"]) for r in log] == [
        (0, 4.0, 0, None),
        (10, 2.0, 10 * 1024, None),
    ]
    assert not (tmp_path / "manifest").exists()

    orphan = tmp_path / "orphan"
    SyntheticLake(orphan).write_extraction({"suite": "toy"}, eid, {SUITE_GRID: grid_table(eid)}, None)
    assert Lake(orphan).read(SUITE_GRID).num_rows == 1
    assert not (orphan / "manifest").exists()


def test_values_that_would_escape_the_layout_are_refused(tmp_path):
    with pytest.raises(LakeError, match="not a safe partition value"):
        SyntheticLake(tmp_path).write_extraction(
            checkpoint_partition("..", "14m", 0, 0), extraction_id(MOMENT, 1), {}, ("evals",)
        )


def test_the_lake_check_passes_what_the_writer_writes_and_refuses_a_file_of_another_dataset(tmp_path):
    lake = SyntheticLake(tmp_path)
    eid = extraction_id(MOMENT, 4)
    # the manifest's map columns (rows, package_versions) are Parquet leaves `key`, `value`
    lake.write_extraction(
        checkpoint_partition("toy", "14m", 0, 0), eid, {}, ("evals",), rows={"evals": {"eval_results": 1}}
    )
    lake.write_training_log(run_partition("toy", "14m", 0), eid, {0: 4.0})
    assert Lake(tmp_path).check_schema_versions() == 2

    log = next((tmp_path / "training_log").rglob("*.parquet"))
    foreign = tmp_path / f"manifest/suite=toy/model_size=14m/seed=0/step=0/{extraction_id(MOMENT, 5)}.parquet"
    foreign.write_bytes(log.read_bytes())
    with pytest.raises(
        LakeError, match=r"is not a manifest file: it holds columns manifest does not have \(grad_norm, loss, lr\)"
    ):
        Lake(tmp_path).check_schema_versions()
