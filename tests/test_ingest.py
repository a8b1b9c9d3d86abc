"""`polypythias ingest lm-eval`: real Pythia result files and a real lm-eval 0.4 run,
checked against the JSON read directly."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from conftest import WORDS, tiny_model
from polypythias.extract.ingest import EXTRACTOR, ModelNamePattern, ingest
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import EVAL_FILES, EVAL_RESULTS, EVAL_SAMPLES, MANIFEST
from shared_inputs import PYTHIA_EVALS

# What each model name in the fixtures is, written out by hand.
EXPECTED_RUNS = {
    "EleutherAI/pythia-v1.1-70m": ("polypythias", "70m", "standard"),
    "EleutherAI/pythia-v1.1-160m": ("polypythias", "160m", "standard"),
    "EleutherAI/pythia-v1.1-70m-deduped": ("polypythias-deduped", "70m", "deduped"),
    "EleutherAI/pythia-v1.1-160m-deduped": ("polypythias-deduped", "160m", "deduped"),
    "EleutherAI/intervention-pythia-v1.1-70m-deduped": (
        "polypythias-intervention-deduped",
        "70m",
        "intervention-deduped",
    ),
}


def _model_args(document: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in document["config"]["model_args"].split(","))


@pytest.fixture(scope="module")
def pythia_lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("lake"))
    return lake, ingest([PYTHIA_EVALS], lake)


def test_every_pythia_file_lands_under_its_own_identity_with_its_numbers(pythia_lake):
    lake, summary = pythia_lake
    files = sorted(PYTHIA_EVALS.rglob("*.json"))
    assert len(files) == 188
    assert summary.ok and len(summary.of("ingested")) == 188
    # The fixture's README is no results file: skipped, not failed.
    assert [(o.path.name, o.reason) for o in summary.of("skipped")] == [("README.md", "not a results file")]
    eval_files = {r["path"]: r for r in lake.read(EVAL_FILES).to_pylist()}
    assert set(eval_files) == {str(f) for f in files}
    results = lake.read(EVAL_RESULTS).to_pylist()
    by_extraction: dict[str, list[dict]] = {}
    for row in results:
        by_extraction.setdefault(row["extraction_id"], []).append(row)
    assert not lake.read(EVAL_SAMPLES).num_rows  # the old format has no samples

    for file in files:
        document = json.loads(file.read_text())
        args = _model_args(document)
        suite, size, variant = EXPECTED_RUNS[args["pretrained"]]
        record = eval_files[str(file)]
        assert (record["suite"], record["model_size"], record["seed"], record["variant"]) == (suite, size, 0, variant)
        assert record["step"] == int(args["revision"].removeprefix("step"))
        assert record["format"] == "lm-eval-0.3" and record["finding"] is None
        assert record["num_fewshot"] == document["config"]["num_fewshot"]
        assert record["n_tasks"] == len(document["results"])
        assert record["evaluated_at"].timestamp() == pytest.approx(file.stat().st_mtime, abs=1e-5)
        rows = by_extraction[record["extraction_id"]]
        expected = {
            (task, metric): (value, entry.get(f"{metric}_stderr"))
            for task, entry in document["results"].items()
            for metric, value in entry.items()
            if not metric.endswith("_stderr")
        }
        assert len(rows) == len(expected), file
        for row in random.Random(file.name).sample(rows, 5):
            assert (row["value"], row["stderr"]) == expected[(row["task"], row["metric"])], file
            assert (row["suite"], row["step"]) == (suite, record["step"])

    manifest = lake.read(MANIFEST).to_pylist()
    assert len(manifest) == 188
    for row in manifest:
        assert (row["extractor"], row["status"], row["device"]) == (EXTRACTOR, "success", None)
        record = eval_files[row["source"]]
        assert row["config_hash"] == record["sha256"][:16]
        assert dict(row["rows"]) == {"eval_results": len(by_extraction[row["extraction_id"]]), "eval_files": 1}


def test_named_checkpoints(pythia_lake):
    lake, _ = pythia_lake
    files = {Path(r["path"]).name: r for r in lake.read(EVAL_FILES).to_pylist()}
    identity = {name: (r["suite"], r["model_size"], r["seed"], r["step"]) for name, r in files.items()}
    assert identity["70m-deduped_step3000.json"] == ("polypythias-deduped", "70m", 0, 3000)
    assert identity["intervention-70m-deduped_step134000.json"] == (
        "polypythias-intervention-deduped",
        "70m",
        0,
        134000,
    )
    assert identity["160m_step0.json"] == ("polypythias", "160m", 0, 0)
    assert identity["160m-5shot_step93000.json"] == ("polypythias", "160m", 0, 93000)
    assert files["160m-5shot_step93000.json"]["num_fewshot"] == 5


def test_reingesting_is_skipped(pythia_lake):
    lake, _ = pythia_lake
    before = {d.name: lake.read(d).num_rows for d in (EVAL_RESULTS, EVAL_FILES, MANIFEST)}
    again = ingest([PYTHIA_EVALS / "pythia-v1" / "pythia-160m"], lake)
    assert again.ok and len(again.of("skipped")) == 42 and not again.of("ingested")
    assert again.reasons("skipped") == {"already in the lake": 42}
    assert {d.name: lake.read(d).num_rows for d in (EVAL_RESULTS, EVAL_FILES, MANIFEST)} == before


def test_mislabelled_copies_are_findings_under_their_own_identity(tmp_path):
    source = PYTHIA_EVALS / "pythia-v1" / "pythia-160m" / "zero-shot" / "160m_step1000.json"
    wrong_step = tmp_path / "160m_step2000.json"
    shutil.copy(source, wrong_step)
    (tmp_path / "pythia-70m").mkdir()
    deduped = PYTHIA_EVALS / "pythia-v1" / "pythia-70m-deduped" / "zero-shot" / "70m-deduped_step8.json"
    not_deduped = tmp_path / "pythia-70m" / "70m_step8.json"
    shutil.copy(deduped, not_deduped)
    lake = Lake(tmp_path / "lake")
    summary = ingest([wrong_step, tmp_path / "pythia-70m"], lake)
    assert summary.ok and len(summary.of("ingested")) == 2
    rows = {r["path"]: r for r in lake.read(EVAL_FILES).to_pylist()}
    copy = rows[str(wrong_step)]
    assert (copy["suite"], copy["model_size"], copy["step"]) == ("polypythias", "160m", 1000)
    assert copy["finding"] == "file name says step 2000 but model_args revision is step1000"
    twin = rows[str(not_deduped)]
    assert (twin["suite"], twin["step"]) == ("polypythias-deduped", 8)
    assert "deduplicated" in twin["finding"] and "step" not in twin["finding"]
    # The copy's numbers are the original's, filed under step 1000.
    results = lake.read(EVAL_RESULTS)
    copied = results.filter(pc.equal(results["extraction_id"], copy["extraction_id"]))
    assert set(copied["step"].to_pylist()) == {1000}
    original = json.loads(source.read_text())["results"]
    for row in copied.to_pylist():
        assert row["value"] == original[row["task"]][row["metric"]]


def test_bad_files_are_named_and_the_others_load(tmp_path):
    good = tmp_path / "160m_step4.json"
    shutil.copy(PYTHIA_EVALS / "pythia-v1" / "pythia-160m" / "zero-shot" / "160m_step4.json", good)
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": [1, 2]}))
    (tmp_path / "broken.json").write_text('{"results": {')
    document = json.loads(good.read_text())
    document["config"]["model_args"] = "pretrained=EleutherAI/pythia-160m,revision=main"
    (tmp_path / "no_step.json").write_text(json.dumps(document))
    document["config"]["model_args"] = "pretrained=EleutherAI/gpt-neox-20b,revision=step3"
    (tmp_path / "other_model.json").write_text(json.dumps(document))
    (tmp_path / "README.md").write_text("ignored when walking a folder")
    lake = Lake(tmp_path / "lake")
    summary = ingest([tmp_path, tmp_path / "README.md", tmp_path / "missing"], lake)
    assert [o.path.name for o in summary.of("ingested")] == ["160m_step4.json"]
    errors = {o.path.name: o.error for o in summary.of("failed")}
    assert set(errors) == {"foreign.json", "broken.json", "no_step.json", "other_model.json", "missing"}
    # No results at all: skipped, once, whether found in the folder or given directly.
    assert [(o.path.name, o.reason) for o in summary.of("skipped")] == [("README.md", "not a results file")]
    for name, error in errors.items():
        assert str(tmp_path / name) in error
    assert "not lm-eval output" in errors["foreign.json"]
    assert "not valid JSON" in errors["broken.json"]
    assert "states no checkpoint" in errors["no_step.json"] and "'main'" in errors["no_step.json"]
    assert "--step N" in errors["no_step.json"]
    assert "gpt-neox-20b" in errors["other_model.json"] and "pattern" in errors["other_model.json"]
    # A failed file leaves nothing in the lake; only the good one is there.
    assert lake.read(EVAL_FILES)["path"].to_pylist() == [str(good)]
    assert lake.read(MANIFEST).num_rows == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EleutherAI/pythia-14m-seed3", ("14m", 3, "standard")),
        ("EleutherAI/pythia-v1.1-70m-deduped", ("70m", 0, "deduped")),
        ("EleutherAI/pythia-410m", ("410m", 0, "standard")),
        ("EleutherAI/pythia-1.4b-deduped", ("1.4b", 0, "deduped")),
        ("EleutherAI/pythia-160m-data-seed2", ("160m", 2, "data-seed")),
        ("EleutherAI/intervention-pythia-v1.1-70m-deduped", ("70m", 0, "intervention-deduped")),
        ("/models/pythia-70m-deduped-v0/", ("70m", 0, "deduped-v0")),
    ],
)
def test_default_pattern(name, expected):
    assert ModelNamePattern().parse(name) == expected


def test_custom_pattern_and_unparsable_names():
    pattern = ModelNamePattern(r"run-(?P<size>\w+)-s(?P<seed>\d+)(?:-(?P<data>shuffled))?$")
    assert pattern.parse("me/run-tiny-s4") == ("tiny", 4, "standard")
    assert pattern.parse("me/run-tiny-s4-shuffled") == ("tiny", 4, "shuffled")
    with pytest.raises(ValueError, match="does not match"):
        ModelNamePattern().parse("EleutherAI/gpt-j-6b")
    with pytest.raises(ValueError, match="'size'"):
        ModelNamePattern(r"pythia-(?P<seed>\d+)")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        ModelNamePattern(r"pythia-(")


def test_unsafe_partition_values_name_the_file(tmp_path):
    file = tmp_path / "x.json"
    document = json.loads((PYTHIA_EVALS / "pythia-v1" / "pythia-160m" / "zero-shot" / "160m_step4.json").read_text())
    document["config"]["model_args"] = "pretrained=me/model-..,revision=step4"
    file.write_text(json.dumps(document))
    summary = ingest([file], Lake(tmp_path / "lake"), ModelNamePattern(r"model-(?P<size>.+)$"))
    (failed,) = summary.of("failed")
    assert str(file) in failed.error and "model_size" in failed.error


# -- lm-eval 0.4, written by the harness itself -----------------------------------

MODEL_ARGS = "pretrained=EleutherAI/pythia-14m-seed3,revision=step512"


@pytest.fixture(scope="module")
def harness_output(tmp_path_factory):
    """A real lm-eval 0.4 run (tiny random GPT-NeoX, local multiple-choice task)
    saved by the harness's own EvaluationTracker, as its CLI does."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from polypythias.extract.micro.tokenizer import build_tokenizer

    tmp = tmp_path_factory.mktemp("harness")
    rng = random.Random(7)
    items = [
        {"context": " ".join(rng.choices(WORDS, k=5)), "choices": rng.sample(WORDS, 3), "label": rng.randrange(3)}
        for _ in range(10)
    ]
    data = tmp / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    (tmp / "tasks").mkdir()
    (tmp / "tasks" / "ingest_mc.yaml").write_text(
        f"task: ingest_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: context\n"
        "doc_to_target: label\ndoc_to_choice: choices\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n"
    )
    tokenizer = build_tokenizer(WORDS)
    tracker = EvaluationTracker(output_path=str(tmp / "out"))
    results = simple_evaluate(
        model=HFLM(pretrained=tiny_model(len(tokenizer), 3), tokenizer=tokenizer, batch_size=8),
        model_args=MODEL_ARGS,  # recorded in config as a real `--model_args` would be
        tasks=["ingest_mc"],
        log_samples=True,
        bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(tmp / "tasks"), include_defaults=False),
        evaluation_tracker=tracker,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    tracker.save_results_samples(task_name="ingest_mc", samples=samples["ingest_mc"])
    return tmp / "out"


def test_harness_04_output_with_samples(harness_output, tmp_path):
    (results_file,) = harness_output.rglob("results_*.json")
    (samples_file,) = harness_output.rglob("samples_ingest_mc_*.jsonl")
    document = json.loads(results_file.read_text())
    assert document["config"]["model_args"] == MODEL_ARGS
    lines = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(lines) == 10

    lake = Lake(tmp_path / "lake")
    summary = ingest([harness_output], lake)
    assert summary.ok and len(summary.of("ingested")) == 1
    (record,) = lake.read(EVAL_FILES).to_pylist()
    assert (record["suite"], record["model_size"], record["seed"], record["step"]) == ("polypythias", "14m", 3, 512)
    assert record["format"] == "lm-eval-0.4" and record["finding"] is None
    assert record["samples_files"] == [str(samples_file)]
    assert record["evaluated_at"].timestamp() == pytest.approx(document["date"], abs=1e-5)

    results = {(r["task"], r["metric"]): r for r in lake.read(EVAL_RESULTS).to_pylist()}
    entry = document["results"]["ingest_mc"]
    assert set(results) == {("ingest_mc", "acc"), ("ingest_mc", "acc_norm")}
    for (_, metric), row in results.items():
        assert row["value"] == entry[f"{metric},none"] and row["n_samples"] == 10
        assert row["harness_version"] == document["lm_eval_version"]

    rows = sorted(lake.read(EVAL_SAMPLES).to_pylist(), key=lambda r: r["doc_id"])
    assert [r["doc_id"] for r in rows] == sorted(line["doc_id"] for line in lines)
    for row, line in zip(rows, sorted(lines, key=lambda x: x["doc_id"]), strict=True):
        loglikelihoods = [float(resp[0]) for resp in line["filtered_resps"]]
        assert row["choice_loglikelihoods"] == pytest.approx(loglikelihoods)
        assert row["predicted"] == max(range(3), key=loglikelihoods.__getitem__)
        assert row["target_index"] == int(line["target"]) and row["doc_hash"] == line["doc_hash"]
        assert dict(row["metrics"]) == {"acc": float(line["acc"]), "acc_norm": float(line["acc_norm"])}
        assert all(math.isfinite(v) for v in row["choice_loglikelihoods"])
    # Accuracy recomputed from the items equals the harness's.
    assert sum(r["predicted"] == r["target_index"] for r in rows) / 10 == pytest.approx(entry["acc,none"])
    (manifest,) = lake.read(MANIFEST).to_pylist()
    assert dict(manifest["rows"]) == {"eval_results": 2, "eval_samples": 10, "eval_files": 1}

    # The samples file given alone is refused and points at its results file.
    refused = ingest([samples_file], lake)
    assert "results_<timestamp>.json" in refused.of("failed")[0].error


def test_04_model_args_as_dict_and_model_name(harness_output, tmp_path):
    (results_file,) = harness_output.rglob("results_*.json")
    document = json.loads(results_file.read_text())
    as_dict = tmp_path / "results_2024-01-01T00-00-00.000001.json"
    document["config"]["model_args"] = {"pretrained": "EleutherAI/pythia-410m-deduped", "revision": "step64"}
    as_dict.write_text(json.dumps(document))
    by_name = tmp_path / "by_name" / "results_2024-01-01T00-00-00.000002.json"
    by_name.parent.mkdir()
    document["config"]["model_args"] = ""
    document["config"]["model_revision"] = "step128"
    by_name.write_text(json.dumps(document))  # model_name is still pythia-14m-seed3
    lake = Lake(tmp_path / "lake")
    assert ingest([as_dict, by_name], lake).ok
    identities = Counter(
        (r["suite"], r["model_size"], r["seed"], r["step"], r["samples_files"] == [])
        for r in lake.read(EVAL_FILES).to_pylist()
    )
    assert identities == Counter(
        {
            ("polypythias-deduped", "410m", 0, 64, True): 1,
            ("polypythias", "14m", 3, 128, True): 1,
        }
    )
