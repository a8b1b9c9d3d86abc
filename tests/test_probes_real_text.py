"""Probes on real text: the real UD English EWT treebank read as its original text,
words mapped to the real Pythia tokenizer's tokens by character offsets; and words
that get no token are left out and counted, never an error."""

from __future__ import annotations

import json

import conllu
import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

from polypythias.extract.extractors import get_extractor
from polypythias.extract.extractors.probes import sentence_text, word_tokens
from polypythias.extract.suite import CheckpointId, Suite
from shared_inputs import SHARED

TOKENIZER = SHARED / "fixtures" / "pythia-tokenizer" / "tokenizer.json"
EWT = SHARED / "fixtures" / "ud-english-ewt"


def _pythia_tokenizer(tokenizer_object=None) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_file=None if tokenizer_object else str(TOKENIZER),
        tokenizer_object=tokenizer_object,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|padding|>",
    )


@pytest.mark.parametrize("split", ["dev", "test"])
def test_every_ewt_word_maps_to_a_token_of_the_real_tokenizer(split):
    sentences = conllu.parse((EWT / f"en_ewt-ud-{split}.conllu").read_text(encoding="utf-8"))
    read = [sentence_text(sentence) for sentence in sentences]
    # Every sentence is read as its original text ...
    assert [text for text, _ in read] == [sentence.metadata["text"] for sentence in sentences]
    tokenizer = _pythia_tokenizer()
    encoded = tokenizer([text for text, _ in read], add_special_tokens=False, return_offsets_mapping=True)
    words = without_token = 0
    for (text, spans), offsets, sentence in zip(read, encoded["offset_mapping"], sentences, strict=True):
        forms = [token["form"] for token in sentence if isinstance(token["id"], int)]
        assert len(spans) == len(forms)
        distinct = sorted(set(spans))
        tokens = dict(zip(distinct, word_tokens([tuple(o) for o in offsets], distinct), strict=True))
        for form, span in zip(forms, spans, strict=True):
            words += 1
            without_token += not tokens[span]
            # ... and each word is its own characters (or its multiword token's).
            assert text[slice(*span)] == form
    assert words > 24_000 and without_token == 0


def test_words_without_a_token_are_left_out_and_counted(tmp_path):
    """A tokenizer that strips accents gives a lone combining accent no token."""
    from tokenizers import Tokenizer, normalizers

    from conftest import tiny_model

    backend = Tokenizer.from_file(str(TOKENIZER))
    backend.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
    tokenizer = _pythia_tokenizer(backend)
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(40):
        words = [str(rng.choice(["the", "a"])), str(rng.choice(["cat", "dog", "bird"]))]
        labels = ["DET", "NOUN"]
        if rng.random() < 0.25:
            words.insert(1, "\u0301")
            labels.insert(1, "ACCENT")
        lines.append(json.dumps({"words": words, "labels": labels}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:30]) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(lines[30:]) + "\n")
    accents = [line.count("ACCENT") for line in lines]
    suite = Suite.model_validate(
        {
            "name": "t",
            "sizes": ["s"],
            "seeds": [0],
            "steps": {"all": [0]},
            "checkpoints": {"local": "ck"},
            "extractors": {
                "probes": {
                    "tasks": {
                        "pos": {
                            "format": "jsonl-words",
                            "train": str(tmp_path / "train.jsonl"),
                            "test": str(tmp_path / "test.jsonl"),
                        }
                    }
                }
            },
        }
    )
    probes = get_extractor("probes")(suite.extractor_options("probes"), suite)
    model = tiny_model(len(tokenizer), 0)
    tables = probes.run(model, tokenizer, CheckpointId("t", "s", 0, 0), torch.device("cpu"))
    results = tables["probe_results"].to_pylist()
    n_train, n_test = 2 * 30 + sum(accents[:30]), 2 * 10 + sum(accents[30:])
    assert sum(accents[:30]) > 0 and sum(accents[30:]) > 0
    for row in results:
        assert row["n_train_without_token"] == sum(accents[:30])
        assert row["n_test_without_token"] == sum(accents[30:])
        assert row["n_train"] == n_train - sum(accents[:30]) and row["n_test"] == n_test - sum(accents[30:])
    predictions = tables["probe_predictions"].to_pylist()
    # item_id stays the word's position in the whole test split; left-out words have none.
    test_labels = [label for line in lines[30:] for label in json.loads(line)["labels"]]
    kept_ids = sorted({row["item_id"] for row in predictions})
    assert kept_ids == [i for i, label in enumerate(test_labels) if label != "ACCENT"]
    assert {row["gold"] for row in predictions} == {"DET", "NOUN"}
