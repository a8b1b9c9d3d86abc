"""Issue 18's trials of bad input: each is now one line naming the input, a non-zero
exit, and nothing half-built left visible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conftest import tiny_model, write_documents
from lake_fixtures import SUITE, extraction_id, poison_token_stats, write_lake
from polypythias.cli import app
from polypythias.extract import runner as runner_module
from polypythias.extract.claims import UNREADABLE_CLAIM_GRACE_S, ClaimStore
from polypythias.extract.extractors import nonfinite_values
from polypythias.extract.runner import run_extraction
from polypythias.extract.suite import CheckpointId, load_suite
from polypythias.warehouse.dbt import DbtBuildError, build
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST

SUITE_YAML = """
name: tiny
sizes: [tiny]
seeds: [0]
steps: {all: [0, 1]}
checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}
extractors:
  token_stats: {documents: docs.jsonl, top_k: 5, batch_size: 5}
  weight_stats: {}
"""


def invoke(*args, env=None):
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def one_line(result) -> str:
    """The error as one line (rich may wrap it at the terminal width)."""
    assert result.stderr.startswith("error: "), result.output
    return " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory, tokenizer) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for step in (0, 1):
        folder = root / f"ck/tiny/seed0/step{step}"
        tiny_model(len(tokenizer), step).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    write_documents(root / "docs.jsonl")
    (root / "suite.yaml").write_text(SUITE_YAML)
    assert run_extraction(load_suite(root / "suite.yaml"), Lake(root / "lake"), progress=False).ok
    return root


@pytest.fixture
def work(suite_dir, tmp_path) -> Path:
    shutil.copytree(suite_dir, tmp_path / "s")
    return tmp_path / "s"


def manifest_files(root: Path) -> list[Path]:
    return sorted((root / "lake/manifest").rglob("*.parquet"))


@pytest.mark.parametrize("damage", ["corrupt", "empty"])
def test_extract_on_a_lake_whose_manifest_has_a_bad_file(work, damage):
    bad = manifest_files(work)[0]
    bad.write_bytes(b"PAR1 garbage" if damage == "corrupt" else b"")
    result = invoke("extract", "--suite", work / "suite.yaml", "--lake", work / "lake", "--no-progress")
    assert result.exit_code == 2 and str(bad) in one_line(result)


def test_a_non_utf8_documents_file_is_named(work):
    (work / "docs.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    shutil.rmtree(work / "lake")
    result = invoke("extract", "--suite", work / "suite.yaml", "--lake", work / "lake", "--no-progress")
    assert result.exit_code == 2
    assert f"{work / 'docs.jsonl'}:1: not UTF-8 text" in one_line(result)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("ftp://host/lake", "ftp:// is not supported"), ("s3://polypythias-no-such-bucket/lake", "cannot be reached")],
)
def test_a_lake_uri_that_cannot_work_is_one_line(work, uri, expected):
    verbs = [["status", "--suite", work / "suite.yaml"]]
    if uri.startswith("ftp"):  # (reaching for an object store takes seconds each time)
        verbs.append(["extract", "--suite", work / "suite.yaml", "--no-progress"])
    for verb in verbs:
        result = invoke(*verb, "--lake", uri, env={"AWS_EC2_METADATA_DISABLED": "true"})
        assert result.exit_code == 2 and expected in one_line(result) and uri in one_line(result)


def test_a_claim_that_is_a_folder_is_named(work):
    shutil.rmtree(work / "lake/manifest")  # everything pending again
    claim = ClaimStore(Lake(work / "lake"), "tiny").path(CheckpointId("tiny", "tiny", 0, 0))
    claim.mkdir(parents=True)
    result = invoke("extract", "--suite", work / "suite.yaml", "--lake", work / "lake", "--no-progress")
    assert result.exit_code == 2 and f"the claim {claim} is a folder" in one_line(result)


@pytest.mark.parametrize(
    ("folder", "expected"),
    [("seed=zero", "seed must be a non-negative integer"), ("model_size=..", "not a safe partition value")],
)
def test_a_bad_partition_folder_is_named_before_any_work(work, folder, expected):
    good = manifest_files(work)[0]
    parts = list(good.relative_to(work / "lake").parts)
    index = 3 if folder.startswith("seed") else 2
    parts[index] = folder
    bad = (work / "lake").joinpath(*parts)
    bad.parent.mkdir(parents=True)
    shutil.copyfile(good, bad)
    started = time.perf_counter()
    built = invoke("build", "--lake", work / "lake", "--db", work / "w.duckdb")
    assert built.exit_code == 2 and time.perf_counter() - started < 10
    assert f"folder {folder!r}" in one_line(built) and expected in one_line(built)
    assert not (work / "w.duckdb").exists()
    for verb in ("status", "extract"):
        result = invoke(
            verb,
            "--suite",
            work / "suite.yaml",
            "--lake",
            work / "lake",
            *(["--no-progress"] if verb == "extract" else []),
        )
        assert result.exit_code == 2 and f"folder {folder!r}" in one_line(result), verb


def test_an_unwritable_dataset_folder_stops_extract_up_front(work):
    shutil.rmtree(work / "lake/manifest")
    shutil.rmtree(work / "lake/token_stats")
    (work / "lake/token_stats").write_text("a file where the dataset's folder belongs")
    result = invoke("extract", "--suite", work / "suite.yaml", "--lake", work / "lake", "--no-progress")
    assert result.exit_code == 2
    assert f"cannot write into {work / 'lake/token_stats'}" in one_line(result)
    assert not (work / "lake/manifest").exists() or not manifest_files(work)  # no checkpoint recorded


@pytest.mark.parametrize(
    ("variable", "value"),
    [("POLYPYTHIAS_MEMORY_LIMIT", "lots"), ("POLYPYTHIAS_THREADS", "zero"), ("POLYPYTHIAS_THREADS", "0")],
)
def test_bad_duckdb_settings_name_the_variable(work, variable, value):
    result = invoke("build", "--lake", work / "lake", "--db", work / "w.duckdb", env={variable: value})
    assert result.exit_code == 2 and f"{variable}={value!r}" in one_line(result)
    assert not (work / "w.duckdb").exists()


def test_empty_extractors_is_an_error(work):
    result = invoke("extract", "--suite", work / "suite.yaml", "--lake", work / "lake", "--extractors", "")
    assert result.exit_code == 2 and "--extractors '' names no extractor" in one_line(result)


def test_report_on_a_database_that_is_no_warehouse(tmp_path):
    db = tmp_path / "other.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select 1 as a")
    result = invoke("report", "--db", db, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "is not a polypythias warehouse" in one_line(result)
    assert not (tmp_path / "r/index.html").exists()


# -- claims ----------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage", b"[1, 2]", b'"a string"'])
def test_an_empty_or_garbage_claim_holds_nothing_for_long(tmp_path, content):
    store = ClaimStore(Lake(tmp_path / "lake"), "tiny")
    checkpoint = CheckpointId("tiny", "tiny", 0, 0)
    path = store.path(checkpoint)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert store.acquire(checkpoint) is None  # maybe a job writing it right now
    old = time.time() - UNREADABLE_CLAIM_GRACE_S - 1
    os.utime(path, (old, old))
    claim = store.acquire(checkpoint)
    assert claim is not None and claim.took_over
    store.release(claim)
    assert not path.exists()


def test_a_dead_jobs_claim_on_a_finished_checkpoint_is_swept(work):
    """kill -9 after the manifest rows were written, before the claim was released:
    the rerun has nothing to do there, yet leaves no stale claim behind."""
    store = ClaimStore(Lake(work / "lake"), "tiny")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    path = store.path(CheckpointId("tiny", "tiny", 0, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "theirs", "host": store.host, "pid": int(dead.stdout),
                                "process_start": "1", "lease_s": 600.0}))  # fmt: skip
    summary = run_extraction(load_suite(work / "suite.yaml"), Lake(work / "lake"), progress=False)
    assert summary.checkpoints == 0
    assert not path.exists() and not list(path.parent.glob("*"))


# -- finite or nothing -------------------------------------------------------------


def test_nonfinite_values_are_found_in_floats_lists_and_maps():
    table = pa.table(
        {
            "value": [1.0, float("nan"), None],
            "sample": [[1.0, float("-inf")], [2.0], None],
            "metrics": pa.array([[("acc", 1.0)], [("acc", float("inf"))], None], pa.map_(pa.string(), pa.float64())),
            "count": [1, 2, 3],
        }
    )
    assert nonfinite_values({"d": table}) == "d.value: 1 of 3 values; d.sample: 1 of 3 values; d.metrics: 1 of 2 values"
    assert nonfinite_values({"d": table.slice(2)}) is None


def test_a_nonfinite_value_fails_the_checkpoint_and_nothing_lands(work, monkeypatch):
    """A NaN the extractor's own checks let through (weights and logits finite)."""
    shutil.rmtree(work / "lake")
    extractor = runner_module.get_extractor("token_stats")
    real_run = extractor.run

    def run_with_a_nan(self, model, tokenizer, checkpoint, device):
        tables = real_run(self, model, tokenizer, checkpoint, device)
        if checkpoint.step == 1:
            entropy = tables["token_stats"]["entropy"].to_numpy().copy()
            entropy[3] = float("nan")
            index = tables["token_stats"].schema.get_field_index("entropy")
            tables["token_stats"] = tables["token_stats"].set_column(index, "entropy", pa.array(entropy, pa.float32()))
        return tables

    monkeypatch.setattr(extractor, "run", run_with_a_nan)
    summary = run_extraction(load_suite(work / "suite.yaml"), Lake(work / "lake"), progress=False)
    assert [(f.checkpoint.step, f.extractor) for f in summary.failures] == [(1, "token_stats")]
    assert "token_stats.entropy: 1 of" in summary.failures[0].error
    assert "NaN or inf" in summary.failures[0].error and "entropy" in summary.failures[0].error
    assert not list((work / "lake/token_stats").glob("*/*/*/step=1/*.parquet"))
    assert list((work / "lake/token_stats").glob("*/*/*/step=0/*.parquet"))
    manifest = Lake(work / "lake").read(MANIFEST).to_pylist()
    failed = [r for r in manifest if r["status"] == "failed"]
    assert [(r["step"], r["extractor"], r["rows"]) for r in failed] == [(1, "token_stats", [])]


# -- a failing build -----------------------------------------------------------------


def test_a_failing_build_is_one_line_per_failure_and_keeps_the_warehouse(tmp_path):
    lake, db = tmp_path / "lake", tmp_path / "w.duckdb"
    write_lake(lake, datasets=("manifest", "token_stats"))
    build(str(lake), db, select="+stg_lake__token_stats", unit_tests=False)
    before = db.read_bytes()
    poison_token_stats(lake, ("14m", 0, 0), extraction_id(10_000, 0xBAD))
    with pytest.raises(DbtBuildError) as raised:
        build(str(lake), db, select="+stg_lake__token_stats", unit_tests=False)
    lines = str(raised.value).splitlines()
    log = db.parent / ".dbt/logs/dbt.log"
    assert lines[0] == f"dbt build failed (dbt's log: {log})" and log.is_file()
    assert len(lines) == 2 and "expression_is_true_stg_lake__token_stats_target_logprob" in lines[1]
    assert "[fail]" in lines[1]
    # the failing row's checkpoint and extraction: its lake file
    poisoned = extraction_id(10_000, 0xBAD)
    assert f"first failing row: suite={SUITE}, model_size=14m, seed=0, step=0, extraction_id={poisoned}" in lines[1]
    assert db.read_bytes() == before  # the previous warehouse, untouched
    assert not list((db.parent / ".dbt/building").iterdir())
