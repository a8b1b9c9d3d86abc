"""A word-level Hugging Face tokenizer for the micro language.

One token per word, split on whitespace, so tokens align one-to-one with the
grammar's words (and their labels). Like Pythia's, `<|endoftext|>` has id 0 and
serves as both bos and eos, and nothing is added around the text when encoding.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|padding|>"
UNK = "<unk>"
SPECIAL_TOKENS = (EOS, PAD, UNK)  # ids 0, 1, 2


def build_tokenizer(vocabulary: list[str], model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """Special tokens first, then `vocabulary` in its order."""
    clashes = set(vocabulary) & set(SPECIAL_TOKENS)
    if clashes or len(set(vocabulary)) != len(vocabulary):
        raise ValueError("vocabulary must be unique and must not contain special tokens")
    if any(not w or any(c.isspace() for c in w) for w in vocabulary):
        raise ValueError("vocabulary words must be non-empty and contain no whitespace")
    ids = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *vocabulary))}
    backend = Tokenizer(WordLevel(ids, unk_token=UNK))
    backend.pre_tokenizer = WhitespaceSplit()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        **extra,
    )
