"""Incremental builds give the marts of a full rebuild.

A tiny synthetic PolyPythias lake (bench/synthetic_lake.py: one size, three seeds,
the evaluation steps up to 8, 2% of each task's items) is built; then one
checkpoint's partitions are added (eval_samples, eval_results, weight_stats,
manifest) and the warehouse is built again, incrementally. Every table of the
warehouse's main schema (the marts) must equal a full rebuild's into another
warehouse, row for row. A re-extraction of an existing checkpoint (a later
extraction id with other predictions), added at the same time, must supersede the
earlier rows the same way.
Real dbt on DuckDB, real Parquet through the real lake writer.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import synthetic_lake  # noqa: E402

from polypythias.warehouse.dbt import build, state_dir  # noqa: E402
from polypythias.warehouse.lake import Lake  # noqa: E402

pytestmark = pytest.mark.slow

SPEC = synthetic_lake.Spec(sizes=("14m",), seeds=(0, 1, 2), max_step=8, item_fraction=0.02)
ADDED = ("14m", 1, 8)  # the final evaluated step of seed 1: its self-consistency changes
REEXTRACTED = ("14m", 0, 4)


def _tables(db: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every table of the main schema: its columns and its rows, sorted."""
    with duckdb.connect(str(db), read_only=True) as connection:
        names = [
            row[0]
            for row in connection.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'main' and table_type = 'BASE TABLE' order by 1"
            ).fetchall()
        ]
        out = {}
        for name in names:
            columns = [row[0] for row in connection.execute(f'describe "{name}"').fetchall()]
            rows = connection.execute(f'select * from "{name}"').fetchall()
            out[name] = (columns, sorted(rows, key=_sort_key))
    return out


def _sort_key(row: tuple) -> tuple:
    return tuple((value is None, repr(value)) for value in row)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _assert_same_marts(incremental: Path, rebuilt: Path) -> dict:
    left, right = _tables(incremental), _tables(rebuilt)
    assert sorted(left) == sorted(right)
    assert "fct_inter_seed_agreement" in left and "fct_self_consistency" in left
    for name in left:
        columns, rows = left[name]
        assert columns == right[name][0], name
        assert len(rows) == len(right[name][1]), f"{name}: {len(rows)} rows vs {len(right[name][1])}"
        for row, other in zip(rows, right[name][1], strict=True):
            assert _equal(row, other), f"{name}: {row} != {other}"
    return left


def _files_staged(db: Path) -> list[str]:
    """What the last build's stg_lake__eval_samples logged about the files it read."""
    log = (state_dir(db) / "logs" / "dbt.log").read_text()
    return [line for line in log.splitlines() if "file(s) of new or changed checkpoints" in line]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("incremental") / "lake"
    synthetic_lake.write_lake(Lake(root), SPEC, progress=False, skip={ADDED})
    return root


def test_incremental_build_equals_a_full_rebuild(lake: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept" / "w.duckdb"
    build(str(lake), kept, unit_tests=False)
    before = _tables(kept)

    # one new checkpoint, and a superseding re-extraction of an existing one (a later
    # extraction id with other predictions)
    synthetic_lake.write_checkpoint(Lake(lake), SPEC, *ADDED)
    synthetic_lake.write_checkpoint(Lake(lake), SPEC, *REEXTRACTED, attempt=1)
    build(str(lake), kept, unit_tests=False)
    # the incremental build read the changed checkpoints' files only: the new one's,
    # and both of the re-extracted one's (the earlier is superseded by the later)
    assert _files_staged(kept)[-1].endswith(
        "stg_lake__eval_samples: 3 eval_samples file(s) of new or changed checkpoints"
    )
    rebuilt = tmp_path / "rebuilt" / "w.duckdb"
    build(str(lake), rebuilt, unit_tests=False)
    after = _assert_same_marts(kept, rebuilt)
    # the changes reached the marts: the comparison is not vacuous
    assert len(after["fct_inter_seed_agreement"][1]) > len(before["fct_inter_seed_agreement"][1])
    assert after["fct_self_consistency"][1] != before["fct_self_consistency"][1]
    with duckdb.connect(str(kept), read_only=True) as connection:
        # only the re-extraction's rows are current for that checkpoint
        current = connection.execute(
            "select distinct extraction_id from intermediate.int_eval_items_predicted "
            "where model_size = ? and seed = ? and step = ?",
            list(REEXTRACTED),
        ).fetchall()
    assert current == [(synthetic_lake.extraction_id(SPEC, *REEXTRACTED, attempt=1),)]
