"""Loading one checkpoint safely: a hub revision or a local folder.

Weights load from safetensors where a checkpoint has them. A checkpoint with only
pickle ``.bin`` weights (the original Pythia step branches hold only
``pytorch_model.bin``) loads through torch's weights-only unpickler, which accepts
tensors and plain containers and nothing else, so unpickling cannot run code; a
``.bin`` that needs more is refused, naming the file. Remote code is never trusted.
Every problem (missing revision or folder, corrupt or refused file) is raised as
``CheckpointError`` so the runner can record it against that checkpoint and move on.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polypythias.extract.suite import CheckpointId, Suite

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Weight files in the order they are preferred, and the format each one is.
WEIGHT_FILES = (
    ("model.safetensors", "safetensors"),
    ("model.safetensors.index.json", "safetensors"),
    ("pytorch_model.bin", "bin"),
    ("pytorch_model.bin.index.json", "bin"),
)


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Weights:
    """The weight file a checkpoint loads from, and its format ("safetensors" or "bin")."""

    path: Path
    format: str


def quiet_transformers() -> None:
    """Errors only, and no download bars: they would break the job's progress bar."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _split_source(source: str) -> tuple[str, str | None]:
    """'repo@revision' → (repo, revision); a local folder → (folder, None)."""
    if Path(source).is_absolute():
        return source, None
    repo, _, revision = source.rpartition("@")
    return repo, revision


def find_weights(suite: Suite, checkpoint: CheckpointId) -> Weights:
    """The checkpoint's weight file: safetensors when it has them, else a pickle
    ``.bin`` (fetched into, or read from, the local hub cache for a hub revision)."""
    location, revision = _split_source(suite.source_of(checkpoint))
    if revision is None:
        return _local_weights(Path(location))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    last_error: Exception | None = None
    for filename, weights_format in WEIGHT_FILES:
        try:
            path = hf_hub_download(location, filename, revision=revision)
        except (EntryNotFoundError, LocalEntryNotFoundError) as error:
            last_error = error  # offline, a file not in the cache reads the same
            continue
        except Exception as error:  # unknown repo or revision, network: this checkpoint only
            raise CheckpointError(f"{checkpoint} ({location}@{revision}): cannot load: {_first_line(error)}") from error
        return Weights(Path(path), weights_format)
    raise CheckpointError(
        f"{checkpoint} ({location}@{revision}): no weight file "
        f"({', '.join(name for name, _ in WEIGHT_FILES)}) found: {_first_line(last_error)}"
    )


def _local_weights(folder: Path) -> Weights:
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json")
    for filename, weights_format in WEIGHT_FILES:
        if (folder / filename).is_file():
            return Weights(folder / filename, weights_format)
    raise CheckpointError(f"{folder}: no weight files ({', '.join(name for name, _ in WEIGHT_FILES)})")


def check_pickle(path: Path) -> None:
    """Refuse a ``.bin`` that torch's weights-only unpickler cannot read (one that
    would call a function or build an arbitrary object), or a damaged one, naming the
    file. Memory-mapped: the tensors are not read."""
    import torch

    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # The legacy (pre-zip) format cannot be memory-mapped.
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused: {_unsupported_global(error)}; only pickles of tensors and plain "
            "containers are loaded (torch's weights-only unpickler)"
        ) from None
    except Exception as error:  # a truncated or corrupt file
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {_first_line(error)}") from None


def _unsupported_global(error: pickle.UnpicklingError) -> str:
    """What torch names as refused: 'it would call posix.system', or its message."""
    import re

    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found:
        return f"unpickling it would call {found.group(1)}"
    return _first_line(error)


def load_model(suite: Suite, checkpoint: CheckpointId, device: torch.device) -> tuple[PreTrainedModel, Weights]:
    """The checkpoint's model on `device`, and the weight file it came from."""
    import torch
    from transformers import AutoModelForCausalLM

    source = suite.source_of(checkpoint)
    location, revision = _split_source(source)
    weights = find_weights(suite, checkpoint)
    if weights.format == "bin":
        for part in _pickle_parts(weights.path, location, revision):
            check_pickle(part)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location,
            revision=revision,
            dtype=getattr(torch, suite.checkpoints.dtype),
            use_safetensors=weights.format == "safetensors",
            weights_only=True,
            trust_remote_code=False,
        )
    except Exception as error:  # transformers raises many types; all mean "cannot load"
        raise CheckpointError(f"{checkpoint} ({source}): cannot load: {_first_line(error)}") from error
    return model.to(device).eval(), weights


def _pickle_parts(path: Path, location: str, revision: str | None) -> list[Path]:
    """The .bin files of a checkpoint: the file itself, or the shards its index names
    (fetched like the index, for a hub revision)."""
    if not path.name.endswith(".index.json"):
        return [path]
    import json

    try:
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a readable shard index: {_first_line(error)}") from None
    if revision is None:
        return [path.parent / shard for shard in shards]
    from huggingface_hub import hf_hub_download

    try:
        return [Path(hf_hub_download(location, shard, revision=revision)) for shard in shards]
    except Exception as error:
        raise CheckpointError(f"{location}@{revision}: cannot fetch a shard: {_first_line(error)}") from error


def load_tokenizer(suite: Suite, checkpoint: CheckpointId) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    if suite.checkpoints.tokenizer:
        shared = suite.checkpoints.tokenizer
        local = suite.resolve_path(shared)
        location, revision = (str(local), None) if local.exists() else (shared, None)
    else:
        location, revision = _split_source(suite.source_of(checkpoint))
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=False)
    except Exception as error:
        raise CheckpointError(f"{checkpoint}: cannot load tokenizer from {location}: {_first_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
