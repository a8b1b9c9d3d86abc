"""Linear probes of every layer's hidden states, with their online codelength.

A probing task is a fixed train split and a fixed test split of labelled items.
An item is either a word of a text (token level: parts of speech, dependency
relations, named entities) or a whole text (sequence level: topic, sentiment,
agreement). Per checkpoint and task, for every layer — 0 is the embeddings, i the
output of block i, as the model's ``output_hidden_states`` gives them (in GPT-NeoX
the last entry has the final layer norm applied, it is the ``last_hidden_state``)
— a multinomial L2 logistic regression is trained on the train items' features and
scored on the test items (accuracy, macro-F1), and the train labels' online
codelength (Voita & Titov 2020) is measured. ``polypythias.extract.probing`` holds
the math and says what exactly is fitted.

Input formats (``format`` of a task; paths resolve against the suite file):

- ``conllu``: CoNLL-U, read with the ``conllu`` parser. The model reads the
  sentence's original text: its ``# text``, or where a sentence has none (or its
  tokens do not spell it out) the surface tokens joined by a space except after
  ``SpaceAfter=No`` — "search-engine (and now e-mail)", not "search - engine ( and
  now e-mail )". The items are its words (integer ids; empty nodes ``1.1`` have no
  text and are skipped); a word inside a multiword token (``1-2 don't`` = ``do`` +
  ``n't``) is its part of the token's text, or the whole token where the words'
  forms do not concatenate to it. ``field`` is a column (``upos``, ``xpos``,
  ``deprel``, ``lemma``) or a FEATS key (``Number``). A word whose value is ``_`` —
  or, for a FEATS key, that lacks the key — is in the text but not an item.
- ``jsonl-words``: one JSON object per line with a list of words (key ``words``)
  and a list of labels of the same length (key ``labels``); a null label marks a
  word that is not an item. The text is the words joined by single spaces.
- ``jsonl-text``: one JSON object per line with a text (key ``text``) and a label
  (key ``label``); the item is the whole text, pooled over its tokens (``pool``:
  ``mean`` of all its tokens, or the ``last`` one).

Words and sub-word tokens: a text is tokenized whole, with the tokenizer's BOS
token prepended when it has one (never part of an item), and a token belongs to
every word its character span overlaps (offsets from a fast tokenizer). A word's
feature is the hidden state of its first token (``word_pooling: first``, the
default and the usual convention of probing work) or the mean over all its tokens
(``mean``). In a causal model the first sub-word has not yet seen the rest of its
word and the later ones have, so ``mean`` also reflects the word's end. A word that
no token overlaps is left out of its split and counted (``n_train_without_token``,
``n_test_without_token`` in ``probe_results``, and a warning); a text longer than
the model's context is an error naming its file and line.

Item ids: ``item_id`` is the item's position in the test split (file order, after
``max_test``), the same in every checkpoint. ``max_train`` / ``max_test`` keep the
first N items of a split. Labels are strings; the probe's classes are the labels
of the train split (``n_classes``), and a test item whose label never occurs in
train counts as an error. ``majority_accuracy`` is the test accuracy of always
predicting the train split's most frequent label (ties: the first in sorted order).
The online code reads the train items in an order shuffled with ``seed`` (files
are often sorted by genre or source; a block of the code should not be).

Defaults: ``l2: 10`` (sklearn's C = 0.1, on standardised features): a probe fitted
on the online code's first blocks of a few items stays near the uniform code
instead of betting on them, and the fits converge in ~50 iterations; the online
code's block ends are Voita & Titov's 0.1 %, 0.2 %, 0.4 % … 25 %, 50 %, 100 % of
the train split (``mdl_fractions``; ends that round to the same item count merge,
so a small split gets fewer blocks).

Speed: all tasks' texts (train and test, identical texts once) go through the model
in one batched pass per checkpoint, shortest first, and the features of every
layer are gathered from it; then per task, all layers' probes and all the online
code's block probes are fitted together (``probing.LogisticProbes``).

Hidden states that are not finite (NaN or inf) in any probed item raise
``Diverged`` (the checkpoint is recorded as diverged, without rows), naming the
layers and how many items.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from polypythias.extract import probing
from polypythias.extract.extractors import (
    Diverged,
    Extractor,
    ExtractorError,
    ExtractorOptions,
    read_text,
    register,
)
from polypythias.warehouse.schemas import PROBE_PREDICTIONS, PROBE_RESULTS

log = logging.getLogger(__name__)

_CONLLU_COLUMNS = ("upos", "xpos", "deprel", "lemma")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str = Field(description="Train split file (relative to the suite file).")
    test: str = Field(description="Test split file (relative to the suite file).")
    max_train: int | None = Field(None, ge=1, description="Keep only the first N train items.")
    max_test: int | None = Field(None, ge=1, description="Keep only the first N test items.")


class ConlluTask(_TaskOptions):
    format: Literal["conllu"]
    field: str = Field(description="Label: a column (upos, xpos, deprel, lemma) or a FEATS key (e.g. Number).")


class JsonlWordsTask(_TaskOptions):
    format: Literal["jsonl-words"]
    words: str = Field("words", description="Key of the list of words.")
    labels: str = Field("labels", description="Key of the list of labels (null: not an item).")


class JsonlTextTask(_TaskOptions):
    format: Literal["jsonl-text"]
    text: str = Field("text", description="Key of the text.")
    label: str = Field("label", description="Key of the label.")
    pool: Literal["mean", "last"] = Field("mean", description="Mean of the text's tokens, or the last.")


TaskOptions = Annotated[ConlluTask | JsonlWordsTask | JsonlTextTask, Field(discriminator="format")]


class ProbesOptions(ExtractorOptions):
    tasks: dict[str, TaskOptions] = Field(min_length=1, description="Probing tasks by name.")
    word_pooling: Literal["first", "mean"] = Field(
        "first", description="A word's feature: its first sub-word token's hidden state, or their mean."
    )
    batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    l2: float = Field(
        10.0,
        gt=0,
        description=(
            "L2 penalty of the probes: each minimises sum of cross-entropies + l2/2 * ||W||^2 "
            "over its items (sklearn's C = 1/l2; the intercept is penalised too)."
        ),
    )
    mdl_fractions: list[float] = Field(
        list(probing.VOITA_TITOV_FRACTIONS),
        min_length=1,
        description="Ends of the online code's blocks, as fractions of the train split (Voita & Titov's).",
    )
    seed: int = Field(0, description="Seed of the order in which the online code reads the train items.")

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict) -> dict:
        for name in tasks:
            if not _TASK_NAME.match(name):
                raise ValueError(f"task name {name!r} must be letters, digits, '_', '.' or '-'")
        return tasks

    @field_validator("mdl_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in fractions) or fractions != sorted(set(fractions)):
            raise ValueError(f"must increase strictly within (0, 1], got {fractions}")
        if fractions[-1] != 1:
            raise ValueError(f"must end with 1 (the whole train split), got {fractions}")
        return fractions


# -- reading tasks -------------------------------------------------------------------


@dataclass(slots=True)
class Split:
    """Labelled items of one split: texts, and items that are a word of a text
    (``item_word`` >= 0) or a whole text (-1)."""

    texts: list[str] = field(default_factory=list)
    #: Character spans of the words of each text; None for a sequence-level text.
    spans: list[list[tuple[int, int]] | None] = field(default_factory=list)
    #: "path:line" of each text and of each item, for error messages.
    text_sources: list[str] = field(default_factory=list)
    item_text: list[int] = field(default_factory=list)
    item_word: list[int] = field(default_factory=list)
    item_sources: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add_words(self, words: list[str], labels: list[str | None], source: str, word_sources: list[str]) -> None:
        """Words read as their text joined by single spaces."""
        spans, start = [], 0
        for word in words:
            spans.append((start, start + len(word)))
            start += len(word) + 1
        self.add_text_words(" ".join(words), spans, labels, source, word_sources)

    def add_text_words(
        self, text: str, spans: list[tuple[int, int]], labels: list[str | None], source: str, word_sources: list[str]
    ) -> None:
        """A text and its words' character spans in it (words of one multiword token
        may share one span)."""
        index = len(self.texts)
        self.texts.append(text)
        self.spans.append(spans)
        self.text_sources.append(source)
        for position, label in enumerate(labels):
            if label is not None:
                self.item_text.append(index)
                self.item_word.append(position)
                self.item_sources.append(word_sources[position])
                self.labels.append(label)

    def add_text(self, text: str, label: str, source: str) -> None:
        self.item_text.append(len(self.texts))
        self.item_word.append(-1)
        self.item_sources.append(source)
        self.labels.append(label)
        self.texts.append(text)
        self.spans.append(None)
        self.text_sources.append(source)

    def head(self, n: int | None) -> Split:
        """The first ``n`` items (all if None), with only the texts they need."""
        if n is None or n >= len(self.labels):
            return self
        keep = sorted(set(self.item_text[:n]))
        renumber = {old: new for new, old in enumerate(keep)}
        return Split(
            texts=[self.texts[i] for i in keep],
            spans=[self.spans[i] for i in keep],
            text_sources=[self.text_sources[i] for i in keep],
            item_text=[renumber[i] for i in self.item_text[:n]],
            item_word=self.item_word[:n],
            item_sources=self.item_sources[:n],
            labels=self.labels[:n],
        )


def read_split(path: Path, options: ConlluTask | JsonlWordsTask | JsonlTextTask, limit: int | None = None) -> Split:
    """The labelled items of one split file; with ``limit``, only the first ones
    (reading stops there)."""
    if not path.is_file():
        raise ExtractorError(f"{path}: probing data not found")
    if isinstance(options, ConlluTask):
        split = read_conllu(path, options.field, limit)
    elif isinstance(options, JsonlWordsTask):
        split = read_jsonl_words(path, options.words, options.labels, limit)
    else:
        split = read_jsonl_text(path, options.text, options.label, limit)
    if not split.labels:
        what = f"a {options.field!r} label" if isinstance(options, ConlluTask) else "a label"
        raise ExtractorError(f"{path}: no item has {what}")
    return split.head(limit)


def read_conllu(path: Path, field_name: str, limit: int | None = None) -> Split:
    """Words and labels of a CoNLL-U file (see the module docstring)."""
    import conllu
    from conllu.exceptions import ParseException

    split = Split()
    block: list[tuple[int, str]] = []
    lines = read_text(path).splitlines()
    for number, line in enumerate([*lines, ""], start=1):
        if limit is not None and len(split.labels) >= limit:
            break
        if line.strip():
            block.append((number, line))
            continue
        if not block:
            continue
        words = [(n, text) for n, text in block if not text.lstrip().startswith("#")]
        for n, text in words:
            fields = text.rstrip("\n").split("\t")
            if len(fields) != 10:
                raise ExtractorError(
                    f"{path}:{n}: a CoNLL-U word line has 10 tab-separated fields, this one {len(fields)}"
                )
        try:
            tokens = conllu.parse_token_and_metadata("\n".join(text for _, text in block))
        except ParseException:
            for n, text in words:  # find the line the parser refuses
                try:
                    conllu.parse_token_and_metadata(text)
                except ParseException as error:
                    raise ExtractorError(f"{path}:{n}: not CoNLL-U: {error}") from None
            raise ExtractorError(f"{path}:{block[0][0]}: not CoNLL-U") from None
        labels, sources = [], []
        for (n, _), token in zip(words, tokens, strict=True):
            if isinstance(token["id"], int):  # not a multiword token (1-2) or an empty node (1.1)
                labels.append(_conllu_label(token, field_name))
                sources.append(f"{path}:{n}")
        if labels:
            text, spans = sentence_text(tokens)
            split.add_text_words(text, spans, labels, f"{path}:{block[0][0]}", sources)
        block = []
    return split


def sentence_text(tokens) -> tuple[str, list[tuple[int, int]]]:
    """The text a CoNLL-U sentence is read as, and the character span of each of its
    words (integer ids, in order).

    The text is the sentence's ``# text`` when its surface tokens (multiword tokens
    and the words outside them; empty nodes have none) spell it out in order, else
    the surface tokens joined by a space except after ``SpaceAfter=No``. A word of a
    multiword token gets its part of the token's span when the words' forms
    concatenate to the token (``don't`` = ``do`` + ``n't``), else the whole span.
    """
    surface: list[tuple[str, list]] = []  # (form, the words it covers)
    covered: set[int] = set()
    by_id = {token["id"]: token for token in tokens if isinstance(token["id"], int)}
    for token in tokens:
        ident = token["id"]
        if isinstance(ident, tuple) and ident[1] == "-":
            members = [by_id[i] for i in range(ident[0], ident[2] + 1) if i in by_id]
            covered.update(range(ident[0], ident[2] + 1))
            surface.append((token, members))
        elif isinstance(ident, int) and ident not in covered:
            surface.append((token, [token]))
    text = tokens.metadata.get("text") if hasattr(tokens, "metadata") else None
    starts = _align(text, [token["form"] for token, _ in surface]) if text else None
    if starts is None:
        pieces = []
        for token, _ in surface:
            no_space = (token["misc"] or {}).get("SpaceAfter") == "No"
            pieces.append(token["form"] + ("" if no_space else " "))
        text = "".join(pieces).rstrip(" ")
        starts = _align(text, [token["form"] for token, _ in surface])
    spans: dict[int, tuple[int, int]] = {}
    for (token, members), start in zip(surface, starts, strict=True):
        end = start + len(token["form"])
        if "".join(word["form"] for word in members) == token["form"]:
            for word in members:
                spans[word["id"]] = (start, start + len(word["form"]))
                start += len(word["form"])
        else:
            for word in members:
                spans[word["id"]] = (start, end)
    return text, [spans[token["id"]] for token in tokens if isinstance(token["id"], int)]


def _align(text: str, forms: list[str]) -> list[int] | None:
    """Where each form starts in `text`, read left to right with only whitespace
    between them; None if the forms do not spell the text out."""
    starts, cursor = [], 0
    for form in forms:
        while cursor < len(text) and text[cursor].isspace():
            cursor += 1
        if not text.startswith(form, cursor):
            return None
        starts.append(cursor)
        cursor += len(form)
    return starts if not text[cursor:].strip() else None


def _conllu_label(token, field_name: str) -> str | None:
    if field_name in _CONLLU_COLUMNS:
        value = token[field_name]
    else:
        value = (token["feats"] or {}).get(field_name)
    return None if value in (None, "_", "") else str(value)


def _json_lines(path: Path):
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ExtractorError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(record, dict):
            raise ExtractorError(f"{path}:{number}: not a JSON object")
        yield number, record


def _label(value, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ExtractorError(f"{where}: {key!r} must be a string or an integer, got {value!r}")
    return str(value)


def read_jsonl_words(path: Path, words_key: str, labels_key: str, limit: int | None = None) -> Split:
    split = Split()
    for number, record in _json_lines(path):
        if limit is not None and len(split.labels) >= limit:
            break
        where = f"{path}:{number}"
        for key in (words_key, labels_key):
            if key not in record:
                raise ExtractorError(f"{where}: no {key!r} key")
        words, labels = record[words_key], record[labels_key]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise ExtractorError(f"{where}: {words_key!r} must be a list of non-empty strings")
        if not isinstance(labels, list) or len(labels) != len(words):
            raise ExtractorError(f"{where}: {labels_key!r} must be a list as long as {words_key!r}")
        labels = [None if label is None else _label(label, where, labels_key) for label in labels]
        split.add_words(words, labels, where, [where] * len(words))
    return split


def read_jsonl_text(path: Path, text_key: str, label_key: str, limit: int | None = None) -> Split:
    split = Split()
    for number, record in _json_lines(path):
        if limit is not None and len(split.labels) >= limit:
            break
        where = f"{path}:{number}"
        for key in (text_key, label_key):
            if key not in record:
                raise ExtractorError(f"{where}: no {key!r} key")
        text = record[text_key]
        if not isinstance(text, str) or not text.strip():
            raise ExtractorError(f"{where}: {text_key!r} must be a non-empty string")
        split.add_text(text, _label(record[label_key], where, label_key), where)
    return split


# -- words to tokens -----------------------------------------------------------------


def word_tokens(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    """For each word's character span (sorted left to right, not overlapping), the
    indices of the tokens whose character span overlaps it, in order. Zero-width
    tokens (special tokens) belong to no word."""
    result: list[list[int]] = [[] for _ in spans]
    first = 0  # words and tokens both run left to right
    for index, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        while first < len(spans) and spans[first][1] <= start:
            first += 1
        word = first
        while word < len(spans) and spans[word][0] < end:
            result[word].append(index)
            word += 1
    return result


@dataclass(slots=True)
class Task:
    """One probing task, read and encoded as labels."""

    name: str
    level: str  # token | sequence
    pool: str  # first | mean (words); mean | last (texts)
    train: Split
    test: Split
    classes: list[str]  # the train labels, sorted: class index = position
    labels: list[str]  # classes, then test labels never seen in train
    y_train: np.ndarray
    y_test: np.ndarray
    majority: int  # class index of the train split's most frequent label


def load_task(name: str, options, suite, word_pooling: str) -> Task:
    train = read_split(suite.resolve_path(options.train), options, options.max_train)
    test = read_split(suite.resolve_path(options.test), options, options.max_test)
    counts = Counter(train.labels)
    classes = sorted(counts)
    if len(classes) < 2:
        raise ExtractorError(f"probes.tasks.{name}: the train split has one label ({classes[0]!r}); a probe needs two")
    labels = classes + sorted(set(test.labels) - set(classes))
    index = {label: i for i, label in enumerate(labels)}
    majority = max(classes, key=lambda label: (counts[label], -classes.index(label)))
    y_test = np.array([index[label] for label in test.labels], dtype=np.int64)
    is_text = isinstance(options, JsonlTextTask)
    return Task(
        name=name,
        level="sequence" if is_text else "token",
        pool=options.pool if is_text else word_pooling,
        train=train,
        test=test,
        classes=classes,
        labels=labels,
        y_train=np.array([index[label] for label in train.labels], dtype=np.int64),
        y_test=y_test,
        majority=index[majority],
    )


@dataclass(slots=True)
class Batch:
    """One forward pass: token ids, and where each feature row's tokens are in its output."""

    input_ids: object  # torch.Tensor (texts, length)
    attention_mask: object
    rows: object  # (n,) the feature rows this batch fills
    #: (n, most tokens of a row) indices into the flattened (texts x length)
    #: output; padded with texts x length, which points at an appended zero row.
    positions: object
    counts: object  # (n,) tokens pooled into each row


@dataclass(slots=True)
class Plan:
    """All tasks' texts encoded and batched for one tokenizer.

    A feature row is one (text, pooled token positions): items that pool the same
    tokens of the same text — the same word in two tasks on one treebank — share it.
    """

    batches: list[Batch]
    n_rows: int
    #: (task, "train" | "test") → the feature row of each item that has a token, in item order.
    rows: dict[tuple[str, str], object]
    #: (task, "train" | "test") → which items have a token (a boolean mask over the split).
    kept: dict[tuple[str, str], np.ndarray]
    longest: int  # tokens of the longest text, BOS included
    longest_source: str


# -- the extractor -------------------------------------------------------------------


@register
class Probes(Extractor):
    name = "probes"
    Options = ProbesOptions
    outputs = (PROBE_RESULTS, PROBE_PREDICTIONS)
    #: 2: CoNLL-U read as its original text; words without a token left out and counted.
    version = 2

    def __init__(self, options: ProbesOptions, suite) -> None:
        super().__init__(options, suite)
        self.tasks = [load_task(name, spec, suite, options.word_pooling) for name, spec in options.tasks.items()]
        self._plan: tuple[object, Plan] | None = None

    def input_files(self) -> dict[str, str | None]:
        return {
            f"tasks.{name}.{split}": getattr(spec, split)
            for name, spec in self.options.tasks.items()
            for split in ("train", "test")
        }

    def hashed_options(self) -> dict:
        return self.options.model_dump(exclude={"steps": True, "tasks": {"__all__": {"train", "test"}}}, mode="json")

    # -- encoding ------------------------------------------------------------------

    def plan(self, tokenizer) -> Plan:
        """The batches for ``tokenizer`` (built once per tokenizer)."""
        key = (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), tokenizer.bos_token_id)
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, self._build_plan(tokenizer))
        return self._plan[1]

    def _build_plan(self, tokenizer) -> Plan:
        import torch

        if not getattr(tokenizer, "is_fast", False):
            raise ExtractorError("probes: the tokenizer must be a fast one (it gives character offsets)")
        # Every item of every task and split, in order, with its text (identical
        # texts go through the model once), word span (None: the whole text),
        # pooling and source.
        texts: dict[str, int] = {}
        text_sources: list[str] = []
        items: list[tuple[int, tuple[int, int] | None, str, str]] = []
        splits: list[tuple[str, str, int]] = []  # (task, split, number of items)
        for task in self.tasks:
            for split_name, split in (("train", task.train), ("test", task.test)):
                local = []
                for text, source in zip(split.texts, split.text_sources, strict=True):
                    if text not in texts:
                        texts[text] = len(texts)
                        text_sources.append(source)
                    local.append(texts[text])
                for t, w, source in zip(split.item_text, split.item_word, split.item_sources, strict=True):
                    items.append((local[t], None if w < 0 else split.spans[t][w], task.pool, source))
                splits.append((task.name, split_name, len(split.labels)))

        text_list = list(texts)
        encoded = tokenizer(text_list, add_special_tokens=False, return_offsets_mapping=True)
        bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
        ids = [bos + list(sequence) for sequence in encoded["input_ids"]]
        offsets = [[tuple(o) for o in sequence] for sequence in encoded["offset_mapping"]]
        positions = _item_positions(items, text_list, offsets, len(bos))

        # Feature rows: one per distinct (text, positions); a word without a token has none.
        row_index: dict[tuple[int, tuple[int, ...]], int] = {}
        item_rows = [
            row_index.setdefault((text, tuple(p)), len(row_index)) if p else -1
            for (text, *_), p in zip(items, positions, strict=True)
        ]
        rows_by_text: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for (text, tokens), row in row_index.items():
            rows_by_text.setdefault(text, []).append((row, tokens))
        rows, kept, start = {}, {}, 0
        for task_name, split_name, n in splits:
            split_rows = np.array(item_rows[start : start + n], dtype=np.int64)
            kept[(task_name, split_name)] = split_rows >= 0
            rows[(task_name, split_name)] = torch.from_numpy(split_rows[split_rows >= 0])
            start += n
        for task_name, _, _ in splits[::2]:
            left_out = {split: int((~kept[(task_name, split)]).sum()) for split in ("train", "test")}
            if any(left_out.values()):
                log.warning(
                    "probes: task %s: %d of %d train and %d of %d test words get no token "
                    "from the tokenizer; they are left out",
                    task_name,
                    left_out["train"],
                    len(kept[(task_name, "train")]),
                    left_out["test"],
                    len(kept[(task_name, "test")]),
                )

        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batches = []
        for first in range(0, len(order), self.options.batch_size):
            chunk = order[first : first + self.options.batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            batch_rows: list[tuple[int, list[int]]] = []
            for r, text in enumerate(chunk):
                input_ids[r, : len(ids[text])] = torch.tensor(ids[text])
                attention[r, : len(ids[text])] = 1
                for row, tokens in rows_by_text.get(text, []):
                    batch_rows.append((row, [r * width + p for p in tokens]))
            most = max((len(flat) for _, flat in batch_rows), default=1)
            index = torch.full((len(batch_rows), most), len(chunk) * width, dtype=torch.long)
            for r, (_, flat) in enumerate(batch_rows):
                index[r, : len(flat)] = torch.tensor(flat)
            batches.append(
                Batch(
                    input_ids=input_ids,
                    attention_mask=attention,
                    rows=torch.tensor([row for row, _ in batch_rows], dtype=torch.long),
                    positions=index,
                    counts=torch.tensor([len(flat) for _, flat in batch_rows], dtype=torch.float32),
                )
            )
        longest = max(range(len(ids)), key=lambda i: len(ids[i]))
        return Plan(batches, len(row_index), rows, kept, len(ids[longest]), text_sources[longest])

    # -- per checkpoint --------------------------------------------------------------

    def features(self, model, tokenizer, device):
        """Hidden states of every layer for every feature row: (layers + 1, rows, hidden)."""
        import torch

        plan = self.plan(tokenizer)
        context = getattr(model.config, "max_position_embeddings", None)
        if context is not None and plan.longest > context:
            raise ExtractorError(
                f"{plan.longest_source}: {plan.longest} tokens, more than the model's context ({context})"
            )
        base = getattr(model, "base_model", model)
        n_layers = model.config.num_hidden_layers + 1
        features = None
        with torch.inference_mode():
            for batch in plan.batches:
                output = base(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                    output_hidden_states=True,
                )
                hidden = output.hidden_states
                if len(hidden) != n_layers:
                    raise ExtractorError(f"probes: the model gave {len(hidden)} hidden states, expected {n_layers}")
                if features is None:
                    features = torch.zeros(
                        n_layers, plan.n_rows, hidden[0].shape[-1], dtype=torch.float32, device=device
                    )
                positions = batch.positions.to(device)
                counts = batch.counts.to(device)[:, None]
                rows = batch.rows.to(device)
                for layer, states in enumerate(hidden):
                    flat = states.flatten(0, 1).float()
                    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[-1])])
                    features[layer, rows] = flat[positions].sum(1) / counts
            # A NaN or inf in any pooled hidden state reaches its feature row: one check.
            if features is not None and not bool(torch.isfinite(features).all()):
                bad = ~torch.isfinite(features).all(-1)  # (layers, rows)
                layers = bad.any(-1).nonzero().flatten().tolist()
                raise Diverged(
                    f"probes: hidden states not finite (NaN or inf) in {int(bad.any(0).sum())} of "
                    f"{plan.n_rows} probed items, at layer(s) {', '.join(map(str, layers))}"
                )
        return features

    def run(self, model, tokenizer, checkpoint, device) -> dict[str, pa.Table]:
        import torch

        features = self.features(model, tokenizer, device)
        plan = self.plan(tokenizer)
        results, predictions = [], []
        for task in self.tasks:
            kept = Kept(plan.kept[(task.name, "train")], plan.kept[(task.name, "test")])
            for split, mask in (("train", kept.train), ("test", kept.test)):
                if not mask.any():
                    raise ExtractorError(f"probes: task {task.name}: no {split} word gets a token from the tokenizer")
            x_train = features[:, plan.rows[(task.name, "train")].to(device)]
            x_test = features[:, plan.rows[(task.name, "test")].to(device)]
            scores = self.probe(task, x_train, x_test, kept)
            results.append(_results_table(task, scores, kept))
            predictions.append(_predictions_table(task, scores["predicted"], kept))
        del features
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {
            PROBE_RESULTS.name: pa.concat_tables(results),
            PROBE_PREDICTIONS.name: pa.concat_tables(predictions),
        }

    def probe(self, task: Task, x_train, x_test, kept: Kept) -> dict:
        """Fit and score one task's probes on all layers at once, on the items that
        have a token (``kept``)."""
        import torch

        device = x_train.device
        n_classes = len(task.classes)
        y_train, y_test = task.y_train[kept.train], task.y_test[kept.test]
        order = np.random.default_rng(self.options.seed).permutation(len(y_train))
        order = torch.from_numpy(order).to(device)
        x_train, x_test = probing.standardise(x_train, x_test)
        x_train = probing.with_intercept(x_train).float()[:, order]
        x_test = probing.with_intercept(x_test).float()
        y_train = torch.from_numpy(y_train).to(device)[order]
        y_test = torch.from_numpy(y_test).to(device)
        ends = probing.block_ends(len(y_train), self.options.mdl_fractions)
        fitter = probing.LogisticProbes(self.options.l2, dtype=torch.float32)
        codelength, predictor = probing.online_codelength(x_train, y_train, n_classes, ends, fitter)
        if not fitter.converged:
            log.warning("probes: task %s: some probes did not converge in %d iterations", task.name, fitter.iterations)
        predicted = predictor(len(ends) - 1, x_test).argmax(-1)  # (layers, test items)
        return {
            "codelength": codelength.cpu().numpy(),
            "accuracy": probing.accuracy(y_test, predicted).cpu().numpy(),
            "macro_f1": probing.macro_f1(y_test, predicted, len(task.labels)).cpu().numpy(),
            "predicted": predicted.cpu().numpy(),
        }


def _item_positions(
    items: list[tuple[int, tuple[int, int] | None, str, str]],
    texts: list[str],
    offsets: list[list[tuple[int, int]]],
    shift: int,
) -> list[list[int]]:
    """The token positions (in the model's input, BOS included: ``shift``) each item
    pools: a word's first or all overlapping tokens (none when no token overlaps it),
    a text's last or all tokens."""
    positions: list[list[int]] = [[] for _ in items]
    by_text: dict[int, list[int]] = {}
    for item, (text, *_) in enumerate(items):
        by_text.setdefault(text, []).append(item)
    for text, members in by_text.items():
        # Items of several tasks and splits may share a text: align its distinct
        # word spans once, left to right.
        spans = sorted({items[i][1] for i in members if items[i][1] is not None})
        tokens_of = dict(zip(spans, word_tokens(offsets[text], spans), strict=True))
        for item in members:
            _, span, pool, source = items[item]
            if span is None:
                continue
            tokens = tokens_of[span]  # none: the word is left out (and counted)
            positions[item] = [shift + t for t in (tokens[:1] if pool == "first" else tokens)]
        n_tokens = len(offsets[text])
        for item in members:
            _, span, pool, source = items[item]
            if span is not None:
                continue
            if n_tokens == 0:
                raise ExtractorError(f"{source}: the text gets no token")
            every = list(range(shift, shift + n_tokens))
            positions[item] = every[-1:] if pool == "last" else every
    return positions


def _schema(dataset) -> pa.Schema:
    return dataset.schema.remove(dataset.schema.get_field_index("extraction_id"))


@dataclass(frozen=True, slots=True)
class Kept:
    """Which items of a task's train and test splits have a token (boolean masks)."""

    train: np.ndarray
    test: np.ndarray


def _results_table(task: Task, scores: dict, kept: Kept) -> pa.Table:
    layers = len(scores["codelength"])
    n_train, n_test, n_classes = int(kept.train.sum()), int(kept.test.sum()), len(task.classes)
    majority_accuracy = float(np.mean(task.y_test[kept.test] == task.majority)) if n_test else 0.0
    metrics = ("accuracy", "macro_f1")
    rows = len(metrics) * layers
    return pa.table(
        {
            "task": [task.name] * rows,
            "level": [task.level] * rows,
            "layer": np.repeat(np.arange(layers, dtype=np.int32), len(metrics)),
            "metric": list(metrics) * layers,
            "value": np.stack([scores[m] for m in metrics], axis=1).reshape(-1).astype(np.float64),
            "codelength": np.repeat(scores["codelength"].astype(np.float64), len(metrics)),
            "uniform_codelength": [n_train * float(np.log2(n_classes))] * rows,
            "majority_accuracy": [majority_accuracy] * rows,
            "n_classes": pa.array([n_classes] * rows, pa.int32()),
            "n_train": pa.array([n_train] * rows, pa.int64()),
            "n_test": pa.array([n_test] * rows, pa.int64()),
            "n_train_without_token": pa.array([len(kept.train) - n_train] * rows, pa.int64()),
            "n_test_without_token": pa.array([len(kept.test) - n_test] * rows, pa.int64()),
        },
        schema=_schema(PROBE_RESULTS),
    )


def _predictions_table(task: Task, predicted: np.ndarray, kept: Kept) -> pa.Table:
    layers, n_test = predicted.shape
    labels = np.array(task.labels, dtype=object)
    return pa.table(
        {
            "task": [task.name] * (layers * n_test),
            "layer": np.repeat(np.arange(layers, dtype=np.int32), n_test),
            # the item's position in the whole test split, left-out words included
            "item_id": np.tile(np.flatnonzero(kept.test).astype(np.int64), layers),
            "gold": np.tile(labels[task.y_test[kept.test]], layers),
            "predicted": labels[predicted.reshape(-1)],
        },
        schema=_schema(PROBE_PREDICTIONS),
    )
