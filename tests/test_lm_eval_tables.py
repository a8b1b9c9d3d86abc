"""lm-eval output → eval_results / eval_samples rows, against the JSON read directly."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from conftest import tiny_model
from polypythias.extract.lm_eval_tables import (
    LmEvalFormatError,
    detect_format,
    evaluated_at_of,
    results_table,
    samples_table,
)
from polypythias.extract.micro import eval_tasks
from polypythias.extract.micro.language import Grammar
from polypythias.extract.micro.tokenizer import build_tokenizer
from shared_inputs import PYTHIA_EVALS

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_every_pythia_file_converts_to_its_numbers():
    files = sorted(PYTHIA_EVALS.rglob("*.json"))
    assert len(files) == 188
    for file in files:
        document = json.loads(file.read_text())
        assert detect_format(document) == "lm-eval-0.3"
        rows = results_table(document, WHEN).to_pylist()
        expected = {
            (task, metric): (value, entry.get(f"{metric}_stderr"))
            for task, entry in document["results"].items()
            for metric, value in entry.items()
            if not metric.endswith("_stderr")
        }
        assert len(rows) == len(expected), file
        for row in rows:
            value, stderr = expected[(row["task"], row["metric"])]
            assert row["value"] == value and row["stderr"] == stderr
            assert row["filter"] == "none"
            assert row["num_fewshot"] == document["config"]["num_fewshot"]
            assert row["task_version"] == str(document["versions"][row["task"]])
            assert row["evaluated_at"] == WHEN and row["n_samples"] is None


def test_hand_written_04_document():
    document = {
        "results": {
            "arc_easy": {
                "alias": "arc_easy",
                "acc,none": 0.5,
                "acc_stderr,none": 0.1,
                "acc_norm,none": 0.25,
                "acc_norm_stderr,none": "N/A",
            },
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.125,
                "exact_match_stderr,strict-match": 0.01,
                "sample_len": 8,
            },
        },
        "versions": {"arc_easy": 1.0, "gsm8k": 3},
        "n-shot": {"arc_easy": 0, "gsm8k": 5},
        "n-samples": {"arc_easy": {"original": 100, "effective": 40}},
        "lm_eval_version": "0.4.9",
        "date": 1700000000.5,
    }
    assert detect_format(document) == "lm-eval-0.4"
    rows = {(r["task"], r["metric"], r["filter"]): r for r in results_table(document, WHEN).to_pylist()}
    assert set(rows) == {
        ("arc_easy", "acc", "none"),
        ("arc_easy", "acc_norm", "none"),
        ("gsm8k", "exact_match", "strict-match"),
    }
    acc = rows[("arc_easy", "acc", "none")]
    assert (acc["value"], acc["stderr"], acc["n_samples"], acc["num_fewshot"]) == (0.5, 0.1, 40, 0)
    assert acc["task_version"] == "1.0" and acc["harness_version"] == "0.4.9"
    assert rows[("arc_easy", "acc_norm", "none")]["stderr"] is None
    gsm = rows[("gsm8k", "exact_match", "strict-match")]
    assert (gsm["n_samples"], gsm["num_fewshot"], gsm["task_version"]) == (8, 5, "3")
    assert evaluated_at_of(document) == datetime.fromtimestamp(1700000000.5, UTC)


def test_samples_from_jsonl_strings_and_from_memory_agree():
    in_memory = {
        "doc_id": 3,
        "doc_hash": "h",
        "target": 1,
        "filter": "none",
        "filtered_resps": [(-1.5, False), (-0.5, True), (-2.0, False)],
        "metrics": ["acc", "acc_norm"],
        "acc": 1.0,
        "acc_norm": 0.0,
    }
    # lm-eval's JSONL writer turns the (loglikelihood, is_greedy) tuples into strings.
    from_file = json.loads(
        json.dumps(
            in_memory
            | {
                "filtered_resps": [["-1.5", "False"], ["-0.5", "True"], ["-2.0", "False"]],
            }
        )
    )
    rows = [samples_table("t", [s], 0).to_pylist()[0] for s in (in_memory, from_file)]
    assert rows[0] == rows[1]
    row = rows[0]
    assert row["choice_loglikelihoods"] == [-1.5, -0.5, -2.0]
    assert row["choice_is_greedy"] == [False, True, False]
    assert (row["predicted"], row["target_index"], row["target"]) == (1, 1, "1")
    assert dict(row["metrics"]) == {"acc": 1.0, "acc_norm": 0.0}
    cloze = samples_table(
        "c", [{"doc_id": 0, "target": " him", "filtered_resps": [(-0.25, True)], "metrics": ["acc"], "acc": True}], 0
    ).to_pylist()[0]
    assert cloze["predicted"] is None and cloze["target_index"] is None
    assert cloze["choice_loglikelihoods"] == [-0.25] and dict(cloze["metrics"]) == {"acc": 1.0}


def test_real_harness_output_read_back_from_its_files(tmp_path):
    """lm-eval's own writer (EvaluationTracker) → files → the same rows as in memory."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks_dir = eval_tasks.write_tasks(tmp_path / "tasks", n_items=6)
    tokenizer = build_tokenizer(Grammar().vocabulary(), model_max_length=64)
    data_files = {f"{t}.jsonl": str(tasks_dir / f"{t}.jsonl") for t in eval_tasks.TASK_NAMES}
    for yaml_file in tasks_dir.glob("*.yaml"):  # absolute data paths: the CWD does not matter
        text = yaml_file.read_text()
        for name, path in data_files.items():
            text = text.replace(f"test: {name}", f"test: {path}")
        yaml_file.write_text(text)
    results = simple_evaluate(
        model=HFLM(pretrained=tiny_model(len(tokenizer), 4), tokenizer=tokenizer, batch_size=8),
        tasks=list(eval_tasks.TASK_NAMES),
        log_samples=True,
        bootstrap_iters=100,
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
    )
    tracker = EvaluationTracker(output_path=str(tmp_path / "out"))
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in eval_tasks.TASK_NAMES:
        tracker.save_results_samples(task_name=task, samples=samples[task])

    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    document = json.loads(results_file.read_text())
    assert detect_format(document) == "lm-eval-0.4"
    from_file = results_table(document, evaluated_at_of(document)).to_pylist()
    in_memory = results_table(results, evaluated_at_of(document)).to_pylist()
    assert from_file == in_memory
    expected = {
        (task, key.partition(",")[0]): value
        for task, entry in document["results"].items()
        for key, value in entry.items()
        if "," in key and "_stderr" not in key
    }
    assert {(r["task"], r["metric"]): r["value"] for r in from_file} == pytest.approx(expected)
    assert all(r["n_samples"] == 6 for r in from_file)

    for task in eval_tasks.TASK_NAMES:
        (jsonl,) = results_file.parent.glob(f"samples_{task}_*.jsonl")
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
        rows = samples_table(task, lines, 0).to_pylist()
        assert rows == samples_table(task, samples[task], 0).to_pylist()
        assert len(rows) == 6
        for row, line in zip(rows, lines, strict=True):
            assert row["doc_id"] == line["doc_id"] and row["doc_hash"] == line["doc_hash"]
            assert row["choice_loglikelihoods"] == pytest.approx([float(r[0]) for r in line["filtered_resps"]])
            assert dict(row["metrics"]) == {m: float(line[m]) for m in line["metrics"]}
            assert all(math.isfinite(v) for v in row["choice_loglikelihoods"])


def test_foreign_or_broken_input_is_named():
    with pytest.raises(LmEvalFormatError, match="no 'results'"):
        detect_format({"hello": 1})
    with pytest.raises(LmEvalFormatError, match="not an lm-eval results file"):
        detect_format({"results": {"x": {"acc": 1}}})
    with pytest.raises(LmEvalFormatError, match=r"results\['x'\] is not an object"):
        results_table({"results": {"x": 3}, "n-shot": {}}, WHEN)
    with pytest.raises(LmEvalFormatError, match="task 't' sample 2"):
        samples_table("t", [{"doc_id": 0}, {"target": 1}], 0)
