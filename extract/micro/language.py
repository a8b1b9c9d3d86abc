"""A small English-like language with exact grammatical labels.

The micro suite trains on text drawn from this probabilistic grammar. Because the
generator builds every sentence itself, it knows each word's part of speech, gender
and number, which word a reflexive refers to, and which verb must agree with which
subject. Later stages use this for exact probe labels and minimal pairs:

    the old king who sees the girls admires himself .
    she helps the actors near the river .

Agreement rules: the main verb (and the verb of a relative clause) agrees in number
with the subject; a reflexive object agrees in gender and number with the subject
(himself / herself / themselves). Neuter nouns only appear as objects. The
vocabulary is about 160 words, small enough for a 1M-parameter model to learn in a
few hundred steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

# Parts of speech, in a fixed order so that probes can use their index as a label.
POS_TAGS: tuple[str, ...] = (
    "DET",
    "ADJ",
    "NOUN",
    "PROPN",
    "PRON",
    "REFL",
    "REL",
    "VERB",
    "ADP",
    "PUNCT",
)


@dataclass(frozen=True, slots=True)
class Word:
    """One word with its lexical features; gender is "m", "f", "n" or None."""

    text: str
    pos: str
    gender: str | None = None
    number: str | None = None  # "sg", "pl" or None when it does not inflect


@dataclass(frozen=True, slots=True)
class Sentence:
    """A generated sentence; indices point into `words`.

    `subject_index` is the head of the main subject (noun, name or pronoun) and
    `verb_index` the main verb that agrees with it. `reflexive_index` is the
    reflexive object if there is one, and `antecedent_index` the word it refers to
    (always the subject head).
    """

    words: tuple[Word, ...]
    reflexive_index: int | None
    antecedent_index: int | None
    subject_index: int
    verb_index: int

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def pos(self) -> tuple[str, ...]:
        """The part of speech of each word (one tag per token)."""
        return tuple(w.pos for w in self.words)


@dataclass(frozen=True, slots=True)
class Document:
    sentences: tuple[Sentence, ...]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def words(self) -> tuple[Word, ...]:
        """All words in order; they align one-to-one with the tokens of `text`."""
        return tuple(w for s in self.sentences for w in s.words)


# --- Lexicon -------------------------------------------------------------------

# (masculine singular, masculine plural, feminine singular, feminine plural)
_GENDERED_NOUNS = (
    ("king", "kings", "queen", "queens"),
    ("prince", "princes", "princess", "princesses"),
    ("boy", "boys", "girl", "girls"),
    ("man", "men", "woman", "women"),
    ("actor", "actors", "actress", "actresses"),
    ("father", "fathers", "mother", "mothers"),
    ("brother", "brothers", "sister", "sisters"),
    ("son", "sons", "daughter", "daughters"),
    ("uncle", "uncles", "aunt", "aunts"),
    ("husband", "husbands", "wife", "wives"),
    ("waiter", "waiters", "waitress", "waitresses"),
    ("monk", "monks", "nun", "nuns"),
)
_NEUTER_NOUNS = (
    ("book", "books"),
    ("apple", "apples"),
    ("letter", "letters"),
    ("garden", "gardens"),
    ("house", "houses"),
    ("river", "rivers"),
    ("stone", "stones"),
    ("song", "songs"),
    ("table", "tables"),
    ("ship", "ships"),
)
_MALE_NAMES = ("John", "Peter", "Tom", "David", "James")
_FEMALE_NAMES = ("Mary", "Anna", "Susan", "Emma", "Lucy")
# (singular, plural) verb forms.
_TRANSITIVE_VERBS = (
    ("sees", "see"),
    ("likes", "like"),
    ("helps", "help"),
    ("knows", "know"),
    ("admires", "admire"),
    ("watches", "watch"),
    ("loves", "love"),
    ("follows", "follow"),
    ("visits", "visit"),
    ("praises", "praise"),
    ("blames", "blame"),
    ("finds", "find"),
)
_INTRANSITIVE_VERBS = (
    ("sleeps", "sleep"),
    ("laughs", "laugh"),
    ("smiles", "smile"),
    ("waits", "wait"),
    ("sings", "sing"),
    ("dances", "dance"),
    ("runs", "run"),
    ("cries", "cry"),
)
_ADJECTIVES = (
    "old",
    "young",
    "happy",
    "sad",
    "tall",
    "small",
    "brave",
    "clever",
    "quiet",
    "kind",
    "poor",
    "rich",
)
_PREPOSITIONS = ("in", "near", "with", "behind")

_DETERMINERS = (
    Word("the", "DET"),
    Word("a", "DET", number="sg"),
    Word("an", "DET", number="sg"),  # only before a vowel
    Word("every", "DET", number="sg"),
    Word("this", "DET", number="sg"),
    Word("that", "DET", number="sg"),
    Word("some", "DET", number="pl"),
    Word("these", "DET", number="pl"),
    Word("those", "DET", number="pl"),
    Word("many", "DET", number="pl"),
)
_SUBJECT_PRONOUNS = (
    Word("he", "PRON", "m", "sg"),
    Word("she", "PRON", "f", "sg"),
    Word("they", "PRON", None, "pl"),
)
_OBJECT_PRONOUNS = (
    Word("him", "PRON", "m", "sg"),
    Word("her", "PRON", "f", "sg"),
    Word("them", "PRON", None, "pl"),
)
_REFLEXIVES = (
    Word("himself", "REFL", "m", "sg"),
    Word("herself", "REFL", "f", "sg"),
    Word("themselves", "REFL", None, "pl"),
)
_WHO = Word("who", "REL")
_PERIOD = Word(".", "PUNCT")

_ANIMATE_NOUNS = tuple(
    Word(text, "NOUN", gender, number)
    for m_sg, m_pl, f_sg, f_pl in _GENDERED_NOUNS
    for text, gender, number in (
        (m_sg, "m", "sg"),
        (m_pl, "m", "pl"),
        (f_sg, "f", "sg"),
        (f_pl, "f", "pl"),
    )
)
_INANIMATE_NOUNS = tuple(
    Word(text, "NOUN", "n", number) for sg, pl in _NEUTER_NOUNS for text, number in ((sg, "sg"), (pl, "pl"))
)
_NAMES = tuple(Word(n, "PROPN", "m", "sg") for n in _MALE_NAMES) + tuple(
    Word(n, "PROPN", "f", "sg") for n in _FEMALE_NAMES
)


def _verb_forms(pairs: tuple[tuple[str, str], ...]) -> tuple[dict[str, Word], ...]:
    return tuple({"sg": Word(sg, "VERB", number="sg"), "pl": Word(pl, "VERB", number="pl")} for sg, pl in pairs)


_TRANSITIVE = _verb_forms(_TRANSITIVE_VERBS)
_INTRANSITIVE = _verb_forms(_INTRANSITIVE_VERBS)
_ADJ_WORDS = tuple(Word(a, "ADJ") for a in _ADJECTIVES)
_ADP_WORDS = tuple(Word(p, "ADP") for p in _PREPOSITIONS)

# Lookups for minimal pairs.
_OTHER_VERB_FORM: dict[str, Word] = {
    forms[n].text: forms["pl" if n == "sg" else "sg"] for forms in _TRANSITIVE + _INTRANSITIVE for n in ("sg", "pl")
}
_REFLEXIVE_BY_TEXT: dict[str, Word] = {w.text: w for w in _REFLEXIVES}

_LEXICON: tuple[Word, ...] = (
    _DETERMINERS
    + _ADJ_WORDS
    + _ANIMATE_NOUNS
    + _INANIMATE_NOUNS
    + _NAMES
    + _SUBJECT_PRONOUNS
    + _OBJECT_PRONOUNS
    + _REFLEXIVES
    + (_WHO,)
    + tuple(f[n] for f in _TRANSITIVE + _INTRANSITIVE for n in ("sg", "pl"))
    + _ADP_WORDS
    + (_PERIOD,)
)


def reflexive_for(antecedent: Word) -> Word:
    """The reflexive that agrees with `antecedent` (himself, herself, themselves)."""
    if antecedent.number == "pl":
        return _REFLEXIVE_BY_TEXT["themselves"]
    if antecedent.gender == "m":
        return _REFLEXIVE_BY_TEXT["himself"]
    if antecedent.gender == "f":
        return _REFLEXIVE_BY_TEXT["herself"]
    raise ValueError(f"no reflexive agrees with {antecedent.text!r}")


# --- Grammar -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grammar:
    """Sentence probabilities; the lexicon is fixed."""

    p_name_subject: float = 0.2
    p_pronoun_subject: float = 0.2
    p_plural: float = 0.5
    p_adjective: float = 0.3
    p_relative_clause: float = 0.3  # on a common-noun subject
    # Reflexives are frequent so that gender agreement is learnt within the micro
    # suite's few hundred steps (at 0.35, the 1m model had not learnt it by 1000).
    p_reflexive: float = 0.6  # main verb phrase: reflexive object
    p_transitive: float = 0.25  # main verb phrase: other object (else intransitive)
    p_prepositional: float = 0.15

    def vocabulary(self) -> list[str]:
        """Every word the grammar can produce, in a fixed order."""
        return list(dict.fromkeys(w.text for w in _LEXICON))

    def sentence(self, rng: random.Random) -> Sentence:
        words: list[Word] = []
        roll = rng.random()
        if roll < self.p_name_subject:
            words.append(rng.choice(_NAMES))
        elif roll < self.p_name_subject + self.p_pronoun_subject:
            words.append(rng.choice(_SUBJECT_PRONOUNS))
        else:
            self._noun_phrase(rng, words, _ANIMATE_NOUNS)
        subject_index = len(words) - 1
        subject = words[subject_index]
        number = subject.number
        assert number is not None

        if subject.pos == "NOUN" and rng.random() < self.p_relative_clause:
            words.append(_WHO)
            if rng.random() < 0.5:
                words.append(rng.choice(_INTRANSITIVE)[number])
            else:
                words.append(rng.choice(_TRANSITIVE)[number])
                self._object(rng, words)

        roll = rng.random()
        reflexive_index = antecedent_index = None
        if roll < self.p_reflexive:
            words.append(rng.choice(_TRANSITIVE)[number])
            verb_index = len(words) - 1
            words.append(reflexive_for(subject))
            reflexive_index, antecedent_index = len(words) - 1, subject_index
        elif roll < self.p_reflexive + self.p_transitive:
            words.append(rng.choice(_TRANSITIVE)[number])
            verb_index = len(words) - 1
            self._object(rng, words)
        else:
            words.append(rng.choice(_INTRANSITIVE)[number])
            verb_index = len(words) - 1

        if rng.random() < self.p_prepositional:
            words.append(rng.choice(_ADP_WORDS))
            self._noun_phrase(rng, words, _INANIMATE_NOUNS)
        words.append(_PERIOD)
        return Sentence(tuple(words), reflexive_index, antecedent_index, subject_index, verb_index)

    def _object(self, rng: random.Random, words: list[Word]) -> None:
        roll = rng.random()
        if roll < 0.15:
            words.append(rng.choice(_NAMES))
        elif roll < 0.3:
            words.append(rng.choice(_OBJECT_PRONOUNS))
        else:
            nouns = _ANIMATE_NOUNS if rng.random() < 0.6 else _INANIMATE_NOUNS
            self._noun_phrase(rng, words, nouns)

    def _noun_phrase(self, rng: random.Random, words: list[Word], nouns: tuple[Word, ...]) -> None:
        number = "pl" if rng.random() < self.p_plural else "sg"
        det = rng.choice([d for d in _DETERMINERS if d.number in (None, number) and d.text != "an"])
        adjective = rng.choice(_ADJ_WORDS) if rng.random() < self.p_adjective else None
        noun = rng.choice([n for n in nouns if n.number == number])
        if det.text == "a" and (adjective or noun).text[0] in "aeiou":
            det = _DETERMINERS[2]  # "an"
        words.append(det)
        if adjective is not None:
            words.append(adjective)
        words.append(noun)


def generate_documents(
    n_docs: int,
    seed: int,
    sentences_per_doc: tuple[int, int] = (3, 6),
    grammar: Grammar | None = None,
) -> list[Document]:
    """`n_docs` documents of `sentences_per_doc` (inclusive range) sentences each."""
    low, high = sentences_per_doc
    if n_docs < 0 or not 1 <= low <= high:
        raise ValueError(f"need n_docs >= 0 and 1 <= low <= high, got {n_docs}, {sentences_per_doc}")
    grammar = grammar or Grammar()
    rng = random.Random(seed)
    return [Document(tuple(grammar.sentence(rng) for _ in range(rng.randint(low, high)))) for _ in range(n_docs)]


# --- Minimal pairs -------------------------------------------------------------


def minimal_pair(sentence: Sentence) -> tuple[Sentence, Sentence]:
    """(good, bad): the bad sentence's reflexive disagrees with its antecedent.

    A singular antecedent gets the other gender's reflexive ("the king sees
    herself"); a plural one, which has no gendered reflexive, gets a singular one
    of its own gender, or "himself" for "they" ("the queens see herself").
    """
    if sentence.reflexive_index is None or sentence.antecedent_index is None:
        raise ValueError(f"sentence has no reflexive: {sentence.text!r}")
    antecedent = sentence.words[sentence.antecedent_index]
    if antecedent.number == "sg":
        wrong = "herself" if antecedent.gender == "m" else "himself"
    else:
        wrong = "herself" if antecedent.gender == "f" else "himself"
    return sentence, _substitute(sentence, sentence.reflexive_index, _REFLEXIVE_BY_TEXT[wrong])


def agreement_pair(sentence: Sentence) -> tuple[Sentence, Sentence]:
    """(good, bad): the bad sentence's main verb has the wrong number ("the kings sees")."""
    verb = sentence.words[sentence.verb_index]
    return sentence, _substitute(sentence, sentence.verb_index, _OTHER_VERB_FORM[verb.text])


def _substitute(sentence: Sentence, index: int, word: Word) -> Sentence:
    words = list(sentence.words)
    words[index] = word
    return replace(sentence, words=tuple(words))
