"""``polypythias ingest training-map``: a training map computed elsewhere, into the lake.

A training map gives each checkpoint of a suite's runs of one size a latent state
(and, optionally, a 1-D score for plotting), e.g. the published maps of Hu et al.
(2023). The file is a table with a header row naming the columns ``step``,
``seed``, ``state`` and optionally ``score`` (any order, any case), separated by
tabs or commas: ``.tsv``/``.tab`` files are read as tab-separated, ``.csv`` files as
comma-separated, anything else by its header line (a tab in it: tabs, else commas).
What pandas writes by default is read as released: an unnamed first column (an
empty header field) is the row index and is ignored; other columns the map does
not use (the PolyPythias map's ``group``) are ignored and named in
``TrainingMap.ignored_columns``.

Every row is checked and an error names the file and the line: ``step``, ``seed``
and ``state`` must be non-negative integers (within 64 bits; ``state`` within 32),
``score`` a finite number or empty (no score), each seed × step at most once; the
index column, integers; blank lines are skipped. The suite and
the model size are given on the command line (a file does not say them) and are
checked like every partition value of the lake.

The map becomes the ``training_map_states`` partition of that suite × model_size,
written as one new file (atomically: a temporary name renamed into place). The lake
is append-only: a re-import adds a newer file, which supersedes the earlier ones
(staging reads only the newest).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from polypythias.warehouse.lake import Lake, LakeError, new_extraction_id, validate_partition_value
from polypythias.warehouse.schemas import TRAINING_MAP_STATES

REQUIRED = ("step", "seed", "state")
OPTIONAL = ("score",)
_INTEGER = re.compile(r"^\d+$")
_INDEX = re.compile(r"^-?\d+$")
#: The largest value each integer column holds (its type in the lake).
_MAXIMUM = {"step": 2**63 - 1, "seed": 2**63 - 1, "state": 2**31 - 1}
#: The column pandas writes for the row index: no name.
_INDEX_COLUMN = ""
_TAB_SUFFIXES = {".tsv", ".tab"}


class TrainingMapError(Exception):
    """A training-map file that cannot be imported; the message names the file (and line)."""


@dataclass(frozen=True, slots=True)
class TrainingMap:
    """One file read and checked; not written yet."""

    path: Path
    sha256: str
    delimiter: str
    seeds: list[int]
    steps: list[int]
    states: list[int]
    scores: list[float | None]
    #: Columns of the file the map does not use (the row index is not among them).
    ignored_columns: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return len(self.steps)

    @property
    def n_runs(self) -> int:
        return len(set(self.seeds))

    @property
    def n_states(self) -> int:
        return len(set(self.states))


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import wrote."""

    map: TrainingMap
    suite: str
    model_size: str
    file: str
    #: Earlier imports of the partition the new one supersedes (they stay in the
    #: append-only lake; staging reads the newest).
    superseded: int


def read_training_map(path: Path) -> TrainingMap:
    """Read and check one file; TrainingMapError names the file and the line."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise TrainingMapError(f"{path}: cannot read the file: {error.strerror or error}") from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TrainingMapError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    lines = text.splitlines()
    header_number = next((i for i, line in enumerate(lines, start=1) if line.strip()), None)
    if header_number is None:
        raise TrainingMapError(f"{path}: the file is empty; expected a header with step, seed, state[, score]")
    delimiter = _delimiter(path, lines[header_number - 1])

    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    seeds: list[int] = []
    steps: list[int] = []
    states: list[int] = []
    scores: list[float | None] = []
    seen: dict[tuple[int, int], int] = {}
    columns: dict[str, int] | None = None
    try:
        for fields in rows:
            number = rows.line_num
            if not any(f.strip() for f in fields):
                continue
            if columns is None:
                columns = _header(path, number, fields, delimiter)
                continue
            if len(fields) != columns["__width__"]:
                raise TrainingMapError(
                    f"{path} line {number}: {len(fields)} fields, but the header has "
                    f"{columns['__width__']} ({_separator_name(delimiter)}-separated)"
                )
            if _INDEX_COLUMN in columns and not _INDEX.match(fields[columns[_INDEX_COLUMN]].strip()):
                raise TrainingMapError(
                    f"{path} line {number}: the unnamed first column holds "
                    f"{fields[columns[_INDEX_COLUMN]]!r}, not a row index"
                )
            step = _non_negative_integer(path, number, "step", fields[columns["step"]])
            seed = _non_negative_integer(path, number, "seed", fields[columns["seed"]])
            state = _non_negative_integer(path, number, "state", fields[columns["state"]])
            score = _score(path, number, fields[columns["score"]]) if "score" in columns else None
            if (seed, step) in seen:
                raise TrainingMapError(
                    f"{path} line {number}: seed {seed} step {step} is already given on line {seen[seed, step]}"
                )
            seen[seed, step] = number
            seeds.append(seed)
            steps.append(step)
            states.append(state)
            scores.append(score)
    except csv.Error as error:
        raise TrainingMapError(
            f"{path} line {rows.line_num}: malformed {_separator_name(delimiter)}-separated line: {error}"
        ) from None
    if not steps:
        raise TrainingMapError(f"{path}: no rows after the header (line {header_number})")
    ignored = tuple(name for name in columns if name not in (*REQUIRED, *OPTIONAL, _INDEX_COLUMN, "__width__"))
    return TrainingMap(path, hashlib.sha256(content).hexdigest(), delimiter, seeds, steps, states, scores, ignored)


def _delimiter(path: Path, header: str) -> str:
    suffix = path.suffix.lower()
    if suffix in _TAB_SUFFIXES:
        return "\t"
    if suffix == ".csv":
        return ","
    return "\t" if "\t" in header else ","


def _separator_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else "comma"


def _header(path: Path, number: int, fields: list[str], delimiter: str) -> dict[str, int]:
    """Column positions by name (lowercase; the row index's is the empty name)."""
    names = [f.strip().lower() for f in fields]
    if _INDEX_COLUMN in names[1:]:
        where = names.index(_INDEX_COLUMN, 1) + 1
        raise TrainingMapError(
            f"{path} line {number}: column {where} has no name (only a row index, first, may have none)"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TrainingMapError(
            f"{path} line {number}: column(s) {', '.join(repeated)} appear more than once in the header"
        )
    missing = [n for n in REQUIRED if n not in names]
    if missing and len(names) == 1:
        raise TrainingMapError(
            f"{path} line {number}: one column {fields[0].strip()!r}: expected step, seed, state and optionally "
            f"score, {_separator_name(delimiter)}-separated"
        )
    unknown = [
        f.strip() for f, name in zip(fields, names, strict=True) if name not in (*REQUIRED, *OPTIONAL, _INDEX_COLUMN)
    ]
    if missing:
        # a misspelt column is the likely reason a required one is missing: name both
        lacks = (
            f"unknown column(s) {', '.join(map(repr, unknown))} and no {', '.join(missing)}"
            if unknown
            else f"the header lacks {', '.join(missing)}"
        )
        raise TrainingMapError(
            f"{path} line {number}: {lacks}; expected step, seed, state "
            f"and optionally score ({_separator_name(delimiter)}-separated)"
        )
    columns = {name: i for i, name in enumerate(names)}
    columns["__width__"] = len(names)
    return columns


def _non_negative_integer(path: Path, number: int, column: str, text: str) -> int:
    value = text.strip()
    if not _INTEGER.match(value):
        raise TrainingMapError(f"{path} line {number}: {column} {text[:40]!r} is not a non-negative integer")
    if len(value) > 19 or int(value) > _MAXIMUM[column]:
        raise TrainingMapError(
            f"{path} line {number}: {column} {value[:40]} is out of range (at most {_MAXIMUM[column]})"
        )
    return int(value)


def _score(path: Path, number: int, text: str) -> float | None:
    value = text.strip()
    if not value:
        return None
    try:
        score = float(value)
    except ValueError:
        raise TrainingMapError(f"{path} line {number}: score {text!r} is not a number") from None
    if not math.isfinite(score):
        raise TrainingMapError(f"{path} line {number}: score {text!r} is not a finite number (leave it empty for none)")
    return score


def ingest_training_map(path: Path, lake: Lake, suite: str, model_size: str) -> Imported:
    """Import one training-map file as the suite × model_size's map; it supersedes any
    earlier import, which stays in the lake (append-only) but is no longer read.

    Raises TrainingMapError (bad file, suite or size) or LakeError (the lake refused).
    """
    for column, value in (("suite", suite), ("model_size", model_size)):
        try:
            validate_partition_value(column, value)
        except LakeError as error:
            option = "--suite" if column == "suite" else "--model-size"
            raise TrainingMapError(f"{option}: {error}") from None
    the_map = read_training_map(path)
    partition = {"suite": suite, "model_size": model_size}
    extraction_id = new_extraction_id()
    n = the_map.n_rows
    table = pa.Table.from_pydict(
        {
            "extraction_id": [extraction_id] * n,
            "seed": the_map.seeds,
            "step": the_map.steps,
            "state": the_map.states,
            "score": the_map.scores,
            "source_file": [str(Path(path).absolute())] * n,
            "source_sha256": [the_map.sha256] * n,
            "ingested_at": [datetime.now(UTC)] * n,
        },
        schema=TRAINING_MAP_STATES.schema,
    )
    superseded = _n_imports(lake, lake.partition_dir(TRAINING_MAP_STATES, partition))
    written = lake.write(TRAINING_MAP_STATES, partition, extraction_id, table)
    return Imported(the_map, suite, model_size, written, superseded)


def _n_imports(lake: Lake, directory: str) -> int:
    """How many imports the partition already holds."""
    selector = pafs.FileSelector(directory, allow_not_found=True)
    return sum(
        info.type == pafs.FileType.File and info.path.endswith(".parquet") for info in lake.fs.get_file_info(selector)
    )
