"""The lake checks itself (issue 18): a manifest success whose data file is missing,
unreadable or of another row count is found by `status`, `verify` and `build`, and
`extract` redoes it; random corruptions of a lake are each refused or found."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import tiny_model, write_documents
from polypythias.cli import app
from polypythias.extract.runner import build_extractors, run_extraction
from polypythias.extract.status import suite_status
from polypythias.extract.suite import load_suite
from polypythias.warehouse.dbt import DbtBuildError, build
from polypythias.warehouse.lake import Lake, LakeError
from polypythias.warehouse.schemas import DATASETS, MANIFEST
from polypythias.warehouse.verify import verify

SUITE_YAML = """
name: tiny
sizes: [tiny]
seeds: [0, 1]
steps: {all: [0, 1, 2]}
checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}
extractors:
  token_stats: {documents: docs.jsonl, top_k: 5, batch_size: 5}
  weight_stats: {}
"""


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, tokenizer) -> Path:
    """A suite of 2 seeds × 3 steps of tiny checkpoints, extracted once; tests copy it."""
    root = tmp_path_factory.mktemp("damage")
    for seed in (0, 1):
        for step in (0, 1, 2):
            folder = root / f"ck/tiny/seed{seed}/step{step}"
            tiny_model(len(tokenizer), seed * 100 + step).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    write_documents(root / "docs.jsonl")
    (root / "suite.yaml").write_text(SUITE_YAML)
    summary = run_extraction(load_suite(root / "suite.yaml"), Lake(root / "lake"), progress=False)
    assert summary.ok and summary.succeeded == 12
    return root


@pytest.fixture
def copy(extracted, tmp_path) -> Path:
    shutil.copytree(extracted, tmp_path / "suite", ignore=shutil.ignore_patterns("*.duckdb", ".dbt"))
    return tmp_path / "suite"


def token_stats_file(root: Path, seed: int, step: int) -> Path:
    (path,) = (root / f"lake/token_stats/suite=tiny/model_size=tiny/seed={seed}/step={step}").glob("*.parquet")
    return path


def counts(root: Path) -> dict[int, dict[str, int]]:
    suite = load_suite(root / "suite.yaml")
    return {r.seed: r.counts for r in suite_status(suite, Lake(root / "lake"), build_extractors(suite, None))}


def test_a_clean_lake_verifies(copy):
    result = verify(Lake(copy / "lake"))
    assert result.ok, result.problems
    files = sorted((copy / "lake").rglob("*.parquet"))
    assert sum(result.files.values()) == len(files)
    assert sum(result.rows.values()) == sum(pq.read_metadata(f).num_rows for f in files)
    assert result.files["token_stats"] == result.files["weight_stats"] == result.files["manifest"] == 6
    assert invoke("verify", "--lake", copy / "lake").exit_code == 0


def test_a_deleted_data_file_is_found_everywhere_and_redone(copy):
    """The issue's trial: delete one checkpoint's token_stats file."""
    lake = Lake(copy / "lake")
    deleted = token_stats_file(copy, 1, 2)
    deleted.unlink()
    manifests = {p: p.read_bytes() for p in (copy / "lake/manifest").rglob("*.parquet")}

    # status: a damaged column, the file named
    assert counts(copy)[1]["damaged"] == 1 and counts(copy)[1]["done"] == 5
    assert counts(copy)[0]["damaged"] == 0
    status = invoke("status", "--suite", copy / "suite.yaml", "--lake", copy / "lake")
    assert status.exit_code == 0 and "damaged" in status.stdout
    assert str(deleted) in " ".join(status.stderr.split()).replace(" ", "") or deleted.name in status.stderr

    # verify: exit 1, one line naming the manifest row and the missing file
    checked = invoke("verify", "--lake", copy / "lake")
    assert checked.exit_code == 1
    problems = [line for line in checked.stderr.splitlines() if line.startswith("problem")]
    assert len(problems) == 1 and "token_stats" in problems[0]
    assert f"{deleted} is missing" in " ".join(checked.stderr.split())

    # build: the checkpoint does not count as present, and integrity says why
    db = copy / "w.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
        build(
            str(copy / "lake"),
            db,
            select="+dim_checkpoints +fct_checkpoint_integrity +fct_loss_consistency",
            unit_tests=False,
        )
    with duckdb.connect(str(db), read_only=True) as con:
        checkpoint = con.execute(
            "select has_token_stats, has_weight_stats, is_present from dim_checkpoints where seed = 1 and step = 2"
        ).fetchall()
        assert checkpoint == [(False, True, False)]
        assert con.execute("select count(*) from dim_checkpoints where has_token_stats").fetchone() == (5,)
        findings = con.execute("select finding, seed, step, detail from fct_checkpoint_integrity").fetchall()
        assert [(f, s, t) for f, s, t, _ in findings] == [("missing_data", 1, 2)]
        assert deleted.name in findings[0][3] and "is missing" in findings[0][3]
        n_seeds = dict(con.execute("select step, n_seeds from fct_loss_consistency").fetchall())
        assert n_seeds == {0: 2, 1: 2, 2: 1}

    # extract redoes it under a new extraction id and leaves the old one alone
    summary = run_extraction(load_suite(copy / "suite.yaml"), lake, progress=False)
    assert summary.ok and summary.checkpoints == 1 and summary.succeeded == 1
    assert all(p.read_bytes() == data for p, data in manifests.items())
    redone = token_stats_file(copy, 1, 2)
    assert redone.stem != deleted.stem
    assert counts(copy)[1]["done"] == 6 and counts(copy)[1]["damaged"] == 0
    after = verify(lake)
    assert after.ok and after.redone == 1
    assert run_extraction(load_suite(copy / "suite.yaml"), lake, progress=False).checkpoints == 0


def test_a_data_file_with_other_row_counts_is_damaged(copy):
    path = token_stats_file(copy, 0, 1)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # readable, one row short
    assert counts(copy)[0]["damaged"] == 1
    result = verify(Lake(copy / "lake"))
    assert len(result.problems) == 1
    assert f"holds {table.num_rows - 1}" in result.problems[0]


# -- random corruptions ---------------------------------------------------------


def _corrupt(root: Path, rng: random.Random) -> str:
    """Damage one random file of the lake in one of four ways; returns what was done."""
    files = sorted((root / "lake").rglob("*.parquet"))
    target = rng.choice(files)
    kind = rng.choice(["truncate", "delete", "flip", "duplicate"])
    while kind == "delete" and "training_log" in target.parts:
        # nothing records a training log (PolyPythias publishes none): its loss cannot be known
        target = rng.choice(files)
    data = bytearray(target.read_bytes())
    if kind == "truncate":
        target.write_bytes(bytes(data[: rng.randrange(len(data))]))
    elif kind == "delete":
        target.unlink()
    elif kind == "flip":
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    else:  # a copy under another extraction's name, or in another checkpoint's folder
        other = rng.choice(files)
        destination = other.parent / (target.name if other.parent != target.parent else other.name)
        if destination == target:
            destination = target.with_name("20990101T000000000000Z-0000dead.parquet")
        shutil.copyfile(target, destination)
    return f"{kind} {target.relative_to(root)}"


def _visible(root: Path) -> dict[str, list]:
    """What the marts read of each dataset: the rows of extractions its manifest
    records (staging drops the others), every row of the datasets without one."""
    lake = Lake(root / "lake")
    manifest = lake.read(MANIFEST)
    keys = ["suite", "model_size", "seed", "step", "extraction_id"]
    recorded = set(zip(*(manifest[k].to_pylist() for k in keys), strict=True))
    visible = {}
    for name, dataset in DATASETS.items():
        rows = lake.read(dataset).to_pylist()
        if dataset.partition_by == MANIFEST.partition_by:
            rows = [r for r in rows if tuple(r[k] for k in keys) in recorded]
        visible[name] = sorted(map(repr, rows))
    return visible


def _readers_agree(root: Path, original: Path) -> bool:
    """The marts read the same rows as before: the corruption changed nothing they
    read (a flip in an unread part of the footer, a copy no manifest row records)."""
    try:
        return _visible(root) == _visible(original)
    except Exception:  # noqa: BLE001 - unreadable is not harmless
        return False


def _build_exits_cleanly(root: Path, what: str) -> None:
    """`build` on the damaged lake refuses it naming the file, or builds marts in which
    every expected checkpoint that is not present is a finding: none silently missing."""
    # what `polypythias build` runs (the marts that say what is present, to keep it short)
    try:
        Lake(root / "lake").check_schema_versions()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DBT_INDIRECT_SELECTION", "cautious")
            build(
                str(root / "lake"),
                root / "w.duckdb",
                select="+dim_checkpoints +fct_checkpoint_integrity",
                unit_tests=False,
            )
    except (LakeError, DbtBuildError) as error:  # refused, with a message naming the file
        assert str(root / "lake") in str(error), (what, str(error))
        return
    with duckdb.connect(str(root / "w.duckdb"), read_only=True) as con:
        absent = con.execute(
            "select seed, step from dim_checkpoints where is_expected and not is_present order by all"
        ).fetchall()
        found = con.execute(
            "select distinct seed, step from fct_checkpoint_integrity "
            "where finding in ('missing_data', 'missing_checkpoint') order by all"
        ).fetchall()
        present = con.execute("select count(*) from dim_checkpoints where is_present").fetchone()[0]
    assert absent == found, what
    assert present + len(absent) == 6, what


def test_random_corruptions_are_each_refused_or_found(extracted, tmp_path):
    rng = random.Random(18)
    built = set()
    for trial in range(24):
        root = tmp_path / f"trial{trial}"
        shutil.copytree(extracted, root, ignore=shutil.ignore_patterns("*.duckdb", ".dbt"))
        what = _corrupt(root, rng)
        result = invoke("verify", "--lake", root / "lake")
        if result.exit_code == 0:
            assert _readers_agree(root, extracted), f"{what}: verify found nothing, yet the lake reads otherwise"
            continue
        assert result.exit_code in (1, 2), what
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and all(line.startswith(("problem ", "error: ")) for line in lines), (what, result.stderr)
        # status and extract never show a traceback either: they refuse or report damage
        status = invoke("status", "--suite", root / "suite.yaml", "--lake", root / "lake")
        assert status.exit_code in (0, 2), (what, status.output)
        kind = what.split()[0]
        if kind not in built:  # one build per kind of corruption (a build takes seconds)
            built.add(kind)
            _build_exits_cleanly(root, what)
        shutil.rmtree(root)
