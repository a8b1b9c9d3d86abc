"""Probing tasks over the micro language, with the grammar's exact labels.

``write_probe_tasks`` writes them into a folder (``micro train`` uses
``<out>/probe/``) for the ``probes`` extractor:

- ``pos_train.conllu`` / ``pos_test.conllu``: part of speech. CoNLL-U with UPOS
  (Universal Dependencies tags: the grammar's reflexives and relative "who" are
  PRON), XPOS (the grammar's own tag, ``language.POS_TAGS``) and FEATS (Gender,
  Number, PronType, Reflex where the grammar knows them); LEMMA, HEAD, DEPREL,
  DEPS and MISC are ``_``.

  Every word of the micro language has one part of speech, so a probe could
  read it from the word's identity alone — and a random embedding identifies a
  word as well as a trained one: at step 0 such a probe is already ~99 % right.
  The split is therefore *lexical*: within each part of speech with several words,
  a seeded 40 % of the words are test words and the rest train words. Each file
  annotates only its
  own words (UPOS, XPOS and FEATS of the others are ``_``, which the extractor
  reads as "not an item"), so the test asks for the part of speech of words the
  probe never saw: the model must represent them like other words of their
  class. A part of speech with a single word (PUNCT: ".") cannot be held out
  and is annotated in neither file. Train and test sentences differ.

- ``antecedent_train.jsonl`` / ``antecedent_test.jsonl``: the agreement features
  of the antecedent a reflexive must agree with, from the sentence read up to just
  before the reflexive (``{"text": "the old king who sees the girls admires",
  "label": "Gender=Masc|Number=Sing", ...}``; pool the ``last`` token). Labels are
  what the reflexive needs: ``Gender=Masc|Number=Sing`` (himself),
  ``Gender=Fem|Number=Sing`` (herself) or ``Number=Plur`` (themselves). An
  *attractor* is a noun, name or pronoun between the antecedent and the reflexive
  (in a relative clause: "who sees the girls") that would take another reflexive;
  the grammar makes few, so half of the items are drawn among the sentences that
  have one. Each line also gives ``antecedent_index`` (the antecedent's word
  index) and ``attractor`` (true or false). Texts are distinct across both splits.

Everything is deterministic given the seed; each part draws from its own
generator (``seed`` + 0 … 3, see ``SEED_OFFSETS``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .language import _LEXICON, Grammar, Sentence, Word, reflexive_for

#: Items per split by default (exactly): as many as the probes extractor's speed
#: target allows.
POS_TRAIN_WORDS = 1000
POS_TEST_WORDS = 500
ANTECEDENT_TRAIN = 400
ANTECEDENT_TEST = 200
#: Share of each part of speech's words that are test words.
TEST_WORD_FRACTION = 0.4
#: Base generator seed; differs from the micro suite's other seeds (training corpus
#: 1234, eval documents 4321, lm-eval tasks 2468 …).
DEFAULT_SEED = 1357
#: What each generator draws; its seed is the base seed plus the offset.
SEED_OFFSETS = {"word_split": 0, "pos_train": 1, "pos_test": 2, "antecedent": 3}
FILES = ("pos_train.conllu", "pos_test.conllu", "antecedent_train.jsonl", "antecedent_test.jsonl")

_UPOS = {"REFL": "PRON", "REL": "PRON"}  # the grammar's tags that UD folds into PRON
_GENDER = {"m": "Masc", "f": "Fem", "n": "Neut"}
_NUMBER = {"sg": "Sing", "pl": "Plur"}


def upos(word: Word) -> str:
    return _UPOS.get(word.pos, word.pos)


def feats(word: Word) -> str:
    """The word's FEATS column (features sorted by name, as UD requires)."""
    features = {}
    if word.gender is not None:
        features["Gender"] = _GENDER[word.gender]
    if word.number is not None:
        features["Number"] = _NUMBER[word.number]
    if word.pos in ("PRON", "REFL"):
        features["PronType"] = "Prs"
    if word.pos == "REL":
        features["PronType"] = "Rel"
    if word.pos == "REFL":
        features["Reflex"] = "Yes"
    return "|".join(f"{k}={v}" for k, v in sorted(features.items(), key=lambda kv: kv[0].lower())) or "_"


def agreement_label(antecedent: Word) -> str:
    """What a reflexive agreeing with ``antecedent`` needs, as UD features."""
    reflexive = reflexive_for(antecedent)
    if reflexive.number == "pl":
        return "Number=Plur"
    return f"Gender={_GENDER[reflexive.gender]}|Number=Sing"


def _marked(word: Word) -> tuple[str, ...]:
    """What a reflexive marks of its antecedent: number, and gender in the singular."""
    return ("pl",) if word.number == "pl" else ("sg", str(word.gender))


def word_split(seed: int) -> tuple[frozenset[str], frozenset[str]]:
    """(train words, test words): per part of speech (UPOS), a seeded
    ``TEST_WORD_FRACTION`` of its words are test words, at least one, never all;
    a part of speech with a single word (PUNCT: ".") is in neither."""
    rng = random.Random(seed)
    by_tag: dict[str, list[str]] = {}
    for word in _LEXICON:
        by_tag.setdefault(upos(word), []).append(word.text)
    train, test = set(), set()
    for tag in sorted(by_tag):
        words = sorted(set(by_tag[tag]))
        rng.shuffle(words)
        if len(words) < 2:
            continue  # cannot be held out: annotated in neither file
        held_out = min(len(words) - 1, max(1, round(TEST_WORD_FRACTION * len(words))))
        test.update(words[:held_out])
        train.update(words[held_out:])
    return frozenset(train), frozenset(test)


def pos_sentences(n_words: int, seed: int, words: frozenset[str], grammar: Grammar | None = None) -> list[Sentence]:
    """Sentences drawn until they hold at least ``n_words`` words of ``words``
    (every sentence has one or more)."""
    grammar = grammar or Grammar()
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < n_words:
        sentence = grammar.sentence(rng)
        hits = sum(w.text in words for w in sentence.words)
        if hits:
            sentences.append(sentence)
            count += hits
    return sentences


def conllu_text(sentences: list[Sentence], words: frozenset[str], prefix: str, limit: int | None = None) -> str:
    """CoNLL-U of ``sentences``, annotating only the words in ``words`` (and, with
    ``limit``, only the first ``limit`` of them)."""
    blocks = []
    annotated = 0
    for number, sentence in enumerate(sentences, start=1):
        lines = [f"# sent_id = {prefix}-{number}", f"# text = {sentence.text}"]
        for index, word in enumerate(sentence.words, start=1):
            known = word.text in words and (limit is None or annotated < limit)
            annotated += known
            columns = [
                str(index),
                word.text,
                "_",
                upos(word) if known else "_",
                word.pos if known else "_",
                feats(word) if known else "_",
                "_",
                "_",
                "_",
                "_",
            ]
            lines.append("\t".join(columns))
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def antecedent_items(n: int, seed: int, grammar: Grammar | None = None) -> list[dict]:
    """``n`` distinct prefixes cut before a reflexive; every other one has an attractor."""
    grammar = grammar or Grammar()
    rng = random.Random(seed)
    with_attractor: list[dict] = []
    without: list[dict] = []
    seen: set[str] = set()
    wanted_with = n // 2
    for _ in range(2000 * n):
        if len(with_attractor) >= wanted_with and len(without) >= n - wanted_with:
            break
        sentence = grammar.sentence(rng)
        if sentence.reflexive_index is None:
            continue
        antecedent_index = sentence.antecedent_index
        antecedent = sentence.words[antecedent_index]
        label = agreement_label(antecedent)
        between = sentence.words[antecedent_index + 1 : sentence.reflexive_index]
        attractor = any(w.pos in ("NOUN", "PROPN", "PRON") and _marked(w) != _marked(antecedent) for w in between)
        text = " ".join(w.text for w in sentence.words[: sentence.reflexive_index])
        bucket, size = (with_attractor, wanted_with) if attractor else (without, n - wanted_with)
        if text in seen or len(bucket) >= size:
            continue
        seen.add(text)
        bucket.append({"text": text, "label": label, "antecedent_index": antecedent_index, "attractor": attractor})
    else:
        raise ValueError(f"the grammar gave fewer than {n} distinct antecedent items")
    # Interleave, so that any prefix of the list (a split, a cap) is balanced too.
    items = []
    for pair in zip(with_attractor, without, strict=False):
        items.extend(pair)
    longer = with_attractor if len(with_attractor) > len(without) else without
    items.extend(longer[len(items) // 2 :])
    return items


def write_probe_tasks(
    out_dir: Path,
    seed: int = DEFAULT_SEED,
    pos_words: tuple[int, int] = (POS_TRAIN_WORDS, POS_TEST_WORDS),
    antecedent: tuple[int, int] = (ANTECEDENT_TRAIN, ANTECEDENT_TEST),
    grammar: Grammar | None = None,
) -> Path:
    """Write the probing files (``FILES``) into ``out_dir``; returns it."""
    if min(*pos_words, *antecedent) < 1:
        raise ValueError(f"split sizes must be >= 1, got {pos_words} and {antecedent}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_words, test_words = word_split(seed + SEED_OFFSETS["word_split"])
    for split, n, words in (("train", pos_words[0], train_words), ("test", pos_words[1], test_words)):
        sentences = pos_sentences(n, seed + SEED_OFFSETS[f"pos_{split}"], words, grammar)
        _replace_text(out_dir / f"pos_{split}.conllu", conllu_text(sentences, words, split, limit=n))
    items = antecedent_items(sum(antecedent), seed + SEED_OFFSETS["antecedent"], grammar)
    for split, chunk in (("train", items[: antecedent[0]]), ("test", items[antecedent[0] :])):
        _replace_text(out_dir / f"antecedent_{split}.jsonl", "".join(json.dumps(item) + "\n" for item in chunk))
    return out_dir


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
