"""The probes extractor and the micro probing tasks, against independent
computations: hand-written CoNLL-U, a sub-word tokenizer's own word ids, an
unbatched forward pass, sklearn, and the grammar's lexicon."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from conftest import tiny_model
from polypythias.extract import probing
from polypythias.extract.extractors import ExtractorError, get_extractor
from polypythias.extract.extractors.probes import read_conllu, word_tokens
from polypythias.extract.micro import probe_tasks
from polypythias.extract.micro.language import _LEXICON, Grammar
from polypythias.extract.micro.tokenizer import build_tokenizer
from polypythias.extract.runner import run_extraction
from polypythias.extract.suite import CheckpointId, Suite, SuiteError, load_suite
from polypythias.warehouse.lake import Lake
from polypythias.warehouse.schemas import MANIFEST, PROBE_PREDICTIONS, PROBE_RESULTS

CHECKPOINT = CheckpointId("tiny", "tiny", 0, 0)
CPU = torch.device("cpu")
# Independent of probe_tasks.py: the grammar's words with their features.
LEXICON = {w.text: w for w in _LEXICON}
UD = {"REFL": "PRON", "REL": "PRON"}

CONLLU = """\
# sent_id = 1
# text = The cat's toy isn't here.
1\tThe\tthe\tDET\tDT\tDefinite=Def|PronType=Art\t3\tdet\t_\t_
2-3\tcat's\t_\t_\t_\t_\t_\t_\t_\t_
2\tcat\tcat\tNOUN\tNN\tNumber=Sing\t4\tnmod:poss\t_\t_
3\t's\t's\tPART\tPOS\t_\t2\tcase\t_\t_
4\ttoy\ttoy\tNOUN\tNN\tNumber=Sing\t7\tnsubj\t_\t_
5-6\tisn't\t_\t_\t_\t_\t_\t_\t_\t_
5\tis\tbe\tAUX\tVBZ\tMood=Ind|Number=Sing\t7\tcop\t_\t_
6\tn't\tnot\tPART\tRB\t_\t7\tadvmod\t_\t_
6.1\tthere\t_\t_\t_\t_\t_\t_\t_\t_
7\there\there\tADV\tRB\t_\t0\troot\t_\tSpaceAfter=No
8\t.\t.\t_\tSENT\t_\t7\tpunct\t_\t_

# sent_id = 2
1\tDogs\tdog\tNOUN\tNNS\tNumber=Plur\t2\tnsubj\t_\t_
2\tbark\tbark\tVERB\tVBP\t_\t0\troot\t_\tSpaceAfter=No
3-4\tdon't\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No
3\tdo\tdo\tAUX\tVBP\t_\t2\taux\t_\t_
4\tn't\tnot\tPART\tRB\t_\t2\tadvmod\t_\t_
5\t!\t!\tPUNCT\t.\t_\t2\tpunct\t_\t_

# sent_id = 3
# text = Au revoir
1-2\tAu\t_\t_\t_\t_\t_\t_\t_\t_
1\tà\tà\tADP\t_\t_\t3\tcase\t_\t_
2\tle\tle\tDET\t_\t_\t3\tdet\t_\t_
3\trevoir\trevoir\tNOUN\t_\t_\t0\troot\t_\t_
"""


def make_suite(base: Path, tasks: dict, **options) -> Suite:
    suite = Suite.model_validate(
        {
            "name": "tiny",
            "sizes": ["tiny"],
            "seeds": [0],
            "steps": {"all": [0]},
            "checkpoints": {"local": "ck/{size}/seed{seed}/step{step}"},
            "extractors": {"probes": {"tasks": tasks} | options},
        }
    )
    suite._base_dir = base
    return suite


def extractor(suite: Suite):
    return get_extractor("probes")(suite.extractor_options("probes"), suite)


@pytest.fixture(scope="module")
def micro_tokenizer():
    return build_tokenizer(Grammar().vocabulary(), model_max_length=64)


@pytest.fixture(scope="module")
def micro_probe_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "probe"
    return probe_tasks.write_probe_tasks(folder, pos_words=(240, 120), antecedent=(90, 40))


MICRO_TASKS = {
    "pos": {"format": "conllu", "field": "upos", "train": "probe/pos_train.conllu", "test": "probe/pos_test.conllu"},
    "antecedent": {
        "format": "jsonl-text",
        "pool": "last",
        "train": "probe/antecedent_train.jsonl",
        "test": "probe/antecedent_test.jsonl",
    },
}


# -- reading -----------------------------------------------------------------------


def test_conllu_sentences_read_as_their_original_text(tmp_path):
    path = tmp_path / "a.conllu"
    path.write_text(CONLLU)
    split = read_conllu(path, "upos")
    # "# text" where the sentence has one; else the tokens joined respecting SpaceAfter=No.
    assert split.texts == ["The cat's toy isn't here.", "Dogs barkdon't!", "Au revoir"]
    # "." has UPOS "_": in the text, not an item; the empty node 6.1 is neither.
    assert split.labels == [
        "DET",
        "NOUN",
        "PART",
        "NOUN",
        "AUX",
        "PART",
        "ADV",
        "NOUN",
        "VERB",
        "AUX",
        "PART",
        "PUNCT",
        "ADP",
        "DET",
        "NOUN",
    ]
    assert split.item_word == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 0, 1, 2]
    assert split.item_sources[2] == f"{path}:6" and split.item_sources[7] == f"{path}:16"
    words = [split.texts[t][slice(*split.spans[t][w])] for t, w in zip(split.item_text, split.item_word)]
    # Words of a multiword token are their part of it; where the forms do not spell
    # the token ("Au" = "à" + "le"), each of them is the whole token.
    assert words == [
        "The",
        "cat",
        "'s",
        "toy",
        "is",
        "n't",
        "here",
        "Dogs",
        "bark",
        "do",
        "n't",
        "!",
        "Au",
        "Au",
        "revoir",
    ]

    number = read_conllu(path, "Number")  # a FEATS key: words without it are no items
    assert number.labels == ["Sing", "Sing", "Sing", "Plur"]
    assert [number.item_word[i] for i in range(4)] == [1, 3, 4, 0]
    assert read_conllu(path, "deprel").labels[:3] == ["det", "nmod:poss", "case"]
    assert read_conllu(path, "xpos").labels[-2:] == ["RB", "."]


def _task(tmp_path, format_, train_text, **spec):
    (tmp_path / "train").write_text(train_text)
    (tmp_path / "test").write_text(train_text)
    return make_suite(tmp_path, {"t": {"format": format_, "train": "train", "test": "test"} | spec})


@pytest.mark.parametrize(
    ("format_", "text", "spec", "message"),
    [
        ("conllu", "1\tThe\tthe\tDET\n", {"field": "upos"}, r"train:1: a CoNLL-U word line has 10"),
        (
            "conllu",
            "# x\n1\ta\t_\tX\t_\t_\t_\t_\t_\t_\nx\ta\t_\tX\t_\t_\t_\t_\t_\t_\n",
            {"field": "upos"},
            r"train:3: not CoNLL-U",
        ),
        ("conllu", '{"text": "a", "label": "b"}\n', {"field": "upos"}, r"train:1: a CoNLL-U word line"),
        ("conllu", "1\ta\t_\t_\t_\t_\t_\t_\t_\t_\n", {"field": "upos"}, r"train: no item has a 'upos' label"),
        ("jsonl-text", '{"text": "a b", "label": "x"}\n\n{"text": "a"}\n', {}, r"train:3: no 'label' key"),
        ("jsonl-text", '{"text": "a b", "label": ["x"]}\n', {}, r"train:1: 'label' must be a string"),
        ("jsonl-text", "not json\n", {}, r"train:1: not JSON"),
        ("jsonl-words", '{"words": ["a", "b"], "labels": ["x"]}\n', {}, r"train:1: 'labels' must be a list as long"),
        ("jsonl-words", '{"words": ["a"], "tags": ["x"]}\n', {}, r"train:1: no 'labels' key"),
    ],
)
def test_bad_input_names_the_file_and_line(tmp_path, format_, text, spec, message):
    with pytest.raises(ExtractorError, match=message):
        extractor(_task(tmp_path, format_, text, **spec))


def test_missing_file_unknown_format_and_bad_options(tmp_path):
    suite = make_suite(tmp_path, {"t": {"format": "jsonl-text", "train": "nope.jsonl", "test": "nope.jsonl"}})
    with pytest.raises(ExtractorError, match=r"nope.jsonl: probing data not found"):
        extractor(suite)
    file = tmp_path / "suite.yaml"
    file.write_text(
        "name: s\nsizes: [a]\nseeds: [0]\nsteps: {all: [0]}\ncheckpoints: {local: '{size}'}\n"
        "extractors:\n  probes:\n    tasks:\n      t: {format: xml, train: a, test: b}\n"
    )
    with pytest.raises(
        SuiteError, match=r"suite.yaml: .*extractors.probes: tasks.t: .*'xml' found using 'format'.*'conllu'"
    ):
        load_suite(file)
    for bad, message in [
        ({"mdl_fractions": [0.5, 0.25, 1.0]}, "increase"),
        ({"mdl_fractions": [0.1, 0.5]}, "end with 1"),
        ({"l2": 0}, "l2"),
        ({"tasks": {"a b": {"format": "jsonl-text", "train": "x", "test": "y"}}}, "task name"),
        ({"tasks": {"t": {"format": "conllu", "train": "x", "test": "y"}}}, "field"),
        ({"tasks": {"t": {"format": "jsonl-text", "train": "x", "test": "y", "pool": "max"}}}, "pool"),
        ({"tasks": {"t": {"format": "jsonl-text", "train": "x", "test": "y", "colour": 1}}}, "colour"),
    ]:
        options = {"tasks": {"t": {"format": "jsonl-text", "train": "x", "test": "y"}}} | bad
        with pytest.raises(ValueError, match=message):
            make_suite(tmp_path, **options)


def test_a_train_split_with_one_label_is_refused(tmp_path):
    suite = _task(tmp_path, "jsonl-text", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n')
    with pytest.raises(ExtractorError, match=r"probes.tasks.t: the train split has one label \('x'\)"):
        extractor(suite)


def test_caps_keep_the_first_items(tmp_path):
    lines = "".join(json.dumps({"text": f"w{i}", "label": str(i % 3)}) + "\n" for i in range(10))
    suite = _task(tmp_path, "jsonl-text", lines, max_train=4, max_test=2)
    (task,) = extractor(suite).tasks
    assert task.train.texts == ["w0", "w1", "w2", "w3"] and task.test.labels == ["0", "1"]
    assert task.classes == ["0", "1", "2"]
    # Majority of the train split (0 twice; ties would go to the first label).
    assert task.classes[task.majority] == "0" and task.test.labels.count("0") / len(task.test.labels) == 0.5


# -- words and sub-word tokens ---------------------------------------------------------


SENTENCES = [
    "the unbelievably tall giraffes wandered slowly",
    "don't underestimate giraffes",
    "tall trees and taller giraffes",
]


@pytest.fixture(scope="module")
def wordpiece() -> PreTrainedTokenizerFast:
    """A real sub-word tokenizer, trained here on three sentences: a small vocabulary
    splits the long words into several pieces."""
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(
        SENTENCES, trainers.WordPieceTrainer(vocab_size=70, special_tokens=["[UNK]", "[PAD]", "[BOS]"])
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]")


class PositionModel:
    """Stands in for a model: the hidden state at (row, column) of every layer is
    (column, token id, layer), so a pooled feature shows which tokens it pooled."""

    config = SimpleNamespace(num_hidden_layers=2, max_position_embeddings=64)

    def __call__(self, input_ids, attention_mask, output_hidden_states):
        rows, width = input_ids.shape
        column = torch.arange(width).expand(rows, width).float()
        states = tuple(
            torch.stack([column, input_ids.float(), torch.full_like(column, layer)], dim=-1) for layer in range(3)
        )
        return SimpleNamespace(hidden_states=states)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_words_pool_their_own_sub_word_tokens(tmp_path, wordpiece, pooling):
    lines = [{"words": s.split(), "labels": [str(len(w) % 2) for w in s.split()]} for s in SENTENCES]
    (tmp_path / "w.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    suite = make_suite(
        tmp_path,
        {"w": {"format": "jsonl-words", "train": "w.jsonl", "test": "w.jsonl"}},
        word_pooling=pooling,
        batch_size=2,
    )
    probes = extractor(suite)
    features = probes.features(PositionModel(), wordpiece, CPU)
    pooled = features[:, probes.plan(wordpiece).rows[("w", "test")]]

    expected = []
    for line in lines:
        # The tokenizer's own word ids, with the BOS token in front.
        encoding = wordpiece(line["words"], is_split_into_words=True, add_special_tokens=False)
        ids = [wordpiece.bos_token_id, *encoding["input_ids"]]
        word_ids = [None, *encoding.word_ids()]
        for word in range(len(line["words"])):
            columns = [c for c, w in enumerate(word_ids) if w == word]
            assert columns, line
            chosen = columns[:1] if pooling == "first" else columns
            expected.append([np.mean(chosen), np.mean([ids[c] for c in chosen])])
    assert any(
        len([w for w in wordpiece(s.split(), is_split_into_words=True).word_ids() if w == 1]) > 2 for s in SENTENCES[:1]
    )  # "unbelievably" is really split up
    np.testing.assert_allclose(pooled[0, :, :2].numpy(), np.array(expected), rtol=1e-6)
    assert pooled[:, :, 2].tolist() == [[layer] * len(expected) for layer in range(3)]


@pytest.fixture(scope="module")
def byte_level() -> PreTrainedTokenizerFast:
    """A byte-level BPE as GPT-NeoX's: a token carries the space before it ("Ġu"),
    and its offsets include that space (trim_offsets off)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.train_from_iterator(
        SENTENCES,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>", "<|padding|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", pad_token="<|padding|>")


def test_byte_level_words_pool_the_tokens_that_cover_them(tmp_path, byte_level):
    words = SENTENCES[1].split()  # "don't underestimate giraffes"
    (tmp_path / "w.jsonl").write_text(json.dumps({"words": words, "labels": ["a", "b", "a"]}) + "\n")
    suite = make_suite(
        tmp_path, {"w": {"format": "jsonl-words", "train": "w.jsonl", "test": "w.jsonl"}}, word_pooling="mean"
    )
    probes = extractor(suite)
    pooled = probes.features(PositionModel(), byte_level, CPU)[0, probes.plan(byte_level).rows[("w", "test")]]
    # The tokenizer's own character-to-token map, on the text as the model reads it.
    encoding = byte_level(SENTENCES[1], add_special_tokens=False)
    start = 0
    for word, row in zip(words, pooled, strict=True):
        tokens = sorted({encoding.char_to_token(c) for c in range(start, start + len(word))})
        assert row[0].item() == pytest.approx(np.mean(tokens) + 1)  # + 1: BOS in front
        start += len(word) + 1
    assert len({encoding.char_to_token(c) for c in range(len(words[0]))}) > 1  # "don't" is split


def test_word_tokens_by_character_overlap():
    # "ab cd": tokens "a", "b" (word 0), a zero-width special token, "cd" (word 1),
    # and a token that spans both words (as a tokenizer that merges across spaces would).
    spans = [(0, 2), (3, 5)]
    assert word_tokens([(0, 1), (1, 2), (2, 2), (3, 5)], spans) == [[0, 1], [3]]
    assert word_tokens([(0, 4), (4, 5)], spans) == [[0], [0, 1]]
    assert word_tokens([(0, 1)], spans) == [[0], []]


def test_text_items_pool_the_last_or_all_tokens(tmp_path, wordpiece):
    lines = [{"text": s, "label": str(i % 2)} for i, s in enumerate(SENTENCES)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for pool in ("last", "mean"):
        suite = make_suite(
            tmp_path, {"t": {"format": "jsonl-text", "train": "t.jsonl", "test": "t.jsonl", "pool": pool}}
        )
        probes = extractor(suite)
        pooled = probes.features(PositionModel(), wordpiece, CPU)[0, probes.plan(wordpiece).rows[("t", "test")]]
        for row, sentence in zip(pooled, SENTENCES, strict=True):
            n = len(wordpiece(sentence, add_special_tokens=False)["input_ids"])
            columns = [n] if pool == "last" else list(range(1, n + 1))  # BOS is column 0
            assert row[0].item() == pytest.approx(np.mean(columns))


def test_a_text_longer_than_the_context_is_refused(tmp_path, wordpiece):
    line = {"text": " ".join(["giraffes"] * 70), "label": "x"}
    (tmp_path / "t.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(line | {"label": "y"}) + "\n")
    suite = make_suite(tmp_path, {"t": {"format": "jsonl-text", "train": "t.jsonl", "test": "t.jsonl"}})
    with pytest.raises(ExtractorError, match=r"t.jsonl:1: \d+ tokens, more than the model's context \(64\)"):
        extractor(suite).run(PositionModel(), wordpiece, CHECKPOINT, CPU)


# -- on a model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro_run(micro_probe_dir, micro_tokenizer):
    suite = make_suite(micro_probe_dir.parent, MICRO_TASKS, batch_size=32)
    probes = extractor(suite)
    model = tiny_model(len(micro_tokenizer), seed=11)
    tables = probes.run(model, micro_tokenizer, CHECKPOINT, CPU)
    return probes, model, tables


def test_features_are_the_hidden_states_of_an_unbatched_forward_pass(micro_run, micro_tokenizer):
    probes, model, _ = micro_run
    features = probes.features(model, micro_tokenizer, CPU)
    pos = next(t for t in probes.tasks if t.name == "pos")
    antecedent = next(t for t in probes.tasks if t.name == "antecedent")
    rows = probes.plan(micro_tokenizer).rows
    checks = [(pos.test, rows[("pos", "test")], i) for i in (0, 7, len(pos.test.labels) - 1)]
    checks += [(antecedent.train, rows[("antecedent", "train")], i) for i in (0, 5)]
    for split, split_rows, item in checks:
        text = split.texts[split.item_text[item]]
        ids = torch.tensor([[micro_tokenizer.bos_token_id, *micro_tokenizer(text)["input_ids"]]])
        with torch.no_grad():
            output = model.gpt_neox(ids, output_hidden_states=True)
        # One token per micro word: word i is position 1 + i; a text's last token is the last.
        position = 1 + split.item_word[item] if split.item_word[item] >= 0 else ids.shape[1] - 1
        assert len(output.hidden_states) == model.config.num_hidden_layers + 1
        for layer, states in enumerate(output.hidden_states):
            torch.testing.assert_close(features[layer, split_rows[item]], states[0, position], atol=2e-5, rtol=1e-4)
        # Layer 0 is the embedding; the last layer has the final layer norm applied.
        torch.testing.assert_close(features[0, split_rows[item]], model.gpt_neox.embed_in(ids)[0, position])
        torch.testing.assert_close(
            features[-1, split_rows[item]], output.last_hidden_state[0, position], atol=2e-5, rtol=1e-4
        )


def _gold_labels(folder: Path) -> dict[str, list[str]]:
    """Test labels read straight from the files (no CoNLL-U library)."""
    pos = []
    for line in (folder / "pos_test.conllu").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 10 and fields[3] != "_":
            pos.append(fields[3])
    antecedent = [json.loads(line)["label"] for line in (folder / "antecedent_test.jsonl").read_text().splitlines()]
    return {"pos": pos, "antecedent": antecedent}


def test_results_and_predictions_agree_with_each_other_and_the_files(micro_run, micro_probe_dir):
    probes, _, tables = micro_run
    results, predictions = tables[PROBE_RESULTS.name], tables[PROBE_PREDICTIONS.name]
    assert results.schema.names == PROBE_RESULTS.schema.names[1:]
    assert predictions.schema.names == PROBE_PREDICTIONS.schema.names[1:]
    assert results.num_rows == 2 * 3 * 2  # tasks x (embeddings + 2 blocks) x metrics
    gold = _gold_labels(micro_probe_dir)
    rows = results.to_pylist()
    by_item = {}
    for row in predictions.to_pylist():
        by_item.setdefault((row["task"], row["layer"]), []).append(row)
    for task in probes.tasks:
        train_counts = Counter(task.train.labels)
        n_train, n_classes = sum(train_counts.values()), len(train_counts)
        majority = min(train_counts, key=lambda label: (-train_counts[label], label))
        for layer in range(3):
            items = by_item[(task.name, layer)]
            assert [r["item_id"] for r in items] == list(range(len(gold[task.name])))
            assert [r["gold"] for r in items] == gold[task.name]
            predicted = [r["predicted"] for r in items]
            assert set(predicted) <= set(train_counts)
            mine = {r["metric"]: r for r in rows if r["task"] == task.name and r["layer"] == layer}
            assert mine["accuracy"]["value"] == pytest.approx(np.mean(np.array(predicted) == gold[task.name]))
            assert mine["macro_f1"]["value"] == pytest.approx(f1_score(gold[task.name], predicted, average="macro"))
            for row in mine.values():
                assert row["level"] == ("token" if task.name == "pos" else "sequence")
                assert (row["n_train"], row["n_test"], row["n_classes"]) == (n_train, len(gold[task.name]), n_classes)
                assert row["uniform_codelength"] == pytest.approx(n_train * math.log2(n_classes))
                assert 0 < row["codelength"] < 2 * row["uniform_codelength"]
                assert row["majority_accuracy"] == pytest.approx(np.mean(np.array(gold[task.name]) == majority))


def test_the_probe_is_sklearns_on_the_models_features(micro_run, micro_tokenizer):
    probes, model, tables = micro_run
    features = probes.features(model, micro_tokenizer, CPU)
    rows = probes.plan(micro_tokenizer).rows
    predictions = tables[PROBE_PREDICTIONS.name].to_pylist()
    for task in probes.tasks:
        train, test = probing.standardise(
            features[:, rows[(task.name, "train")]], features[:, rows[(task.name, "test")]]
        )
        for layer in range(3):
            x_train = probing.with_intercept(train[layer]).numpy()
            x_test = probing.with_intercept(test[layer]).numpy()
            reference = LogisticRegression(
                C=1 / probes.options.l2, fit_intercept=False, tol=1e-10, max_iter=10_000
            ).fit(x_train, task.train.labels)
            expected = reference.predict(x_test)
            ours = [r["predicted"] for r in predictions if r["task"] == task.name and r["layer"] == layer]
            assert np.mean(np.array(ours) == expected) >= 0.99, (task.name, layer)


def test_extraction_is_deterministic(micro_run, micro_tokenizer):
    probes, model, tables = micro_run
    again = probes.run(model, micro_tokenizer, CHECKPOINT, CPU)
    for name, table in tables.items():
        assert again[name].equals(table), name


def test_config_hash_covers_task_file_contents_not_paths(micro_probe_dir, tmp_path):
    base = micro_probe_dir.parent
    reference = extractor(make_suite(base, MICRO_TASKS)).config_hash()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for file in micro_probe_dir.iterdir():
        (moved / file.name).write_bytes(file.read_bytes())
    relocated = {
        name: spec | {"train": str(moved / Path(spec["train"]).name), "test": str(moved / Path(spec["test"]).name)}
        for name, spec in MICRO_TASKS.items()
    }
    assert extractor(make_suite(base, relocated)).config_hash() == reference
    assert extractor(make_suite(base, MICRO_TASKS, steps="all")).config_hash() == reference
    assert extractor(make_suite(base, MICRO_TASKS, l2=3.0)).config_hash() != reference
    test_file = moved / "antecedent_test.jsonl"
    test_file.write_text(test_file.read_text().replace("Number=Plur", "Number=Sing", 1))
    assert extractor(make_suite(base, relocated)).config_hash() != reference


def test_the_runner_writes_probe_partitions(micro_probe_dir, micro_tokenizer, tmp_path):
    base = micro_probe_dir.parent
    folder = base / "ck/tiny/seed0/step0"
    if not folder.exists():
        tiny_model(len(micro_tokenizer), seed=3).save_pretrained(folder)
        micro_tokenizer.save_pretrained(folder)
    lake = Lake(tmp_path / "lake")
    summary = run_extraction(make_suite(base, MICRO_TASKS), lake, progress=False)
    assert summary.ok, summary.failures
    assert lake.read(MANIFEST)["rows"].to_pylist() == [[("probe_results", 12), ("probe_predictions", 3 * 160)]]
    written = lake.read(PROBE_RESULTS)
    assert written.num_rows == 12 and set(written["step"].to_pylist()) == {0}
    assert pa.compute.min(written["value"]).as_py() >= 0


# -- the micro probing tasks ---------------------------------------------------------------


def _conllu_sentences(path: Path) -> list[list[list[str]]]:
    blocks = path.read_text().strip().split("\n\n")
    return [[line.split("\t") for line in block.splitlines() if not line.startswith("#")] for block in blocks]


def test_micro_pos_files_annotate_disjoint_words_with_the_grammars_labels(micro_probe_dir):
    words = {}
    for split in ("train", "test"):
        sentences = _conllu_sentences(micro_probe_dir / f"pos_{split}.conllu")
        annotated = set()
        for sentence in sentences:
            assert [int(fields[0]) for fields in sentence] == list(range(1, len(sentence) + 1))
            assert any(fields[3] != "_" for fields in sentence)
            for fields in sentence:
                word = LEXICON[fields[1]]
                if fields[3] == "_":
                    assert fields[4] == fields[5] == "_"
                    continue
                annotated.add(fields[1])
                assert fields[3] == UD.get(word.pos, word.pos) and fields[4] == word.pos
                feats = dict(kv.split("=") for kv in fields[5].split("|")) if fields[5] != "_" else {}
                assert feats.get("Number") == {"sg": "Sing", "pl": "Plur", None: None}[word.number]
                assert feats.get("Gender") == {"m": "Masc", "f": "Fem", "n": "Neut", None: None}[word.gender]
                assert (feats.get("Reflex") == "Yes") == (word.pos == "REFL")
        words[split] = annotated
        n_items = sum(fields[3] != "_" for sentence in sentences for fields in sentence)
        assert n_items == {"train": 240, "test": 120}[split]
    assert words["train"] and words["test"] and not words["train"] & words["test"]
    assert "." not in words["train"] | words["test"]
    # Every part of speech of the test words is also a train part of speech.
    tags = {split: {UD.get(LEXICON[w].pos, LEXICON[w].pos) for w in words[split]} for split in words}
    assert tags["test"] <= tags["train"]
    train_texts = {" ".join(f[1] for f in s) for s in _conllu_sentences(micro_probe_dir / "pos_train.conllu")}
    test_texts = {" ".join(f[1] for f in s) for s in _conllu_sentences(micro_probe_dir / "pos_test.conllu")}
    assert len(train_texts & test_texts) < 0.2 * len(test_texts)  # different draws (short ones may repeat)


def test_micro_antecedent_items(micro_probe_dir):
    items = {
        split: [json.loads(line) for line in (micro_probe_dir / f"antecedent_{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test")
    }
    assert [len(items["train"]), len(items["test"])] == [90, 40]
    everything = items["train"] + items["test"]
    assert len({item["text"] for item in everything}) == len(everything)
    expected_label = {("m", "sg"): "Gender=Masc|Number=Sing", ("f", "sg"): "Gender=Fem|Number=Sing"}
    for item in everything:
        words = item["text"].split()
        subject = next(w for w in words if LEXICON[w].pos in ("NOUN", "PROPN", "PRON"))
        assert words.index(subject) == item["antecedent_index"]
        antecedent = LEXICON[subject]
        label = "Number=Plur" if antecedent.number == "pl" else expected_label[(antecedent.gender, "sg")]
        assert item["label"] == label
        assert LEXICON[words[-1]].pos == "VERB"  # the text stops just before the reflexive
        between = [LEXICON[w] for w in words[item["antecedent_index"] + 1 :]]
        differs = [
            w
            for w in between
            if w.pos in ("NOUN", "PROPN", "PRON")
            and (w.number != antecedent.number or (w.number == "sg" and w.gender != antecedent.gender))
        ]
        assert item["attractor"] == bool(differs)
    for split in items.values():
        assert abs(sum(item["attractor"] for item in split) - len(split) / 2) <= 1
    assert {item["label"] for item in items["test"]} == set(expected_label.values()) | {"Number=Plur"}


def test_micro_probe_tasks_are_deterministic(micro_probe_dir, tmp_path):
    again = probe_tasks.write_probe_tasks(tmp_path, pos_words=(240, 120), antecedent=(90, 40))
    for name in probe_tasks.FILES:
        assert (again / name).read_bytes() == (micro_probe_dir / name).read_bytes(), name
    other = probe_tasks.write_probe_tasks(tmp_path / "other", seed=99, pos_words=(240, 120), antecedent=(90, 40))
    assert (other / "pos_train.conllu").read_bytes() != (micro_probe_dir / "pos_train.conllu").read_bytes()
