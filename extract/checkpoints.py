"""Loading one checkpoint safely: a hub revision or a local folder.

Weights load from safetensors only, unless the suite (or ``--allow-pickle``)
opts in to pickle ``.bin`` files, which can run arbitrary code when unpickled.
Remote code is never trusted. Every problem (missing revision or folder,
corrupt file, pickle refused) is raised as ``CheckpointError`` so the runner
can record it against that checkpoint and move on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from polypythias.extract.suite import CheckpointId, Suite

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded; the message says which and why."""


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


def load_model(
    suite: Suite, checkpoint: CheckpointId, device: torch.device, allow_pickle: bool = False
) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    source = suite.source_of(checkpoint)
    location, revision = _split_source(source)
    if revision is None:
        _check_local_folder(Path(location), allow_pickle or suite.checkpoints.allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location,
            revision=revision,
            dtype=getattr(torch, suite.checkpoints.dtype),
            use_safetensors=None if (allow_pickle or suite.checkpoints.allow_pickle) else True,
            trust_remote_code=False,
        )
    except Exception as error:  # transformers raises many types; all mean "cannot load"
        raise CheckpointError(f"{checkpoint} ({source}): cannot load: {_first_line(error)}") from error
    return model.to(device).eval()


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


def _check_local_folder(folder: Path, allow_pickle: bool) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json")
    has_safetensors = any(folder.glob("*.safetensors"))
    has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise CheckpointError(
            f"{folder}: only pickle weights (.bin/.pt) found; they can run arbitrary code "
            "when loaded. Convert them to safetensors or pass --allow-pickle if you trust them"
        )
    if not has_safetensors and not has_pickle:
        raise CheckpointError(f"{folder}: no weight files")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
