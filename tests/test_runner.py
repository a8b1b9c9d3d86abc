"""The extraction job: one load per checkpoint, resumable, failures recorded."""

import shutil

import pyarrow.compute as pc
import pytest
import torch
from typer.testing import CliRunner

from polypythias.cli import app
from polypythias.extract.runner import build_extractors, parse_shard, plan, run_extraction
from polypythias.extract.status import suite_status
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST, SUITE_GRID, TOKEN_STATS, WEIGHT_STATS


def _files(lake_root):
    return sorted(p.relative_to(lake_root) for p in lake_root.rglob("*.parquet"))


def test_extracts_everything_once_and_a_rerun_adds_nothing(tiny_suite, tmp_path):
    suite, lake = load_suite(tiny_suite), Lake(tmp_path / "lake")
    summary = run_extraction(suite, lake, progress=False)
    assert summary.ok and summary.checkpoints == 6 and summary.succeeded == 12
    manifest = lake.read(MANIFEST)
    assert manifest.num_rows == 12
    assert set(manifest["status"].to_pylist()) == {"success"}
    # One model load per checkpoint: both extractors share the attempt's id.
    assert len(set(manifest["extraction_id"].to_pylist())) == 6
    assert set(lake.read(WEIGHT_STATS)["step"].to_pylist()) == {0, 1, 2}
    files = _files(tmp_path / "lake")
    tokens = lake.read(TOKEN_STATS).num_rows

    again = run_extraction(suite, lake, progress=False)
    assert again.checkpoints == 0 and again.ok
    assert _files(tmp_path / "lake") == files
    assert lake.read(TOKEN_STATS).num_rows == tokens
    assert all(r.counts["done"] == 6 for r in suite_status(suite, lake, build_extractors(suite, None)))


def test_corrupt_and_missing_checkpoints_are_recorded_and_the_rest_extracted(tiny_suite, tmp_path):
    root = tiny_suite.parent
    weights = root / "ck/tiny/seed0/step1/model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])
    shutil.move(root / "ck/tiny/seed1/step2", root / "step2.away")
    suite, lake = load_suite(tiny_suite), Lake(tmp_path / "lake")

    summary = run_extraction(suite, lake, progress=False)
    failed = {(f.checkpoint.seed, f.checkpoint.step) for f in summary.failures}
    assert failed == {(0, 1), (1, 2)}
    assert summary.succeeded == 8
    manifest = lake.read(MANIFEST)
    failures = manifest.filter(pc.equal(manifest["status"], "failed")).to_pylist()
    assert len(failures) == 4
    assert all(r["error"] for r in failures)
    assert any("not found" in r["error"] for r in failures if r["seed"] == 1)
    assert set(lake.read(TOKEN_STATS)["step"].to_pylist()) == {0, 1, 2}

    # The next run retries only the failures, and succeeds once they are repaired.
    weights.write_bytes(good)
    shutil.move(root / "step2.away", root / "ck/tiny/seed1/step2")
    retry = run_extraction(suite, lake, progress=False)
    assert retry.ok and retry.checkpoints == 2 and retry.succeeded == 4


def test_a_pickle_checkpoint_loads_weights_only_and_its_format_is_recorded(tiny_suite, tmp_path, tokenizer):
    from conftest import tiny_model

    folder = tiny_suite.parent / "ck/tiny/seed0/step0"
    (folder / "model.safetensors").unlink()
    torch.save(tiny_model(len(tokenizer), 0).state_dict(), folder / "pytorch_model.bin")
    suite, lake = load_suite(tiny_suite), Lake(tmp_path / "lake")
    summary = run_extraction(suite, lake, ["weight_stats"], progress=False)
    assert summary.ok and summary.checkpoints == 6
    manifest = lake.read(MANIFEST)
    formats = {(r["seed"], r["step"]): r["weights_format"] for r in manifest.to_pylist()}
    assert formats.pop((0, 0)) == "bin"
    assert set(formats.values()) == {"safetensors"}


def test_shards_split_the_work_without_overlap(tiny_suite, tmp_path):
    suite, lake = load_suite(tiny_suite), Lake(tmp_path / "lake")
    extractors = build_extractors(suite, None)
    shards = [plan(suite, lake, extractors, (i, 3)) for i in range(3)]
    everything = plan(suite, lake, extractors)
    seen = [t.checkpoint for shard in shards for t in shard]
    assert sorted(seen) == [t.checkpoint for t in everything] and len(set(seen)) == len(seen) == 6
    assert all(t.extractors == ("token_stats", "weight_stats") for t in everything)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_a_changed_configuration_makes_work_stale_and_redoes_it(tiny_suite, tmp_path):
    lake = Lake(tmp_path / "lake")
    run_extraction(load_suite(tiny_suite), lake, ["token_stats"], progress=False)
    tiny_suite.write_text(tiny_suite.read_text().replace("top_k: 5", "top_k: 3"))
    suite = load_suite(tiny_suite)
    extractors = build_extractors(suite, ["token_stats"])
    assert {r.counts["stale"] for r in suite_status(suite, lake, extractors)} == {3}
    assert len(plan(suite, lake, extractors)) == 6
    run_extraction(suite, lake, ["token_stats"], progress=False)
    assert not plan(suite, lake, extractors)


def test_the_suite_grid_is_recorded_once_per_change(tiny_suite, tmp_path):
    lake = Lake(tmp_path / "lake")
    suite = load_suite(tiny_suite)
    run_extraction(suite, lake, progress=False)
    run_extraction(suite, lake, progress=False)
    grid = lake.read(SUITE_GRID)
    assert grid.num_rows == 2 * 3 * 2
    assert len(set(grid["extraction_id"].to_pylist())) == 1


def test_cli_exit_status_says_whether_anything_failed(tiny_suite, tmp_path):
    shutil.rmtree(tiny_suite.parent / "ck/tiny/seed0/step2")
    runner = CliRunner()
    lake = str(tmp_path / "lake")
    failed = runner.invoke(app, ["extract", "--suite", str(tiny_suite), "--lake", lake, "--no-progress"])
    assert failed.exit_code == 1, failed.output
    assert "checkpoint folder not found" in failed.output
    status = runner.invoke(app, ["status", "--suite", str(tiny_suite), "--lake", lake])
    assert status.exit_code == 0 and "failed" in status.output
    bad = runner.invoke(app, ["extract", "--suite", str(tiny_suite), "--extractors", "nope"])
    assert bad.exit_code == 2 and "unknown extractor 'nope'" in bad.output


def test_the_same_documents_by_another_path_are_the_same_configuration(tiny_suite, tmp_path):
    lake = Lake(tmp_path / "lake")
    run_extraction(load_suite(tiny_suite), lake, ["token_stats"], progress=False)
    (tiny_suite.parent / "data").mkdir()
    shutil.copy(tiny_suite.parent / "docs.jsonl", tiny_suite.parent / "data/eval.jsonl")
    tiny_suite.write_text(tiny_suite.read_text().replace("docs.jsonl", "data/eval.jsonl"))
    suite = load_suite(tiny_suite)
    assert not plan(suite, lake, build_extractors(suite, ["token_stats"]))
    (tiny_suite.parent / "data/eval.jsonl").write_text('{"text": "w1 w2 w3"}\n')
    assert len(plan(load_suite(tiny_suite), lake, build_extractors(suite, ["token_stats"]))) == 6
