"""The micro suite's synthetic language and its tokenizer."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from polypythias.extract.micro.language import (
    POS_TAGS,
    Grammar,
    agreement_pair,
    generate_documents,
    minimal_pair,
    reflexive_for,
)
from polypythias.extract.micro.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def sentences():
    rng = random.Random(7)
    return [Grammar().sentence(rng) for _ in range(3000)]


def test_vocabulary_is_fixed_small_and_unique():
    vocabulary = Grammar().vocabulary()
    assert vocabulary == Grammar().vocabulary()
    assert 100 <= len(vocabulary) <= 200
    assert len(set(vocabulary)) == len(vocabulary)
    assert {".", "himself", "herself", "themselves", "who", "king", "queen"} <= set(vocabulary)


def test_generate_documents_is_deterministic_and_in_vocabulary():
    docs = generate_documents(50, seed=3, sentences_per_doc=(2, 4))
    assert [d.text for d in docs] == [d.text for d in generate_documents(50, seed=3, sentences_per_doc=(2, 4))]
    assert [d.text for d in docs] != [d.text for d in generate_documents(50, seed=4, sentences_per_doc=(2, 4))]
    vocabulary = set(Grammar().vocabulary())
    for doc in docs:
        assert 2 <= len(doc.sentences) <= 4
        tokens = doc.text.split()
        assert tokens == [w.text for w in doc.words]  # one token per word
        assert set(tokens) <= vocabulary
    with pytest.raises(ValueError):
        generate_documents(1, seed=0, sentences_per_doc=(3, 2))


def test_sentence_structure_and_labels(sentences):
    for s in sentences:
        assert s.text.endswith(" .")
        assert s.text.split() == [w.text for w in s.words]
        assert s.pos == tuple(w.pos for w in s.words)
        assert set(s.pos) <= set(POS_TAGS)
        assert s.pos[-1] == "PUNCT" and s.pos.count("PUNCT") == 1
        assert s.words[s.subject_index].pos in {"NOUN", "PROPN", "PRON"}
        assert s.words[s.subject_index].gender != "n"  # neuter nouns are objects only
        assert s.words[s.verb_index].pos == "VERB"
        for det, nxt in zip(s.words, s.words[1:]):
            if det.text in ("a", "an"):
                assert (det.text == "an") == (nxt.text[0] in "aeiou")


def test_verbs_agree_in_number_with_the_subject(sentences):
    with_relative = 0
    for s in sentences:
        number = s.words[s.subject_index].number
        assert s.words[s.verb_index].number == number
        texts = [w.text for w in s.words]
        if "who" in texts:
            with_relative += 1
            assert s.words[texts.index("who") + 1].number == number
    assert with_relative > 100


def test_reflexives_agree_with_their_antecedent(sentences):
    reflexive = [s for s in sentences if s.reflexive_index is not None]
    assert len(reflexive) > 1000
    seen = set()
    for s in reflexive:
        antecedent = s.words[s.antecedent_index]
        word = s.words[s.reflexive_index]
        assert s.antecedent_index == s.subject_index
        assert s.reflexive_index == s.verb_index + 1
        assert word == reflexive_for(antecedent)
        if antecedent.number == "sg":
            assert word.gender == antecedent.gender
        else:
            assert word.text == "themselves"
        seen.add(word.text)
    assert seen == {"himself", "herself", "themselves"}
    # Relative clauses put an attractor between antecedent and reflexive.
    assert any(s.reflexive_index - s.antecedent_index > 3 for s in reflexive)
    assert all(s.antecedent_index is None for s in sentences if s.reflexive_index is None)


def test_minimal_pair_breaks_only_the_reflexive(sentences):
    for s in sentences:
        if s.reflexive_index is None:
            with pytest.raises(ValueError):
                minimal_pair(s)
            continue
        good, bad = minimal_pair(s)
        assert good == s
        differs = [i for i, (a, b) in enumerate(zip(good.words, bad.words)) if a != b]
        assert differs == [s.reflexive_index]
        wrong = bad.words[s.reflexive_index]
        antecedent = s.words[s.antecedent_index]
        assert wrong.pos == "REFL" and wrong != reflexive_for(antecedent)
        if antecedent.number == "sg":
            assert wrong.gender != antecedent.gender  # a gender violation


def test_agreement_pair_breaks_only_the_verb(sentences):
    for s in sentences[:500]:
        good, bad = agreement_pair(s)
        assert good == s
        differs = [i for i, (a, b) in enumerate(zip(good.words, bad.words)) if a != b]
        assert differs == [s.verb_index]
        assert bad.words[s.verb_index].number != s.words[s.verb_index].number
        assert bad.words[s.verb_index].pos == "VERB"


def test_tokenizer_round_trip(tmp_path):
    vocabulary = Grammar().vocabulary()
    tokenizer = build_tokenizer(vocabulary, model_max_length=128)
    assert len(tokenizer) == len(vocabulary) + 3
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|padding|>", "<unk>"]
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == 0
    assert tokenizer.pad_token_id == 1 and tokenizer.unk_token_id == 2

    doc = generate_documents(1, seed=0)[0]
    ids = tokenizer(doc.text)["input_ids"]
    assert len(ids) == len(doc.words)  # word level, nothing added
    assert tokenizer.convert_ids_to_tokens(ids) == [w.text for w in doc.words]
    assert tokenizer.decode(ids) == doc.text
    assert tokenizer("the dragon sleeps")["input_ids"][1] == tokenizer.unk_token_id

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded(doc.text)["input_ids"] == ids
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert (reloaded.eos_token, reloaded.pad_token, reloaded.unk_token) == ("<|endoftext|>", "<|padding|>", "<unk>")
    assert reloaded.model_max_length == 128


def test_tokenizer_rejects_bad_vocabularies():
    with pytest.raises(ValueError):
        build_tokenizer(["king", "king"])
    with pytest.raises(ValueError):
        build_tokenizer(["king", "<unk>"])
    with pytest.raises(ValueError):
        build_tokenizer(["old king"])
