"""The evals extractor and the micro lm-eval tasks, checked against independent
computations: the grammar's lexicon for the task items, numpy for the metrics, and
a fresh ``lm_eval.simple_evaluate`` for the per-item log-likelihoods."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import one_checkpoint_suite, tiny_model
from polypythias.extract.extractors import ExtractorError, get_extractor
from polypythias.extract.extractors.evals import _absolute_data_files
from polypythias.extract.micro import eval_tasks
from polypythias.extract.micro.language import _LEXICON, Grammar
from polypythias.extract.micro.tokenizer import build_tokenizer
from polypythias.extract.micro.train import TrainConfig, suite_document
from polypythias.extract.suite import CheckpointId, Suite, SuiteError, load_suite

TASKS = list(eval_tasks.TASK_NAMES)
N_ITEMS = 30
CHECKPOINT = CheckpointId("tiny", "tiny", 0, 0)
CPU = torch.device("cpu")

# Independent of language.py's agreement code: gender and number per word, and the
# reflexive each (gender, number) of an antecedent takes.
FEATURES = {w.text: (w.pos, w.gender, w.number) for w in _LEXICON}
REFLEXIVE = {
    ("m", "sg"): "himself",
    ("f", "sg"): "herself",
    ("m", "pl"): "themselves",
    ("f", "pl"): "themselves",
    (None, "pl"): "themselves",
}


def subject_of(words: list[str]) -> str:
    """The subject head of a micro sentence: its first noun, name or pronoun."""
    return next(w for w in words if FEATURES[w][0] in ("NOUN", "PROPN", "PRON"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def micro_tokenizer():
    return build_tokenizer(Grammar().vocabulary(), model_max_length=64)


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    return eval_tasks.write_tasks(tmp_path_factory.mktemp("tasks"), n_items=N_ITEMS)


def make_suite(base: Path, **options) -> Suite:
    return one_checkpoint_suite(
        base,
        {"evals": {"tasks": TASKS, "include_path": "tasks", "include_defaults": False, "batch_size": 16} | options},
    )


def extractor(suite: Suite):
    return get_extractor("evals")(suite.extractor_options("evals"), suite)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tasks_dir) -> Path:
    base = tmp_path_factory.mktemp("suite")
    shutil.copytree(tasks_dir, base / "tasks")
    return base


@pytest.fixture(scope="module")
def evaluated(workdir, micro_tokenizer):
    """One extractor run on two models in turn (task objects reused)."""
    evals = extractor(make_suite(workdir))
    first = evals.run(tiny_model(len(micro_tokenizer), 1), micro_tokenizer, CHECKPOINT, CPU)
    second = evals.run(tiny_model(len(micro_tokenizer), 2), micro_tokenizer, CHECKPOINT, CPU)
    return first, second


# -- the task items ----------------------------------------------------------------


def test_gender_pairs_differ_only_in_a_reflexive_and_the_good_one_agrees(tasks_dir):
    items = read_jsonl(tasks_dir / "micro_gender_agreement.jsonl")
    assert len(items) == N_ITEMS
    assert len({item["sentence_good"] for item in items}) == N_ITEMS
    for item in items:
        good, bad = item["sentence_good"].split(), item["sentence_bad"].split()
        assert item["choices"] == [item["sentence_good"], item["sentence_bad"]]
        assert len(good) == len(bad)
        differ = [i for i, (g, b) in enumerate(zip(good, bad, strict=True)) if g != b]
        assert differ == [item["reflexive_index"]]
        subject = subject_of(good)
        assert good[item["antecedent_index"]] == subject
        _, gender, number = FEATURES[subject]
        assert good[differ[0]] == REFLEXIVE[(gender, number)]
        assert FEATURES[bad[differ[0]]][0] == "REFL"
        assert bad[differ[0]] != REFLEXIVE[(gender, number)]


def test_cloze_targets_are_reflexives_agreeing_with_the_subject(tasks_dir):
    items = read_jsonl(tasks_dir / "micro_lambada.jsonl")
    assert len(items) == N_ITEMS
    for item in items:
        assert item["target"].startswith(" ") and item["target"].strip() == item["target"][1:]
        words = item["context"].split()
        # The last sentence of the context, cut before its reflexive.
        last = words[len(words) - words[::-1].index(".") :] if "." in words else words
        subject = subject_of(last)
        assert words[item["antecedent_index"]] == subject
        _, gender, number = FEATURES[subject]
        assert item["target"][1:] == REFLEXIVE[(gender, number)]
        assert FEATURES[words[-1]][0] == "VERB"


def test_verb_choices_contain_exactly_one_agreeing_form(tasks_dir):
    items = read_jsonl(tasks_dir / "micro_verb_agreement.jsonl")
    assert len(items) == N_ITEMS
    labels = [item["label"] for item in items]
    assert len(set(labels)) > 1  # the right answer's position is shuffled
    for item in items:
        number = FEATURES[subject_of(item["context"].split())][2]
        agreeing = [i for i, c in enumerate(item["choices"]) if FEATURES[c] == ("VERB", None, number)]
        assert agreeing == [item["label"]]
        assert len(set(item["choices"])) == 4
        assert all(FEATURES[c][0] == "VERB" for c in item["choices"])


def test_task_items_are_deterministic_and_seeded(tmp_path, tasks_dir):
    again = eval_tasks.write_tasks(tmp_path / "again", n_items=N_ITEMS)
    other = eval_tasks.write_tasks(tmp_path / "other", n_items=N_ITEMS, seed=99)
    for name in TASKS:
        same = (again / f"{name}.jsonl").read_text()
        assert same == (tasks_dir / f"{name}.jsonl").read_text()
        assert (other / f"{name}.jsonl").read_text() != same
        assert (again / f"{name}.yaml").read_bytes() == (eval_tasks.TASKS_DIR / f"{name}.yaml").read_bytes()


def test_trained_suite_lists_the_micro_tasks():
    document = suite_document(TrainConfig(sizes=["200k"], seeds=[0]))
    options = document["extractors"]["evals"]
    assert options["tasks"] == TASKS and options["include_path"] == "eval/tasks"
    assert not options["include_defaults"]
    preset = load_suite("micro").extractor_options("evals")
    assert preset.tasks == TASKS and preset.include_path == "micro/eval/tasks"
    with pytest.raises(ValueError, match="eval_task_seed"):
        TrainConfig(eval_task_seed=1233)  # its second task would reuse data_seed 1234


# -- the extractor -------------------------------------------------------------------


def test_rows_and_metrics_match_an_independent_recomputation(evaluated, tasks_dir):
    for tables in evaluated:
        samples = tables["eval_samples"].to_pylist()
        results = tables["eval_results"].to_pylist()
        assert len(samples) == N_ITEMS * len(TASKS)
        by_task = {t: sorted((s for s in samples if s["task"] == t), key=lambda s: s["doc_id"]) for t in TASKS}
        assert all([s["doc_id"] for s in rows] == list(range(N_ITEMS)) for rows in by_task.values())
        value = {(r["task"], r["metric"]): r for r in results}
        assert set(value) == {
            ("micro_gender_agreement", "acc"),
            ("micro_lambada", "acc"),
            ("micro_lambada", "perplexity"),
            ("micro_verb_agreement", "acc"),
            ("micro_verb_agreement", "acc_norm"),
        }
        assert all(r["n_samples"] == N_ITEMS and r["num_fewshot"] == 0 and r["harness_version"] for r in results)

        for task in ("micro_gender_agreement", "micro_verb_agreement"):
            items = read_jsonl(tasks_dir / f"{task}.jsonl")
            acc = []
            for sample, item in zip(by_task[task], items, strict=True):
                lls = np.array(sample["choice_loglikelihoods"])
                gold = 0 if task == "micro_gender_agreement" else item["label"]
                assert sample["target_index"] == gold
                assert sample["predicted"] == int(np.argmax(lls))
                acc.append(float(np.argmax(lls) == gold))
                metrics = dict(sample["metrics"])
                assert metrics["acc"] == acc[-1]
                if task == "micro_verb_agreement":
                    lengths = np.array([len(c) for c in item["choices"]], dtype=float)
                    assert metrics["acc_norm"] == float(np.argmax(lls / lengths) == gold)
            assert value[(task, "acc")]["value"] == pytest.approx(np.mean(acc))
            assert value[(task, "acc")]["stderr"] == pytest.approx(np.std(acc, ddof=1) / np.sqrt(len(acc)))

        lambada = by_task["micro_lambada"]
        lls = np.array([s["choice_loglikelihoods"][0] for s in lambada])
        greedy = np.array([s["choice_is_greedy"][0] for s in lambada], dtype=float)
        assert all(s["predicted"] is None and s["target"].startswith(" ") for s in lambada)
        assert [dict(s["metrics"])["acc"] for s in lambada] == greedy.tolist()
        assert value[("micro_lambada", "acc")]["value"] == pytest.approx(greedy.mean())
        assert value[("micro_lambada", "perplexity")]["value"] == pytest.approx(np.exp(-lls.mean()))


def test_reused_tasks_give_the_loglikelihoods_of_a_fresh_simple_evaluate(
    evaluated, workdir, micro_tokenizer, monkeypatch
):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # A fresh harness run as users do it; relative data_files need the YAMLs' folder as CWD.
    monkeypatch.chdir(workdir / "tasks")
    model = tiny_model(len(micro_tokenizer), 2)
    fresh = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=micro_tokenizer, batch_size=16),
        tasks=TASKS,
        task_manager=TaskManager(include_path=str(workdir / "tasks"), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
    )
    ours = {(s["task"], s["doc_id"]): s for s in evaluated[1]["eval_samples"].to_pylist()}
    compared = 0
    for task in TASKS:
        for sample in fresh["samples"][task]:
            row = ours[(task, sample["doc_id"])]
            expected = [float(ll) for ll, _ in sample["filtered_resps"]]
            np.testing.assert_allclose(row["choice_loglikelihoods"], expected, rtol=0, atol=1e-5)
            assert row["doc_hash"] == sample["doc_hash"]
            compared += 1
    assert compared == N_ITEMS * len(TASKS)
    # ... and the first model's run left nothing behind: the two models differ.
    first = {(s["task"], s["doc_id"]): s for s in evaluated[0]["eval_samples"].to_pylist()}
    assert any(first[k]["choice_loglikelihoods"] != ours[k]["choice_loglikelihoods"] for k in ours)


def test_few_shot_contexts_are_those_of_a_fresh_run_for_every_checkpoint(workdir, micro_tokenizer, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    evals = extractor(make_suite(workdir, tasks=["micro_verb_agreement"], num_fewshot=2, limit=8))
    model = tiny_model(len(micro_tokenizer), 3)
    runs = [evals.run(model, micro_tokenizer, CHECKPOINT, CPU)["eval_samples"] for _ in range(2)]
    assert runs[0].num_rows == 8
    assert runs[0]["num_fewshot"].to_pylist() == [2] * 8
    assert runs[0]["choice_loglikelihoods"].to_pylist() == runs[1]["choice_loglikelihoods"].to_pylist()

    monkeypatch.chdir(workdir / "tasks")
    fresh = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=micro_tokenizer, batch_size=16),
        tasks=["micro_verb_agreement"],
        num_fewshot=2,
        limit=8,
        bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(workdir / "tasks"), include_defaults=False),
    )
    expected = [[float(ll) for ll, _ in s["filtered_resps"]] for s in fresh["samples"]["micro_verb_agreement"]]
    np.testing.assert_allclose(runs[1]["choice_loglikelihoods"].to_pylist(), expected, rtol=0, atol=1e-5)


def test_config_hash_follows_task_file_contents_not_paths(tmp_path, tasks_dir):
    for name in ("a", "b"):
        shutil.copytree(tasks_dir, tmp_path / name / "tasks")
    a, b = (extractor(make_suite(tmp_path / name)) for name in ("a", "b"))
    assert a.config_hash() == b.config_hash()
    data = tmp_path / "b" / "tasks" / "micro_lambada.jsonl"
    data.write_text(data.read_text().replace("herself", "himself", 1))
    assert a.config_hash() != b.config_hash()
    assert extractor(make_suite(tmp_path / "a", limit=5)).config_hash() != a.config_hash()


def test_bad_options_give_clear_errors(tmp_path, workdir, micro_tokenizer):
    with pytest.raises(ExtractorError, match=r"unknown lm-eval task\(s\) 'micro_nonsense'"):
        extractor(make_suite(workdir, tasks=["micro_lambada", "micro_nonsense"])).prepare()
    with pytest.raises(ExtractorError, match="missing_folder.*is not a folder"):
        extractor(make_suite(tmp_path, include_path="missing_folder"))
    with pytest.raises(ValueError, match="tasks"):
        make_suite(tmp_path, tasks=[])
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "sizes": ["s"],
                "seeds": [0],
                "steps": {"all": [0]},
                "checkpoints": {"local": "{size}"},
                "extractors": {"evals": {"tasks": ["x"], "shots": 1}},
            }
        )
    )
    with pytest.raises(SuiteError, match="extractors.evals"):
        load_suite(tmp_path / "bad.yaml")


def test_include_path_tasks_load_from_any_working_directory(tmp_path, tasks_dir, micro_tokenizer, monkeypatch):
    """Templates (``_template_yaml``) and data files next to the YAMLs keep working."""
    folder = tmp_path / "suite" / "tasks" / "nested"
    folder.mkdir(parents=True)
    shutil.copyfile(tasks_dir / "micro_lambada.jsonl", folder / "items.jsonl")
    (folder / "_template_yaml").write_text(
        (eval_tasks.TASKS_DIR / "micro_lambada.yaml")
        .read_text()
        .replace("task: micro_lambada\n", "")
        .replace("micro_lambada.jsonl", "items.jsonl")
    )
    (folder / "mine.yaml").write_text("include: _template_yaml\ntask: my_cloze\n")
    monkeypatch.chdir(tmp_path)
    evals = extractor(make_suite(tmp_path / "suite", tasks=["my_cloze"], limit=3))
    table = evals.run(tiny_model(len(micro_tokenizer), 0), micro_tokenizer, CHECKPOINT, CPU)["eval_samples"]
    targets = [json.loads(line)["target"] for line in (folder / "items.jsonl").read_text().splitlines()[:3]]
    assert table["task"].to_pylist() == ["my_cloze"] * 3
    assert table["target"].to_pylist() == targets


def test_include_path_yamls_get_absolute_data_files_and_keep_function_tags(tmp_path):
    (tmp_path / "sub").mkdir()
    task = tmp_path / "sub" / "t.yaml"
    task.write_text(
        "task: t\ndataset_path: json\n"
        "dataset_kwargs:\n  data_files:\n    test: [a.jsonl, ../b.jsonl, /abs/c.jsonl, hf://x/d.jsonl]\n"
        "process_docs: !function utils.process\n"
    )
    text = _absolute_data_files(task)
    assert "!function 'utils.process'" in text or "!function utils.process" in text
    config = yaml.load(text.replace("!function", ""), Loader=yaml.SafeLoader)
    assert config["dataset_kwargs"]["data_files"]["test"] == [
        str(tmp_path / "sub" / "a.jsonl"),
        str(tmp_path / "b.jsonl"),
        "/abs/c.jsonl",
        "hf://x/d.jsonl",
    ]


def test_token_ids_are_reused_only_while_the_tokenizer_stays_the_same(workdir, micro_tokenizer):
    # The same words in another order: every text gets other token ids.
    other = build_tokenizer(list(reversed(Grammar().vocabulary())), model_max_length=64)
    assert other.encode("the dog") != micro_tokenizer.encode("the dog")
    model = tiny_model(len(micro_tokenizer), 4)

    def loglikelihoods(evals, tokenizer) -> list:
        return evals.run(model, tokenizer, CHECKPOINT, CPU)["eval_samples"]["choice_loglikelihoods"].to_pylist()

    evals = extractor(make_suite(workdir, limit=6))
    first = loglikelihoods(evals, micro_tokenizer)
    after_switch = loglikelihoods(evals, other)
    assert after_switch == loglikelihoods(extractor(make_suite(workdir, limit=6)), other)
    assert after_switch != first
    # ... and back: the first tokenizer's ids again, as a fresh extractor computes them.
    assert loglikelihoods(evals, micro_tokenizer) == first
