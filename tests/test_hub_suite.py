"""The real checkpoint path, offline: the `polypythias` preset, unchanged, on a hub
cache laid out as huggingface_hub leaves it (extract/hub_fixture.py) with Pythia's
architecture, the real GPT-NeoX tokenizer, real English and the real UD English EWT
treebank. The preset's inputs are pointed at test data with `--set` and its grid is
narrowed to the fixture with --sizes/--seeds/--steps: the same code path as a real
run, only configuration differs.

14m: seeds 0-2 × steps 0, 1000, every extractor. 70m: seed 0 (its 140 MB pickle) at
step 1000, weight statistics only: they alone cost 10 s or more per 70m checkpoint on
two shared cores (bench/checkpoint_cost.py measures every extractor at both sizes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import conllu
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from hub_english import DOCUMENTS, write_documents, write_eval_tasks
from polypythias.cli import app
from polypythias.extract.hub_fixture import PYTHIA_SHAPES, write_hub_suite
from polypythias.extract.suite import load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST, PROBE_RESULTS, TOKEN_STATS, WEIGHT_STATS
from shared_inputs import SHARED

TOKENIZER = SHARED / "fixtures" / "pythia-tokenizer" / "tokenizer.json"
EWT = SHARED / "fixtures" / "ud-english-ewt"
POLYPYTHIAS = Path(sys.executable).with_name("polypythias")
#: Pythia's published parameter counts (embeddings included).
PARAMETERS = {"14m": 14_067_712, "70m": 70_426_624}
MAX_TRAIN, MAX_TEST = 300, 150


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf") / "hub"
    write_hub_suite(cache, TOKENIZER, sizes=("14m",), seeds=(0, 1, 2), steps=(0, 1000))
    write_hub_suite(cache, TOKENIZER, sizes=("70m",), seeds=(0,), steps=(1000,))
    return cache


def settings(tasks_dir: Path) -> list[str]:
    """The --set options pointing the preset at the test's inputs."""
    options = [
        "extractors.evals.tasks=[hub_agreement, hub_cloze]",
        f"extractors.evals.include_path={tasks_dir}",
        "extractors.evals.include_defaults=false",
    ]
    for task in ("upos", "deprel"):
        options += [
            f"extractors.probes.tasks.{task}.train={EWT / 'en_ewt-ud-dev.conllu'}",
            f"extractors.probes.tasks.{task}.test={EWT / 'en_ewt-ud-test.conllu'}",
            f"extractors.probes.tasks.{task}.max_train={MAX_TRAIN}",
            f"extractors.probes.tasks.{task}.max_test={MAX_TEST}",
        ]
    return [argument for option in options for argument in ("--set", option)]


@pytest.fixture(scope="module")
def extracted(hub_cache, tmp_path_factory):
    """The preset extracted into a lake by the command line, as a user runs it:
    HF_HUB_CACHE at the fixture, offline; the documents where the preset expects them
    (data/pile_val_sample.jsonl under the working directory)."""
    work = tmp_path_factory.mktemp("work")
    write_documents(work / "data" / "pile_val_sample.jsonl")
    write_eval_tasks(work / "tasks")
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    common = [
        "extract",
        "--suite",
        "polypythias",
        "--lake",
        str(work / "lake"),
        "--no-progress",
        *settings(work / "tasks"),
    ]
    runs = [
        [*common, "--sizes", "14m", "--seeds", "0,1,2", "--steps", "0,1000"],
        [*common, "--sizes", "70m", "--steps", "1000", "--seeds", "0", "--extractors", "weight_stats"],
    ]
    for arguments in runs:
        done = subprocess.run(
            [str(POLYPYTHIAS), *arguments], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return work


def test_every_checkpoint_and_extractor_succeeds_and_records_its_weight_format(extracted):
    manifest = Lake(extracted / "lake").read(MANIFEST).to_pylist()
    assert len(manifest) == 3 * 2 * 4 + 1
    assert {row["status"] for row in manifest} == {"success"}, [r["error"] for r in manifest]
    assert {(r["model_size"], r["extractor"]) for r in manifest if r["model_size"] == "14m"} == {
        ("14m", name) for name in ("token_stats", "weight_stats", "evals", "probes")
    }
    for row in manifest:
        # Seed 0 is EleutherAI/pythia-{size} (pickle only), the others -seed{k}.
        assert row["weights_format"] == ("bin" if row["seed"] == 0 else "safetensors"), row
        expected_repo = f"EleutherAI/pythia-{row['model_size']}" + (f"-seed{row['seed']}" if row["seed"] else "")
        assert row["source"] == f"{expected_repo}@step{row['step']}"


def test_weight_stats_have_pythias_shapes(extracted):
    weights = Lake(extracted / "lake").read(WEIGHT_STATS)
    for size, shape in PYTHIA_SHAPES.items():
        if size not in PARAMETERS:
            continue
        rows = weights.filter(pc.equal(weights["model_size"], size))
        assert rows.num_rows
        hidden, inner, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
        for seed in sorted(set(rows["seed"].to_pylist())):
            one = [r for r in rows.to_pylist() if r["seed"] == seed and r["step"] == 1000]
            shapes = {(r["kind"], r["layer"]): (r["n_rows"], r["n_cols"]) for r in one}
            assert shapes[("embed", None)] == shapes[("unembed", None)] == (50_304, hidden)
            assert {layer for kind, layer in shapes if layer is not None} == set(range(layers))
            for layer in range(layers):
                for kind in ("q", "k", "v", "attn_out"):
                    assert shapes[(kind, layer)] == (hidden, hidden)
                assert shapes[("ffn_in", layer)] == (inner, hidden)
                assert shapes[("ffn_out", layer)] == (hidden, inner)
            counted = {r["kind"]: r["n_rows"] for r in one if r["kind"] in ("all_weights", "all_biases")}
            assert counted["all_weights"] + counted["all_biases"] == PARAMETERS[size]


def test_token_statistics_use_the_real_tokenizer(extracted):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    ids = [tokenizer.encode(text, add_special_tokens=False).ids for text in DOCUMENTS]
    stats = Lake(extracted / "lake").read(TOKEN_STATS)
    one = stats.filter(pc.and_(pc.equal(stats["seed"], 1), pc.equal(stats["step"], 1000)))
    # BOS (<|endoftext|>) is prepended, so every token of every document is predicted.
    assert one.num_rows == sum(len(doc) for doc in ids)
    first = one.filter(pc.equal(one["doc_id"], 0)).sort_by("position")
    assert first["target_id"].to_pylist() == ids[0]
    assert len({(r["seed"], r["step"]) for r in stats.select(["seed", "step"]).to_pylist()}) == 6


def test_probes_read_the_treebank_as_its_original_text(extracted):
    results = Lake(extracted / "lake").read(PROBE_RESULTS).to_pylist()
    assert {r["task"] for r in results} == {"upos", "deprel"}
    assert {r["layer"] for r in results} == set(range(PYTHIA_SHAPES["14m"]["num_hidden_layers"] + 1))
    assert all(r["n_train"] == MAX_TRAIN and r["n_test"] == MAX_TEST for r in results)
    assert all(r["n_train_without_token"] == 0 == r["n_test_without_token"] for r in results)

    # What the probes read, built from the same preset and settings.
    from polypythias.extract.runner import build_extractors

    suite = load_suite("polypythias", settings(extracted / "tasks")[1::2]).narrowed(["14m"], [0], [0])
    (task, *_) = build_extractors(suite, ["probes"])["probes"].tasks
    sentences = conllu.parse((EWT / "en_ewt-ud-dev.conllu").read_text(encoding="utf-8"))
    checked = 0
    for text, sentence in zip(task.train.texts, sentences, strict=False):
        if any((token["misc"] or {}).get("SpaceAfter") == "No" for token in sentence):
            assert text == sentence.metadata["text"]
            checked += 1
    assert checked >= 5


def test_status_reports_the_narrowed_grid_and_the_marts_build_and_the_report_draws(extracted, tmp_path, monkeypatch):
    monkeypatch.chdir(extracted)  # the preset's documents are relative to it
    runner = CliRunner()
    lake = str(extracted / "lake")
    narrowed = ["--sizes", "14m", "--seeds", "0,1,2", "--steps", "0,1000", *settings(extracted / "tasks")]
    status = runner.invoke(app, ["status", "--suite", "polypythias", "--lake", lake, *narrowed])
    assert status.exit_code == 0, status.output
    runs = [line for line in status.output.splitlines() if "│ 14m" in line]
    assert len(runs) == 3 and "70m" not in status.output
    for line in runs:
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        # done, diverged, damaged, stale, failed, missing: 2 steps × 4 extractors, all done
        assert cells[2:] == ["8", "0", "0", "0", "0", "0"], line

    db, reports = tmp_path / "warehouse.duckdb", tmp_path / "reports"
    built = runner.invoke(app, ["build", "--lake", lake, "--db", str(db)])
    assert built.exit_code == 0, built.output
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        losses = con.sql("select model_size, seed, step from fct_checkpoint_losses order by all").fetchall()
        formats = con.sql(
            "select seed, any_value(weights_format) from staging.stg_lake__manifest group by seed order by seed"
        ).fetchall()
    assert losses == [("14m", seed, step) for seed in (0, 1, 2) for step in (0, 1000)]
    assert formats == [(0, "bin"), (1, "safetensors"), (2, "safetensors")]
    report = runner.invoke(app, ["report", "--db", str(db), "--out", str(reports)])
    assert report.exit_code == 0, report.output
    assert (reports / "index.html").stat().st_size > 10_000
