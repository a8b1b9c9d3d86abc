"""``polypythias ingest lm-eval``: lm-eval result files that already exist, into the lake.

Public result sets (the Pythia evals, the PolyPythias evaluation set) are folders of
lm-eval JSON. Each results file becomes one extraction of one checkpoint:
``eval_results`` rows, ``eval_samples`` rows when samples files sit next to it, one
``eval_files`` row (where it came from, who it says it is, what disagreed) and a
manifest row (extractor ``lm_eval_ingest``). The data are written first and the
manifest row last, so a crash half-way leaves nothing that staging reads.

Identity comes from what a file says about itself, never from where it lies:

- the model name (``pretrained=`` of ``config.model_args``, a string or, in 0.4, a
  dict; else 0.4's ``model_name``) gives (model_size, seed, variant) through a
  regular expression with named groups: ``size`` (required), ``seed`` (optional,
  default 0) and any others, whose non-empty values, in the pattern's order and
  joined by ``-``, are the variant (``standard`` when none). The default pattern
  reads ``EleutherAI/pythia-70m`` (standard, seed 0), ``pythia-v1.1-160m-deduped``
  (deduped), ``pythia-14m-seed3`` (seed 3), ``pythia-160m-data-seed1`` (data-seed),
  ``intervention-pythia-v1.1-70m-deduped`` (intervention-deduped), ``pythia-70m-v0``
  (v0), and any further suffix as part of the variant: ``pythia-v1.1-1b-bf16`` (bf16),
  ``pythia-v1.1-160m-0.5MtokBS`` (0.5MtokBS),
  ``intervention-pythia-v1.1-1.4b-deduped-long`` (intervention-deduped-long);
- the step comes from the revision (``revision=step1000`` in model_args, else 0.4's
  ``config.model_revision``); a pattern with a group ``step`` is searched in
  ``NAME@REVISION`` instead, for revisions that are not ``stepN`` (OLMo's
  ``step20000-tokens84B``). A file that states no checkpoint (a final model's
  results) is refused unless ``--step`` names its step; the step is never guessed;
- files of GPT-NeoX's ``evaluate.py`` and of the prompt-source fork name no
  pretrained model: their identity comes from the training configuration they
  record (``polypythias.extract.neox_identity``): v0 runs, size from the
  architecture, deduplication from ``train_data_paths``, run kind from the run's name;
- the suite partition is ``<suite>`` for the standard variant, ``<suite>-<variant>``
  otherwise, so standard and deduplicated twins of a size stay apart.

What the file's name and folders say (``step…``, a size such as ``70m``,
``deduped``, ``seed…``) is only compared with that identity: a disagreement is
recorded in ``eval_files.finding`` (the file is still ingested under its own
identity), because public sets contain mislabelled files. The names compared are
the file's and those of its folders up to and including the folder given on the
command line (for a file given directly, its own folder).

Every failure is one line naming the file (a non-UTF-8, invalid, too large or too
deeply nested file; a NaN or infinite metric, of which nothing lands) and never
stops the others; files that are no results at all (a PDF, a plot) are skipped.

When the evaluation ran (``evaluated_at``, which decides which rerun of a checkpoint
the marts keep): 0.4's ``date``; GPT-NeoX's ``evaluate.py`` writes it into the file
name (``…_eval_results_11-25-2022-08-12-38.json``, read as UTC); otherwise the file
records none, and its modification time stands in for it.

Re-ingesting is idempotent: a file whose content (sha256, the manifest's
``config_hash``) and path (the manifest's ``source``) already have a successful
manifest row under the same checkpoint is skipped. A byte-identical copy at another
path is ingested again, so that its own name is checked: mislabelled copies are
exactly what the integrity mart looks for.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from polypythias.extract.lm_eval_tables import (
    LmEvalFormatError,
    detect_format,
    evaluated_at_of,
    prompt_source_tasks,
    results_table,
    samples_table,
)
from polypythias.extract.neox_identity import OLD_SIZE_NAMES, NeoxIdentityError, neox_run
from polypythias.extract.runner import package_versions
from polypythias.warehouse.lake import Lake, LakeError, new_extraction_id, validate_partition_value
from polypythias.warehouse.schemas import EVAL_FILES, EVAL_RESULTS, EVAL_SAMPLES, MANIFEST

EXTRACTOR = "lm_eval_ingest"
DEFAULT_SUITE = "polypythias"

#: Reads Pythia-style model names; searched in the full name (``EleutherAI/…`` or a path).
DEFAULT_PATTERN = (
    r"(?:^|/)(?:(?P<prefix>[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?)-)?pythia-(?:v1\.1-)?"
    r"(?P<size>\d+(?:\.\d+)?[mb])"
    r"(?:-(?P<deduped>deduped))?"
    r"(?:-(?:(?P<seeding>data-seed|weight-seed)|seed)(?P<seed>\d+))?"
    r"(?:-(?P<suffix>[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?))?/?$"
)

#: Group names of the pattern that are not parts of the variant.
_IDENTITY_GROUPS = {"size", "seed", "step"}
#: Results files are kilobytes (a 0.4 file with its task configs a few megabytes).
MAX_RESULTS_FILE_BYTES = 64 * 2**20
#: Steps are stored as 64-bit integers.
MAX_STEP = 2**63 - 1
_STEP_REVISION = re.compile(r"step(\d+)")
#: What a file or folder name may say about the checkpoint it holds.
_NAME_STEP = re.compile(r"(?<![A-Za-z])step[-_]?(\d+)(?!\d)")
_NAME_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?[mb])(?![A-Za-z0-9])", re.IGNORECASE)
_NAME_SEED = re.compile(r"(?<![A-Za-z])seed[-_]?(\d+)(?!\d)")
_NAME_SHOTS = re.compile(r"(?<![A-Za-z0-9])(\d+|zero|one|five|ten)[-_]?shot", re.IGNORECASE)
_SHOT_WORDS = {"zero": 0, "one": 1, "five": 5, "ten": 10}
_NAME_STAMP = re.compile(r"eval_results_(\d\d-\d\d-\d{4}-\d\d-\d\d-\d\d)\.json$")


class IngestError(Exception):
    """A file that cannot be ingested; the message names the file and the problem,
    ``reason`` is the kind of problem (failures are counted by it)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- identity -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """The checkpoint a results file says it evaluated."""

    suite: str
    model_size: str
    seed: int
    step: int
    variant: str

    def partition(self) -> dict[str, object]:
        return {"suite": self.suite, "model_size": self.model_size, "seed": self.seed, "step": self.step}

    def __str__(self) -> str:
        return f"{self.suite}/{self.model_size}/seed{self.seed}/step{self.step}"


class PatternMismatch(ValueError):
    """A model name the pattern does not read."""


class ModelNamePattern:
    """A model name → (model_size, seed, variant), by a regex with named groups."""

    def __init__(self, pattern: str = DEFAULT_PATTERN) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"--pattern is not a valid regular expression: {error}") from None
        if "size" not in self.regex.groupindex:
            raise ValueError("--pattern needs a named group 'size', e.g. (?P<size>\\d+m)")
        self.pattern = pattern
        self._variant_groups = [g for g in self.regex.groupindex if g not in _IDENTITY_GROUPS]
        self.has_step = "step" in self.regex.groupindex

    def _searched(self, name: str, revision: str | None) -> str:
        """What the pattern is searched in: the model name, or with a ``step`` group
        ``NAME@REVISION``."""
        return f"{name}@{revision or ''}" if self.has_step else name

    def step_of(self, name: str, revision: str | None) -> int | None:
        """The ``step`` group's number, or None when it matches no digits."""
        match = self.regex.search(self._searched(name, revision))
        text = match.group("step") if match else None
        return int(text) if text and text.isdigit() else None

    def parse(self, name: str, revision: str | None = None) -> tuple[str, int, str]:
        """(model_size, seed, variant) of a model name, else PatternMismatch."""
        match = self.regex.search(self._searched(name, revision))
        if match is None or not match.group("size"):
            shown = (
                "the default pattern"
                if self.pattern == DEFAULT_PATTERN
                else f"--pattern {_one_line(self.pattern, 60)!r}"
            )
            raise PatternMismatch(
                f"model name {_one_line(self._searched(name, revision), 60)!r} does not match {shown}"
            )
        seed = match.groupdict().get("seed")
        parts = [match.group(g) for g in self._variant_groups if match.group(g)]
        return match.group("size"), int(seed) if seed else 0, "-".join(parts) or "standard"


def suite_partition(suite: str, variant: str) -> str:
    """``<suite>`` for the standard variant, ``<suite>-<variant>`` otherwise."""
    return suite if variant == "standard" else f"{suite}-{variant}"


def parse_model_args(model_args: object) -> dict[str, str]:
    """lm-eval's ``model_args``: ``"k=v,k=v"`` (as lm-eval splits it) or a dict."""
    if isinstance(model_args, Mapping):
        return {str(k): str(v) for k, v in model_args.items() if v is not None}
    if isinstance(model_args, str):
        pairs = (item.partition("=") for item in model_args.split(",") if item.strip())
        return {key.strip(): value.strip() for key, sep, value in pairs if sep}
    return {}


# -- finding the files ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A results file to ingest and the names its layout gives it."""

    path: Path
    #: File name and folder names up to the folder given on the command line.
    names: tuple[str, ...]


def find_files(paths: Iterable[Path]) -> tuple[list[Candidate], list[tuple[Path, str]], list[Path]]:
    """Results files under the given files and folders, the paths that are not there
    or cannot be results, and the files that are no results at all (skipped).

    Folders are walked recursively: ``*.json`` files are candidates; hidden files
    and folders, and samples JSONL (read through its results file) are passed over;
    any other file (a PDF, a plot, a README) is counted as skipped. A file given
    directly is a candidate when it is ``.json`` and skipped otherwise.
    """
    found: dict[Path, Candidate] = {}
    problems: list[tuple[Path, str]] = []
    not_results: list[Path] = []
    for given in paths:
        path = Path(given).absolute()
        if path.is_dir():
            files = sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
            )
            json_files = [f for f in files if f.suffix == ".json"]
            not_results += [f for f in files if f.suffix not in (".json", ".jsonl")]
            if not json_files:
                problems.append((path, "no lm-eval results files (*.json) in this folder"))
            for file in json_files:
                relative = file.relative_to(path)
                names = (file.name, *reversed(relative.parts[:-1]), path.name)
                found.setdefault(file.resolve(), Candidate(file, names))
        elif path.is_file():
            if path.name.startswith("samples_") and path.suffix == ".jsonl":
                problems.append(
                    (
                        path,
                        "a samples file is read through its results file: give results_<timestamp>.json or its folder",
                    )
                )
            elif path.suffix != ".json":
                not_results.append(path)
            else:
                found.setdefault(path.resolve(), Candidate(path, (path.name, path.parent.name)))
        else:
            problems.append((path, "no such file or folder"))
    return sorted(found.values(), key=lambda c: str(c.path)), problems, list(dict.fromkeys(not_results))


# -- reading one file -----------------------------------------------------------


@dataclass(slots=True)
class ResultFile:
    """One results file read, identified and converted; not written yet."""

    path: Path
    sha256: str
    format: str
    identity: Identity
    model_args: str
    pretrained: str
    revision: str
    num_fewshot: int
    evaluated_at: datetime
    n_tasks: int
    #: None when the file is already in the lake (not converted).
    results: pa.Table | None
    samples: pa.Table | None
    samples_files: list[str]
    finding: str | None


def read_result_file(
    candidate: Candidate, pattern: ModelNamePattern, suite: str, step: int | None = None, done: set[tuple] | None = None
) -> ResultFile:
    """Read, identify and convert one results file; IngestError names the file.

    ``step`` is the step of a file that states no checkpoint (``--step``). A file
    whose key (``_done_key``) is in ``done`` is identified but not converted: its
    ``results`` is None."""
    path = candidate.path
    try:
        return _read(candidate, pattern, suite, step, done or set())
    except IngestError as error:
        raise IngestError(f"{_shown(path)}: {_one_line(str(error))}", error.reason) from None
    except LmEvalFormatError as error:
        raise IngestError(f"{_shown(path)}: {_one_line(str(error))}", "malformed lm-eval output") from None
    except PatternMismatch as error:
        raise IngestError(f"{_shown(path)}: {_one_line(str(error))}", "model name not read by the pattern") from None
    except LakeError as error:
        raise IngestError(f"{_shown(path)}: {_one_line(str(error))}", "unsafe partition value") from None
    except OSError as error:
        raise IngestError(f"{_shown(path)}: cannot read it: {error.strerror or error}", "cannot read") from None
    except (KeyError, TypeError, AttributeError, ValueError) as error:  # lm-eval-like, but misshapen
        raise IngestError(
            f"{_shown(path)}: malformed lm-eval output ({type(error).__name__}: {_one_line(str(error), 80)})",
            "malformed lm-eval output",
        ) from None


def _read(
    candidate: Candidate, pattern: ModelNamePattern, suite: str, step_option: int | None, done: set[tuple]
) -> ResultFile:
    path = candidate.path
    size = path.stat().st_size
    if size > MAX_RESULTS_FILE_BYTES:
        raise IngestError(
            f"{size / 2**20:.0f} MiB, more than a results file has ({MAX_RESULTS_FILE_BYTES // 2**20} MiB at most)",
            "too large",
        )
    content = path.read_bytes()
    document = _parse(content)
    try:
        format_ = detect_format(document)
    except LmEvalFormatError as error:
        raise IngestError(f"not lm-eval output: {error}", "not lm-eval output") from None
    _refuse_non_finite(document, format_)

    config = document.get("config")
    config = config if isinstance(config, Mapping) else {}
    raw_args = config.get("model_args", document.get("model_args"))
    args = parse_model_args(raw_args)
    old_size_names = False
    if isinstance(raw_args, Mapping) and "pretrained" not in raw_args:
        try:
            run = neox_run(raw_args, list(candidate.names), step_option)
        except NeoxIdentityError as error:
            raise IngestError(str(error), error.reason) from None
        pretrained, revision, old_size_names = run.name, f"iteration={run.step}", True
        identity = Identity(suite_partition(suite, run.variant), run.model_size, 0, run.step, run.variant)
        findings = run.findings
    else:
        pretrained = args.get("pretrained") or _text(document.get("model_name")) or _text(config.get("model_name"))
        if not pretrained:
            raise IngestError(
                f"config.model_args {_one_line(repr(raw_args), 50)} names no pretrained model", "no model named"
            )
        revision = args.get("revision") or _text(config.get("model_revision")) or _text(document.get("model_revision"))
        size, seed, variant = pattern.parse(pretrained, revision)
        step = _step(pattern, pretrained, revision, step_option)
        identity = Identity(suite_partition(suite, variant), size, seed, step, variant)
        revision = revision or f"--step {step}"
        findings = []
    for column, value in identity.partition().items():
        validate_partition_value(column, value)
    if identity.step > MAX_STEP:
        raise IngestError(f"step {identity.step} is out of range", "step out of range")

    evaluated_at = evaluated_at_of(document) or _stamped_at(path) or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    shots = _num_fewshot(document, format_)
    sha256 = hashlib.sha256(content).hexdigest()
    named = name_disagreements(candidate.names, identity, old_size_names, shots)
    if _done_key(identity, sha256, path) in done:
        results, samples, samples_files = None, None, []
    else:
        results = results_table(document, evaluated_at, num_fewshot=shots)
        samples, samples_files = _samples(path, document) if format_ == "lm-eval-0.4" else (None, [])
    return ResultFile(
        path=path,
        sha256=sha256,
        format=format_,
        identity=identity,
        model_args=raw_args if isinstance(raw_args, str) else json.dumps(raw_args, sort_keys=True, default=str),
        pretrained=pretrained,
        revision=revision,
        num_fewshot=shots,
        evaluated_at=evaluated_at,
        n_tasks=len(prompt_source_tasks(document) if format_ == "prompt-source" else document["results"]),
        results=results,
        samples=samples,
        samples_files=samples_files,
        finding="; ".join([*findings, *([named] if named else [])]) or None,
    )


def _stamped_at(path: Path) -> datetime | None:
    """The time GPT-NeoX's evaluate.py wrote into the file name
    (``…_eval_results_11-25-2022-08-12-38.json``, taken as UTC), if any."""
    match = _NAME_STAMP.search(path.name)
    try:
        return datetime.strptime(match.group(1), "%m-%d-%Y-%H-%M-%S").replace(tzinfo=UTC) if match else None
    except ValueError:
        return None


def _done_key(identity: Identity, sha256: str, path: Path) -> tuple:
    """What says that a file is in the lake: its checkpoint, content and path, as its
    successful manifest row records them."""
    return (*identity.partition().values(), sha256[:16], str(path))


def _parse(content: bytes) -> object:
    """The JSON document of a file's bytes; IngestError says why not."""
    try:
        return json.loads(content)
    except UnicodeDecodeError as error:
        raise IngestError(
            f"not a text file: not UTF-8 ({error.reason} at byte {error.start})", "not UTF-8 text"
        ) from None
    except json.JSONDecodeError as error:
        raise IngestError(f"not valid JSON: {error}", "not valid JSON") from None
    except RecursionError:
        raise IngestError("JSON nested too deeply to be a results file", "nested too deeply") from None


def _refuse_non_finite(document: Mapping, format_: str) -> None:
    """A NaN or infinite metric value or stderr fails the whole file."""
    entries = prompt_source_tasks(document) if format_ == "prompt-source" else document["results"].items()
    for task, entry in entries:
        if not isinstance(entry, Mapping):
            continue
        for metric, value in entry.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise IngestError(f"{task} {metric} is {value}: only finite numbers are ingested", "non-finite value")


def _step(pattern: ModelNamePattern, pretrained: str, revision: str | None, step_option: int | None) -> int:
    """The step a file states (its ``stepN`` revision, or the pattern's ``step`` group),
    else ``--step``; IngestError when there is none."""
    if pattern.has_step:
        stated = pattern.step_of(pretrained, revision)
    else:
        match = _STEP_REVISION.fullmatch(revision or "")
        stated = int(match.group(1)) if match else None
    if stated is not None:
        return stated
    if step_option is not None:
        return step_option
    raise IngestError(
        f"has no step revision (revision=stepN), got revision {_one_line(str(revision), 40)!r}: "
        "it states no checkpoint; import it with --step N naming its step",
        "states no checkpoint",
    )


def _shown(path: Path) -> str:
    """A path as errors show it: relative to the working folder when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _one_line(text: str, limit: int = 140) -> str:
    """The text on one line, cut to ``limit`` characters (an error line stays short)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num_fewshot(document: Mapping, format_: str) -> int:
    """The file's few-shot count: 0.3's config; 0.4's n-shot (the largest if tasks differ)."""
    if format_ == "lm-eval-0.3":
        shots = document["config"].get("num_fewshot")
        return shots if isinstance(shots, int) and not isinstance(shots, bool) else 0
    n_shot = document.get("n-shot")
    values = [v for v in n_shot.values() if isinstance(v, int)] if isinstance(n_shot, Mapping) else []
    return max(values, default=0)


def _samples(path: Path, document: Mapping) -> tuple[pa.Table | None, list[str]]:
    """The samples files next to a 0.4 results file: ``samples_<task>_<timestamp>.jsonl``
    with the results file's timestamp, one per task of its results."""
    timestamp = path.stem.rpartition("_")[2]
    n_shot = document.get("n-shot") if isinstance(document.get("n-shot"), Mapping) else {}
    tables, files = [], []
    for task in document["results"]:
        file = path.with_name(f"samples_{task}_{timestamp}.jsonl")
        if not file.is_file():
            continue
        try:
            with file.open("rb") as handle:
                lines = [_sample_line(file, number, raw) for number, raw in enumerate(handle, start=1)]
        except OSError as error:
            raise IngestError(
                f"samples file {file.name}: cannot read it: {error.strerror or error}", "unreadable samples file"
            ) from None
        try:
            samples = [line for line in lines if line is not None]  # blank lines are skipped
            tables.append(samples_table(task, samples, _shots(n_shot.get(task))))
        except LmEvalFormatError as error:
            raise IngestError(f"samples file {file.name}: {error}", "unreadable samples file") from None
        files.append(str(file))
    return (pa.concat_tables(tables) if tables else None), files


def _sample_line(file: Path, number: int, raw: bytes) -> Mapping | None:
    """One line of a samples file: a JSON object, or None when blank."""
    where = f"samples file {file.name} line {number}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestError(
            f"{where}: not UTF-8 text ({error.reason} at byte {error.start})", "unreadable samples file"
        ) from None
    if not text.strip():
        return None
    try:
        sample = json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(f"{where}: not valid JSON: {error}", "unreadable samples file") from None
    except RecursionError:
        raise IngestError(f"{where}: JSON nested too deeply to be a sample", "unreadable samples file") from None
    if not isinstance(sample, Mapping):
        raise IngestError(f"{where}: not a JSON object (one sample per line)", "unreadable samples file")
    return sample


def _shots(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def name_disagreements(
    names: Iterable[str], identity: Identity, old_size_names: bool = False, num_fewshot: int | None = None
) -> str | None:
    """What the file's and folders' names say against the file's identity, or None.

    A name says a step (``step1000``), a size (``70m``, ``1.4b``; with
    ``old_size_names``, the first Pythia runs' names such as ``19M`` for 70m too), a
    seed (``seed3``), deduplication (``deduped``), an intervention run
    (``intervention``, ``intervene``) or, compared with ``num_fewshot``, a few-shot
    count (``5shot``, ``zero-shot``). Deduplication is only taken to be denied when
    some name gives a size and none says ``deduped``.
    """
    findings: list[str] = []
    names = [n.removesuffix(".json") for n in names]
    file_name = names[0]

    def where(name: str) -> str:
        return "file name" if name == file_name else f"folder {name!r}"

    deduped = "deduped" in identity.variant
    for name in names:
        for text in dict.fromkeys(_NAME_STEP.findall(name)):
            if int(text) != identity.step:
                findings.append(f"{where(name)} says step {int(text)} but model_args revision is step{identity.step}")
        for text in dict.fromkeys(_NAME_SIZE.findall(name)):
            size = OLD_SIZE_NAMES.get(text.lower(), text.lower()) if old_size_names else text.lower()
            if size != identity.model_size.lower():
                findings.append(f"{where(name)} says size {text} but model_args is size {identity.model_size}")
        for text in dict.fromkeys(_NAME_SEED.findall(name)):
            if int(text) != identity.seed:
                findings.append(f"{where(name)} says seed {int(text)} but model_args is seed {identity.seed}")
        if "deduped" in name.lower() and not deduped:
            findings.append(f"{where(name)} says deduped but model_args is not deduplicated")
        for text in dict.fromkeys(_NAME_SHOTS.findall(name)):
            shots = _SHOT_WORDS.get(text.lower()) if not text.isdigit() else int(text)
            if num_fewshot is not None and shots != num_fewshot:
                findings.append(f"{where(name)} says {text}-shot but the file's num_fewshot is {num_fewshot}")
        if "interven" in name.lower() and "intervention" not in identity.variant:
            findings.append(f"{where(name)} says intervention but the file's run is no intervention")
    if deduped and not any("deduped" in n.lower() for n in names):
        sized = next((n for n in names if _NAME_SIZE.search(n)), None)
        if sized is not None:
            findings.append(f"{where(sized)} gives a size without 'deduped' but model_args is deduplicated")
    return "; ".join(findings) or None


# -- writing ----------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What happened to one file."""

    path: Path
    status: str  # ingested | skipped | failed
    identity: Identity | None = None
    rows: dict[str, int] = field(default_factory=dict)
    finding: str | None = None
    #: One line naming the file and what is wrong (failed).
    error: str | None = None
    #: Why it failed or was skipped, in a few words (failures are counted by it).
    reason: str | None = None


@dataclass(slots=True)
class IngestSummary:
    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def rows(self) -> Counter:
        total: Counter = Counter()
        for outcome in self.outcomes:
            total.update(outcome.rows)
        return total

    @property
    def ok(self) -> bool:
        return not self.of("failed")

    def reasons(self, status: str) -> Counter:
        """How many files of a status each reason accounts for."""
        return Counter(o.reason for o in self.of(status))


def ingest(
    paths: Iterable[Path],
    lake: Lake,
    pattern: ModelNamePattern | None = None,
    suite: str = DEFAULT_SUITE,
    on_start: Callable[[int], None] | None = None,
    on_file: Callable[[Outcome], None] | None = None,
    step: int | None = None,
) -> IngestSummary:
    """Ingest every results file under ``paths``; one failing file never stops the rest.

    ``step`` is the step of files that state no checkpoint (a final model's results);
    without it they fail. ``on_start`` is told how many files were found, ``on_file``
    each file's outcome (for a progress bar).
    """
    pattern = pattern or ModelNamePattern()
    try:
        validate_partition_value("suite", suite)
    except LakeError as error:
        raise LakeError(f"--suite: {error}") from None
    if step is not None and not 0 <= step <= MAX_STEP:
        raise LakeError(f"--step {step} is out of range (0 to {MAX_STEP})")
    candidates, problems, not_results = find_files(paths)
    summary = IngestSummary(
        [Outcome(p, "failed", error=f"{_shown(p)}: {why}", reason=why.partition(":")[0]) for p, why in problems]
        + [Outcome(p, "skipped", reason="not a results file") for p in not_results]
    )
    if on_start:
        on_start(len(candidates))
    done = _already_ingested(lake)
    versions, host = package_versions(), socket.gethostname()
    for candidate in candidates:
        try:
            outcome = _ingest_one(candidate, lake, pattern, suite, step, done, versions, host)
        except Exception as error:  # noqa: BLE001 - one file's failure, whatever it is, is that file's alone
            outcome = Outcome(
                candidate.path,
                "failed",
                reason="unexpected error",
                error=f"{_shown(candidate.path)}: {type(error).__name__}: {_one_line(str(error), 100)}",
            )
        summary.outcomes.append(outcome)
        if on_file:
            on_file(outcome)
    return summary


def _already_ingested(lake: Lake) -> set[tuple]:
    """(suite, model_size, seed, step, config_hash, source) of successful ingests."""
    manifest = lake.read(MANIFEST)
    manifest = manifest.filter(
        pc.and_(pc.equal(manifest["extractor"], EXTRACTOR), pc.equal(manifest["status"], "success"))
    )
    columns = ("suite", "model_size", "seed", "step", "config_hash", "source")
    return set(zip(*(manifest[c].to_pylist() for c in columns), strict=True))


def _ingest_one(candidate, lake, pattern, suite, step, done, versions, host) -> Outcome:
    started = datetime.now(UTC)
    try:
        file = read_result_file(candidate, pattern, suite, step, done)
    except IngestError as error:
        return Outcome(candidate.path, "failed", error=str(error), reason=error.reason)
    identity = file.identity
    key = _done_key(identity, file.sha256, file.path)
    if file.results is None:
        return Outcome(file.path, "skipped", identity, finding=file.finding, reason="already in the lake")
    extraction_id = new_extraction_id()
    tables = {EVAL_RESULTS: file.results}
    if file.samples is not None:
        tables[EVAL_SAMPLES] = file.samples
    tables[EVAL_FILES] = pa.Table.from_pylist([_file_row(file)], schema=_without_id(EVAL_FILES))
    rows = {}
    try:
        for dataset, table in tables.items():
            ids = pa.array([extraction_id] * table.num_rows, pa.string())
            lake.write(dataset, identity.partition(), extraction_id, table.add_column(0, "extraction_id", ids))
            rows[dataset.name] = table.num_rows
        finished = datetime.now(UTC)
        manifest = {
            "extraction_id": extraction_id,
            "extractor": EXTRACTOR,
            "status": "success",
            "started_at": started,
            "finished_at": finished,
            "duration_s": (finished - started).total_seconds(),
            "rows": list(rows.items()),
            "config_hash": file.sha256[:16],
            "source": str(file.path),
            "device": None,
            "host": host,
            "package_versions": list(versions.items()),
            "error": None,
        }
        lake.write(
            MANIFEST, identity.partition(), extraction_id, pa.Table.from_pylist([manifest], schema=MANIFEST.schema)
        )
    except LakeError as error:
        return Outcome(
            file.path,
            "failed",
            identity,
            error=f"{_shown(file.path)}: {_one_line(str(error))}",
            reason="the lake refused the write",
        )
    done.add(key)
    return Outcome(file.path, "ingested", identity, rows, file.finding)


def _file_row(file: ResultFile) -> dict:
    return {
        "path": str(file.path),
        "sha256": file.sha256,
        "format": file.format,
        "model_args": file.model_args,
        "pretrained": file.pretrained,
        "revision": file.revision,
        "variant": file.identity.variant,
        "num_fewshot": file.num_fewshot,
        "evaluated_at": file.evaluated_at,
        "n_tasks": file.n_tasks,
        "samples_files": file.samples_files,
        "finding": file.finding,
    }


def _without_id(dataset) -> pa.Schema:
    return dataset.schema.remove(dataset.schema.get_field_index("extraction_id"))
