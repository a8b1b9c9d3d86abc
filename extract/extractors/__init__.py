"""Extractors: registered plugins that turn one loaded checkpoint into lake rows.

An extractor is built once per job from its options (so shared inputs such as
the evaluation documents are read once) and then run on each checkpoint with the
already-loaded model and tokenizer. It returns one table per dataset it writes,
without the ``extraction_id`` column, which the runner adds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import pyarrow as pa
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from polypythias.extract.suite import CheckpointId, Suite
    from polypythias.warehouse.schemas import Dataset


class ExtractorError(ValueError):
    """An extractor that is unknown or misconfigured."""


def read_text(path: Path) -> str:
    """A UTF-8 input file's text; a file that is not UTF-8 is refused, naming it."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ExtractorError(f"{path}:{line}: not UTF-8 text (byte {error.start}: {error.reason})") from None


def nonfinite_values(tables: dict[str, pa.Table]) -> str | None:
    """Where `tables` (dataset → rows) hold NaN or inf ("token_stats.entropy: 2 of
    2048 values"), or None. Floats, lists and maps of floats are looked at; null is
    a value's absence, not a number, and passes."""
    import pyarrow.compute as pc

    found = []
    for dataset, table in tables.items():
        for column in table.column_names:
            values = table[column].combine_chunks()
            while True:
                if pa.types.is_map(values.type):
                    values = values.items
                elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                    values = values.flatten()
                else:
                    break
            if not pa.types.is_floating(values.type) or len(values) == 0:
                continue
            bad = len(values) - values.null_count - (pc.sum(pc.is_finite(values)).as_py() or 0)
            if bad:
                found.append(f"{dataset}.{column}: {bad} of {len(values)} values")
    return "; ".join(found) or None


class Diverged(ExtractorError):
    """The checkpoint's numbers are not finite (NaN or inf logits, hidden states or
    log-likelihoods): recorded as ``diverged``, final, not a failure of the job."""


class ExtractorOptions(BaseModel):
    """Options every extractor takes; each extractor extends this."""

    model_config = ConfigDict(extra="forbid")

    steps: str = Field("all", description="Which of the suite's step sets to extract.")


class Extractor:
    """Base class of the plugins. Subclasses set the class attributes and ``run``."""

    name: ClassVar[str]
    Options: ClassVar[type[ExtractorOptions]] = ExtractorOptions
    #: The datasets ``run`` returns tables for.
    outputs: ClassVar[tuple[Dataset, ...]]
    #: Bump when the meaning of the output changes: it changes the config hash,
    #: so previously extracted checkpoints are redone.
    version: ClassVar[int] = 1
    #: Options naming input files or folders: the config hash covers their content,
    #: not their path, so the same input reached by another path is the same
    #: configuration. A folder counts as the sorted relative paths and contents of
    #: the files under it, leaving out hidden ones and ``__pycache__``; an option
    #: left unset (None) counts as None.
    file_options: ClassVar[tuple[str, ...]] = ()
    #: Whether the extractor still runs on a checkpoint whose weights are not all
    #: finite (and records what it can); the others are recorded as diverged unrun.
    runs_on_diverged: ClassVar[bool] = False

    def __init__(self, options: ExtractorOptions, suite: Suite) -> None:
        self.options = options
        self.suite = suite

    def config_hash(self) -> str:
        """What the output depends on: extractor version, options, input file contents."""
        files = {name: self._content_hash(value) for name, value in self.input_files().items()}
        payload = {
            "extractor": self.name,
            "version": self.version,
            "options": self.hashed_options(),
            "files": files,
        }
        encoded = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def input_files(self) -> dict[str, str | None]:
        """The input files or folders, by a name unique within the extractor (as
        the suite file reached it), each as the suite file gives it: the config hash
        covers their content. Default: the ``file_options``. An extractor whose
        inputs are nested deeper in its options overrides this and
        ``hashed_options`` together."""
        return {option: getattr(self.options, option) for option in self.file_options}

    def hashed_options(self) -> dict:
        """The options the config hash covers as values: all but ``steps`` (which
        checkpoints, not what is computed on one) and the input paths of
        ``input_files`` (their content counts instead)."""
        return self.options.model_dump(exclude={"steps", *self.file_options}, mode="json")

    def prepare(self) -> None:
        """One-time setup too slow for ``__init__`` (which ``polypythias status``
        also runs), done before the first checkpoint. Default: nothing."""

    def _content_hash(self, value: str | None) -> str | None:
        if value is None:
            return None
        path = self.suite.resolve_path(value)
        if path.is_dir():
            digest = hashlib.sha256()
            files = (p for p in path.rglob("*") if p.is_file() and not _ignored(p.relative_to(path)))
            for file in sorted(files):
                relative = file.relative_to(path).as_posix().encode()
                # Length-prefixed, so that no two different folders hash alike.
                for part in (relative, file.read_bytes()):
                    digest.update(len(part).to_bytes(8, "little"))
                    digest.update(part)
            return digest.hexdigest()
        if not path.is_file():
            raise ExtractorError(f"{self.name}: {path} not found")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def run(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        checkpoint: CheckpointId,
        device: torch.device,
    ) -> dict[str, pa.Table]:
        raise NotImplementedError


def _ignored(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in relative.parts)


_REGISTRY: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator adding an extractor to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ExtractorError(f"two extractors are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def get_extractor(name: str) -> type[Extractor]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ExtractorError(f"unknown extractor {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


# Importing the plugin modules registers them.
from polypythias.extract.extractors import evals, probes, token_stats, weight_stats  # noqa: E402,F401
