"""Training the micro suite: schedule, layout, logs, determinism."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import yaml
from transformers import AutoTokenizer, GPTNeoXForCausalLM

from polypythias.extract.micro import probe_tasks
from polypythias.extract.micro.language import Grammar
from polypythias.extract.micro.train import (
    LOG_SCHEMA,
    SIZES,
    TrainConfig,
    _atomic_dir,
    _n_params,
    pythia_style_steps,
    train_suite,
)

pytestmark = pytest.mark.slow

VOCAB_SIZE = len(Grammar().vocabulary()) + 3


def tiny_config(**overrides) -> TrainConfig:
    settings = {
        "sizes": ["200k"],
        "seeds": [0, 1],
        "total_steps": 24,
        "n_linear": 2,
        "warmup_fraction": 1 / 6,
        "batch_size": 8,
        "seq_len": 32,
        "corpus_docs": 300,
        "eval_docs": 5,
        "workers": 1,
    }
    return TrainConfig(**(settings | overrides))


def weight_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob("*/seed*/step*/model.safetensors"))
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[Path, dict[tuple[str, int], pa.Table]]:
    out = tmp_path_factory.mktemp("micro")
    logs: dict[tuple[str, int], pa.Table] = {}
    threads = torch.get_num_threads()
    train_suite(tiny_config(), out, lambda size, seed, log: logs.setdefault((size, seed), log))
    assert torch.get_num_threads() == threads  # the caller's settings come back
    assert not torch.are_deterministic_algorithms_enabled()
    return out, logs


def test_pythia_style_steps():
    assert pythia_style_steps(256, 4) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 192, 256]
    assert pythia_style_steps(256, 1) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert pythia_style_steps(10, 3) == [0, 1, 2, 3, 7, 10]
    assert pythia_style_steps(1, 1) == [0, 1]
    for bad in [(10, 0), (4, 5)]:
        with pytest.raises(ValueError):
            pythia_style_steps(*bad)


def test_default_config():
    config = TrainConfig()
    assert config.seeds == [0, 1, 2, 3, 4]
    assert len(config.sizes) >= 2
    assert 12 <= len(config.checkpoint_steps) <= 16
    assert config.checkpoint_steps[-1] == config.total_steps


def test_the_evaluation_grid_is_step_0_and_every_other_checkpoint_back_from_the_last():
    assert TrainConfig().checkpoint_steps == [0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256]
    assert TrainConfig().eval_grid_steps == [0, 1, 4, 16, 64, 128, 192, 256]
    assert TrainConfig(total_steps=8).eval_grid_steps == [0, 2, 4, 6, 8]  # checkpoints 0…8
    assert TrainConfig(total_steps=6, n_linear=1).eval_grid_steps == [0, 2, 6]  # 0, 1, 2, 4, 6


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(total_steps=100, warmup_fraction=0.1, learning_rate=1e-3, min_lr_ratio=0.1)
    assert config.warmup_steps == 10
    lrs = [config.lr_at(step) for step in range(1, 101)]
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] == pytest.approx(1e-3)
    assert lrs[9:] == sorted(lrs[9:], reverse=True)
    assert lrs[-1] == pytest.approx(1e-4)


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="known sizes: 200k, 1m"):
        TrainConfig(sizes=["70m"])
    for bad in [
        {"seeds": [0, 0]},
        {"seeds": []},
        {"seq_len": 1000},
        {"eval_seed": 1234, "data_seed": 1234},
        {"warmup_fraction": 1.0},
        {"probe_seed": 1234 - probe_tasks.SEED_OFFSETS["pos_test"]},
    ]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    config = TrainConfig()
    config.sizes = ["70m"]  # reassigned after construction: train_suite still refuses it
    with pytest.raises(ValueError, match="unknown model size '70m'"):
        train_suite(config, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sizes_are_gpt_neox_of_their_nominal_size():
    nominal = {"k": 1e3, "m": 1e6}
    for name, shape in SIZES.items():
        config = shape.model_config(VOCAB_SIZE)
        assert config.use_parallel_residual and config.max_position_embeddings >= 64
        with torch.device("meta"):
            n = sum(p.numel() for p in GPTNeoXForCausalLM(config).parameters())
        assert n == _n_params(name, VOCAB_SIZE)
        size = float(name[:-1]) * nominal[name[-1]]
        assert size / 1.3 <= n <= size * 1.3, (name, n)


def test_suite_layout(suite):
    out, _ = suite
    config = tiny_config()
    assert yaml.safe_load((out / "suite.yaml").read_text()) == {
        "name": "micro",
        "sizes": ["200k"],
        "seeds": [0, 1],
        "steps": {"all": [0, 1, 2, 4, 8, 12, 24], "eval_grid": [0, 2, 8, 24]},
        "checkpoints": {"local": "{size}/seed{seed}/step{step}", "tokenizer": "tokenizer"},
        "extractors": {
            "token_stats": {
                "steps": "all",
                "documents": "eval/documents.jsonl",
                "top_k": 10,
                "batch_size": 64,
            },
            "weight_stats": {"steps": "all"},
            "evals": {
                "steps": "eval_grid",
                "tasks": ["micro_gender_agreement", "micro_lambada", "micro_verb_agreement"],
                "include_path": "eval/tasks",
                "include_defaults": False,
                "batch_size": 64,
            },
            "probes": {
                "steps": "eval_grid",
                "tasks": {
                    "pos": {
                        "format": "conllu",
                        "field": "upos",
                        "train": "probe/pos_train.conllu",
                        "test": "probe/pos_test.conllu",
                    },
                    "antecedent": {
                        "format": "jsonl-text",
                        "pool": "last",
                        "train": "probe/antecedent_train.jsonl",
                        "test": "probe/antecedent_test.jsonl",
                    },
                },
                "batch_size": 128,
            },
        },
    }
    assert sorted(p.name for p in (out / "probe").iterdir()) == sorted(probe_tasks.FILES)
    lines = (out / "eval" / "documents.jsonl").read_text().splitlines()
    documents = [json.loads(line) for line in lines]
    assert [d["doc_id"] for d in documents] == list(range(config.eval_docs))
    assert all(d["text"].endswith(" .") for d in documents)

    for seed in config.seeds:
        run = out / "200k" / f"seed{seed}"
        assert sorted(p.name for p in run.iterdir()) == sorted(
            ["run.json"] + [f"step{s}" for s in config.checkpoint_steps]
        )
        info = json.loads((run / "run.json").read_text())
        assert (info["size"], info["seed"], info["train"]["total_steps"]) == ("200k", seed, 24)
        assert info["train"]["learning_rate"] == config.learning_rate
    assert not list(out.rglob(".*"))  # no temporary folders left behind


def test_checkpoints_are_self_contained(suite):
    out, _ = suite
    folder = out / "200k" / "seed0" / "step24"
    model = GPTNeoXForCausalLM.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.config.vocab_size == len(tokenizer) == VOCAB_SIZE
    ids = torch.tensor([tokenizer("the king sees himself .")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 5, VOCAB_SIZE) and torch.isfinite(logits).all()


def test_logs(suite):
    _, logs = suite
    assert sorted(logs) == [("200k", 0), ("200k", 1)]
    config = tiny_config()
    for log in logs.values():
        assert log.schema == LOG_SCHEMA
        rows = log.to_pylist()
        assert [r["step"] for r in rows] == list(range(1, 25))
        assert [r["tokens_seen"] for r in rows] == [s * 8 * 32 for s in range(1, 25)]
        assert [r["lr"] for r in rows] == [config.lr_at(s) for s in range(1, 25)]
        assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
        losses = [r["loss"] for r in rows]
        assert losses[0] == pytest.approx(math.log(VOCAB_SIZE), abs=0.3)  # a uniform guess
        assert sum(losses[-4:]) / 4 < losses[0] - 1.0  # it learns


def test_training_is_deterministic(suite, tmp_path):
    out, _ = suite
    # Parallel workers give the same bits as training in this process.
    train_suite(tiny_config(workers=2), tmp_path, progress=False)
    first, again = weight_hashes(out), weight_hashes(tmp_path)
    assert len(first) == 2 * 7 and first == again
    for step in (0, 24):  # another seed: other initial weights, other data order
        assert first[f"200k/seed0/step{step}/model.safetensors"] != first[f"200k/seed1/step{step}/model.safetensors"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "step8"
    with pytest.raises(RuntimeError), _atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("crash while saving")
    assert list(tmp_path.iterdir()) == []

    final.mkdir()
    (final / "stale").write_text("old")
    with _atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in final.iterdir()] == ["config.json"]
    assert list(tmp_path.iterdir()) == [final]
