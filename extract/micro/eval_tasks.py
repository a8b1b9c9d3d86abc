"""lm-eval tasks over the micro language: deterministic items with exact answers.

The task YAMLs ship in ``tasks/`` next to this module; ``write_tasks`` copies them
into a folder together with the JSONL items they read (the YAMLs name their data
files relative to themselves; the ``evals`` extractor makes the paths absolute when
it loads them). Items come from the same grammar as the training corpus, drawn with
their own generator seeds, so they are fresh sentences, and the grammar knows every
answer:

- ``micro_gender_agreement``: minimal pairs (``language.minimal_pair``), good first;
- ``micro_lambada``: a document up to a reflexive object, the reflexive (with its
  leading space, as in lm-eval's lambada) as target;
- ``micro_verb_agreement``: a sentence up to its main verb, four verb forms of which
  only one agrees in number with the subject.

Every item also carries the indices the grammar gave it (``antecedent_index``,
``reflexive_index``, ``verb_index``) for tests and for readers of the data.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from .language import (
    _INTRANSITIVE,
    _TRANSITIVE,
    Grammar,
    Sentence,
    agreement_pair,
    generate_documents,
    minimal_pair,
)

TASKS_DIR = Path(__file__).parent / "tasks"
TASK_NAMES = ("micro_gender_agreement", "micro_lambada", "micro_verb_agreement")
#: Items per task by default: enough for a stable accuracy, few enough to stay fast.
DEFAULT_ITEMS = 200
#: Base generator seed of the items; each task adds its position in TASK_NAMES.
#: Differs from the micro suite's training (1234) and eval-document (4321) seeds.
DEFAULT_SEED = 2468


def gender_agreement_items(n: int, seed: int, grammar: Grammar | None = None) -> list[dict]:
    """``n`` distinct minimal pairs: the bad sentence's reflexive disagrees."""
    items = []
    rng = random.Random(seed)
    for sentence in _distinct_sentences(n, rng, grammar, lambda s: s.reflexive_index is not None):
        good, bad = minimal_pair(sentence)
        items.append(
            {
                "context": "",
                "choices": [good.text, bad.text],
                "sentence_good": good.text,
                "sentence_bad": bad.text,
                "antecedent_index": sentence.antecedent_index,
                "reflexive_index": sentence.reflexive_index,
            }
        )
    return items


def cloze_items(n: int, seed: int, grammar: Grammar | None = None) -> list[dict]:
    """``n`` cloze items: a document cut just before the reflexive of its last
    sentence that has one; documents without a reflexive are skipped."""
    grammar = grammar or Grammar()
    items: list[dict] = []
    seen: set[str] = set()
    batch = 0
    while len(items) < n:
        # Fresh batches until there are enough; each from its own derived seed.
        for document in generate_documents(n, seed * 1000 + batch, grammar=grammar):
            cut = [i for i, s in enumerate(document.sentences) if s.reflexive_index is not None]
            if not cut:
                continue
            sentence = document.sentences[cut[-1]]
            words = [w.text for s in document.sentences[: cut[-1]] for w in s.words]
            words += [w.text for w in sentence.words[: sentence.reflexive_index]]
            context = " ".join(words)
            if context in seen:
                continue
            seen.add(context)
            items.append(
                {
                    "context": context,
                    "target": " " + sentence.words[sentence.reflexive_index].text,
                    "antecedent_index": len(words) - sentence.reflexive_index + sentence.antecedent_index,
                }
            )
            if len(items) == n:
                break
        batch += 1
    return items


def verb_agreement_items(n: int, seed: int, grammar: Grammar | None = None) -> list[dict]:
    """``n`` 4-way choices of the main verb's form, the right one at a shuffled index."""
    rng = random.Random(seed)
    items = []
    for sentence in _distinct_sentences(n, rng, grammar, lambda s: True, prefix=True):
        verb = sentence.words[sentence.verb_index]
        _, wrong = agreement_pair(sentence)
        wrong_number = wrong.words[sentence.verb_index].number
        # Two other verbs of the same kind (transitive or not), in the wrong number.
        family = next(f for f in (_TRANSITIVE, _INTRANSITIVE) if any(forms[verb.number] == verb for forms in f))
        others = rng.sample([forms for forms in family if forms[verb.number] != verb], 2)
        choices = [verb.text, wrong.words[sentence.verb_index].text, *(forms[wrong_number].text for forms in others)]
        order = list(range(4))
        rng.shuffle(order)
        items.append(
            {
                "context": " ".join(w.text for w in sentence.words[: sentence.verb_index]),
                "choices": [choices[i] for i in order],
                "label": order.index(0),
                "subject_index": sentence.subject_index,
                "verb_index": sentence.verb_index,
            }
        )
    return items


BUILDERS: dict[str, Callable[[int, int, Grammar | None], list[dict]]] = {
    "micro_gender_agreement": gender_agreement_items,
    "micro_lambada": cloze_items,
    "micro_verb_agreement": verb_agreement_items,
}


def write_tasks(
    out_dir: Path,
    n_items: int = DEFAULT_ITEMS,
    seed: int = DEFAULT_SEED,
    grammar: Grammar | None = None,
) -> Path:
    """Write the task YAMLs and their JSONL items into ``out_dir``; returns it."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for offset, name in enumerate(TASK_NAMES):
        items = BUILDERS[name](n_items, seed + offset, grammar)
        text = "".join(json.dumps(item) + "\n" for item in items)
        _replace_text(out_dir / f"{name}.jsonl", text)
        shutil.copyfile(TASKS_DIR / f"{name}.yaml", out_dir / f".{name}.yaml.tmp")
        (out_dir / f".{name}.yaml.tmp").replace(out_dir / f"{name}.yaml")
    return out_dir


def _distinct_sentences(
    n: int,
    rng: random.Random,
    grammar: Grammar | None,
    keep: Callable[[Sentence], bool],
    prefix: bool = False,
) -> list[Sentence]:
    """``n`` sentences satisfying ``keep``, distinct in text (or, with ``prefix``, in
    the words before the main verb)."""
    grammar = grammar or Grammar()
    sentences, seen = [], set()
    for _ in range(1000 * n):
        sentence = grammar.sentence(rng)
        key = sentence.words[: sentence.verb_index] if prefix else sentence.words
        if keep(sentence) and key not in seen:
            seen.add(key)
            sentences.append(sentence)
            if len(sentences) == n:
                return sentences
    raise ValueError(f"the grammar gave fewer than {n} distinct items")


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
