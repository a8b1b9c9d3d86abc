"""Shared fixtures: tiny random GPT-NeoX checkpoints laid out like a suite."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from polypythias.extract.micro.tokenizer import build_tokenizer
from polypythias.extract.suite import CheckpointId, Suite

WORDS = [f"w{i}" for i in range(40)]


def tiny_model(vocab_size: int, seed: int) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=64,
        tie_word_embeddings=False,  # as in Pythia
    )
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(WORDS)


def write_documents(path: Path, n: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 40))) for _ in range(n)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return texts


#: The one checkpoint of `one_checkpoint_suite`.
CHECKPOINT = CheckpointId("tiny", "tiny", 0, 0)


def one_checkpoint_suite(base_dir: Path, extractors: dict) -> Suite:
    """A suite of one local checkpoint (folder `tiny` under base_dir) and the given
    extractors, for running an extractor directly."""
    suite = Suite.model_validate(
        {
            "name": "tiny",
            "sizes": ["tiny"],
            "seeds": [0],
            "steps": {"all": [0]},
            "checkpoints": {"local": "{size}"},
            "extractors": extractors,
        }
    )
    suite._base_dir = base_dir
    return suite


@pytest.fixture
def tiny_suite(tmp_path, tokenizer) -> Path:
    """A suite of 2 seeds × 3 steps of random checkpoints; returns its suite file."""
    for seed in (0, 1):
        for step in (0, 1, 2):
            folder = tmp_path / f"ck/tiny/seed{seed}/step{step}"
            tiny_model(len(tokenizer), seed * 100 + step).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    write_documents(tmp_path / "docs.jsonl")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        """
name: tiny
sizes: [tiny]
seeds: [0, 1]
steps: {all: [0, 1, 2], last: [2]}
checkpoints: {local: "ck/{size}/seed{seed}/step{step}"}
extractors:
  token_stats: {documents: docs.jsonl, top_k: 5, batch_size: 5}
  weight_stats: {}
"""
    )
    return suite


@pytest.fixture(scope="session")
def young_lake_warehouse(tmp_path_factory):
    """Every model built over a toy lake (lake_fixtures) that holds only the manifest and
    token statistics: no weights, logs, grid, evals or probes. Shared: tests only read it."""
    from test_dbt_build import _build

    return _build(tmp_path_factory.mktemp("young"), datasets=("manifest", "token_stats"))


def pytest_sessionstart(session):
    from shared_inputs import PYTHIA_EVALS

    if not PYTHIA_EVALS.is_dir():
        raise pytest.UsageError(
            f"the shared real inputs are missing: {PYTHIA_EVALS} not found "
            "(clone next to ../shared, or set POLYPYTHIAS_SHARED)"
        )
