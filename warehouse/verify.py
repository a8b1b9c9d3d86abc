"""The lake checks itself.

A manifest row that settled a checkpoint × extractor (``success``, or ``diverged``
with what could still be computed) records how many rows it wrote to each dataset.
Its data is *damaged* when one of those files is missing, unreadable or holds
another number of rows: `status` counts it as damaged, `extract` redoes it (under a
new extraction id; the damaged one is left as it is) and the marts never count it
as present (dbt checks the same in ``stg_lake__manifest``).

`verify` reads every file of the lake in full: its folder layout, that it is
readable Parquet (page checksums included, where the writer stored them), its schema
version, that its rows are those of the extraction it is named after, and every
settled manifest row's row counts against the files.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from polypythias.warehouse.lake import Lake, LakeError, layout_problem
from polypythias.warehouse.schemas import DATASETS, MANIFEST, SCHEMA_VERSION, SCHEMA_VERSION_KEY, SUITE_GRID

#: Manifest statuses whose recorded rows must be in the lake.
RECORDED = ("success", "diverged")

_FILE_NAME = re.compile(r"^(?P<extraction_id>\d{8}T\d{12}Z-[0-9a-f]{8})\.parquet$")


def data_damage(
    lake: Lake, partition: dict[str, object], extraction_id: str, rows: Iterable[tuple[str, int]]
) -> str | None:
    """Why the data a manifest row records (dataset → rows) is not in the partition's
    files as recorded, or None when it is. Reads only the files' footers."""
    problems = []
    for name, recorded in rows:
        if name not in DATASETS:
            problems.append(f"it records rows of an unknown dataset {name!r}")
            continue
        path = f"{lake.partition_dir(DATASETS[name], partition)}/{extraction_id}.parquet"
        try:
            with lake.fs.open_input_file(path) as file:
                found = pq.read_metadata(file).num_rows
        except FileNotFoundError:
            problems.append(f"{path} is missing")
            continue
        except (OSError, pa.ArrowException):
            problems.append(f"{path} is not readable Parquet")
            continue
        if found != recorded:
            problems.append(f"{path} holds {found} rows, the manifest records {recorded}")
    return "; ".join(problems) or None


def damaged_extractions(lake: Lake, manifest: pa.Table) -> dict[tuple, str]:
    """(suite, model_size, seed, step, extractor, extraction_id) → what is wrong, for
    every settled row of `manifest` (as `Lake.read` returns it) whose data is damaged."""
    manifest = manifest.filter(pc.is_in(manifest["status"], pa.array(RECORDED)))
    columns = ["suite", "model_size", "seed", "step", "extractor", "extraction_id", "rows"]
    rows = list(zip(*(manifest[c].to_pylist() for c in columns), strict=True))

    def check(row) -> str | None:
        suite, size, seed, step, _, extraction_id, recorded = row
        partition = {"suite": suite, "model_size": size, "seed": seed, "step": step}
        return data_damage(lake, partition, extraction_id, recorded)

    # Footers are read in threads: the time goes to opening files, not to Python.
    with ThreadPoolExecutor(8) as pool:
        problems = list(pool.map(check, rows))
    return {tuple(row[:6]): problem for row, problem in zip(rows, problems, strict=True) if problem}


@dataclass(slots=True)
class Verification:
    """What `verify` read, and every problem it found (one line each, naming the file)."""

    files: Counter = field(default_factory=Counter)
    rows: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    #: Data files no manifest row records: attempts that died before their manifest
    #: row (invisible to every reader), or copies; not damage.
    unrecorded: int = 0
    #: Damaged extractions that a later intact extraction of the same checkpoint and
    #: extractor redid (the lake is append-only: they stay, and are not read).
    redone: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(lake: Lake) -> Verification:
    """Read every file of the lake and check it (see the module's docstring)."""
    started = time.perf_counter()
    result = Verification()
    info = lake.fs.get_file_info(lake.root)
    if info.type == pafs.FileType.NotFound:
        raise LakeError(f"the lake {lake.uri} does not exist")
    if info.type != pafs.FileType.Directory:
        raise LakeError(f"the lake {lake.uri} is not a folder")
    #: (dataset, partition folder, extraction id) → rows in that file
    file_rows: dict[tuple[str, str, str], int] = {}
    manifests: list[tuple[str, pa.Table]] = []
    for name, dataset in DATASETS.items():
        selector = pafs.FileSelector(lake.dataset_dir(dataset), allow_not_found=True, recursive=True)
        for entry in sorted(lake.fs.get_file_info(selector), key=lambda e: e.path):
            if entry.type != pafs.FileType.File or not entry.base_name.endswith(".parquet"):
                continue
            table = _read(lake, entry.path, dataset, result.problems)
            if table is None:
                continue
            result.files[name] += 1
            result.rows[name] += table.num_rows
            result.bytes[name] += entry.size or 0
            folder, _, base = entry.path.rpartition("/")
            named = _FILE_NAME.match(base)
            if not named:
                result.problems.append(
                    f"{entry.path}: not named <extraction id>.parquet, so no manifest row can record it"
                )
                continue
            extraction_id = named["extraction_id"]
            ids = pc.unique(table["extraction_id"]).to_pylist()
            if ids and ids != [extraction_id]:
                result.problems.append(
                    f"{entry.path}: holds rows of extraction {', '.join(map(str, ids))}, "
                    f"not of {extraction_id} it is named after (a copy?)"
                )
                continue
            file_rows[(name, folder, extraction_id)] = table.num_rows
            if dataset is MANIFEST:
                manifests.append((folder, table))
    recorded = set()
    #: (manifest folder, extractor) → [(extraction id, what is wrong with its data or None)]
    settled: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for folder, table in manifests:
        for row in table.select(["extraction_id", "extractor", "status", "rows"]).to_pylist():
            if row["status"] not in RECORDED:
                continue
            wrong = []
            for name, count in row["rows"]:
                data_folder = _sibling(lake, folder, name)
                key = (name, data_folder, row["extraction_id"])
                recorded.add(key)
                found = file_rows.get(key)
                data_file = f"{data_folder}/{row['extraction_id']}.parquet"
                if found is None:
                    wrong.append(f"records {count} {name} rows, but {data_file} is missing or unreadable")
                elif found != count:
                    wrong.append(f"records {count} {name} rows, but {data_file} holds {found}")
            where = f"{folder}/{row['extraction_id']}.parquet ({row['extractor']}, {row['status']})"
            problem = f"{where}: {'; '.join(wrong)}" if wrong else None
            settled.setdefault((folder, row["extractor"]), []).append((row["extraction_id"], problem))
    for attempts in settled.values():
        # A damaged extraction that a later intact one redid is history, not a problem.
        newest_problem = max(attempts, key=lambda attempt: attempt[0])[1]
        if newest_problem:
            result.problems.append(newest_problem)
        else:
            result.redone += sum(1 for _, problem in attempts if problem)
    # extract records the suite grid of every suite it extracts (ingest does not)
    extracted_suites = {
        _partition_value(folder, "suite")
        for folder, table in manifests
        if set(table["extractor"].to_pylist()) - {"lm_eval_ingest"}
    }
    for suite in sorted(extracted_suites):
        if not any(key[1].endswith(f"/suite={suite}") for key in file_rows if key[0] == SUITE_GRID.name):
            result.problems.append(
                f"{lake.partition_dir(SUITE_GRID, {'suite': suite})}: no suite grid, though the manifest holds "
                f"extractions of suite {suite}: the marts cannot tell which checkpoints are missing; "
                "`polypythias extract` records it again"
            )
    checkpoint_datasets = {n for n, d in DATASETS.items() if d.partition_by == MANIFEST.partition_by} - {MANIFEST.name}
    unrecorded = [key for key in file_rows if key[0] in checkpoint_datasets and key not in recorded]
    result.unrecorded = len(unrecorded)
    # Data no settled manifest row of its checkpoint records: a lost manifest file
    # (or an attempt killed between its data and its manifest row, which the next
    # `extract` redoes).
    covered = {(name, folder) for name, folder, _ in recorded}
    for name, folder in sorted({(name, folder) for name, folder, _ in unrecorded} - covered):
        result.problems.append(
            f"{folder}: {name} data that no manifest row records, and no settled manifest row "
            "of this checkpoint: a lost manifest file, or an attempt killed half-way; "
            "`polypythias extract` redoes it"
        )
    result.seconds = time.perf_counter() - started
    return result


def _read(lake: Lake, path: str, dataset, problems: list[str]) -> pa.Table | None:
    """The file's rows, or None after recording why they cannot be trusted."""
    relative = path[len(lake.dataset_dir(dataset)) + 1 :]
    problem = layout_problem(dataset, relative)
    if problem:
        problems.append(f"{path}: {problem}")
        return None
    try:
        with lake.fs.open_input_file(path) as file:
            parquet = pq.ParquetFile(file, page_checksum_verification=True)
            version = (parquet.schema_arrow.metadata or {}).get(SCHEMA_VERSION_KEY)
            if version != str(SCHEMA_VERSION).encode():
                problems.append(
                    f"{path}: schema version {version.decode(errors='replace') if version else 'none'}, "
                    f"not {SCHEMA_VERSION}"
                )
                return None
            mismatch = _schema_mismatch(parquet.schema_arrow, dataset.schema)
            if mismatch:
                problems.append(f"{path}: {mismatch}")
                return None
            return parquet.read()
    except (OSError, pa.ArrowException) as error:
        problems.append(f"{path}: not readable Parquet ({' '.join(str(error).split())})")
        return None


def _schema_mismatch(found: pa.Schema, expected: pa.Schema) -> str | None:
    """Why a file's columns are not its dataset's, or None. A file written before a
    nullable column was added may lack it (readers read it as null)."""
    for column in found:
        if expected.get_field_index(column.name) < 0:
            return f"column {column.name!r} is not in the dataset's schema (a file of another dataset?)"
        if not column.type.equals(expected.field(column.name).type):
            return f"column {column.name!r} is {column.type}, not {expected.field(column.name).type}"
    missing = [f.name for f in expected if not f.nullable and found.get_field_index(f.name) < 0]
    if missing:
        return f"lacks the column(s) {', '.join(missing)}"
    return None


def _partition_value(folder: str, column: str) -> str:
    return next(part.partition("=")[2] for part in folder.split("/") if part.startswith(f"{column}="))


def _sibling(lake: Lake, manifest_folder: str, dataset: str) -> str:
    """The folder of the same checkpoint partition in another dataset."""
    prefix = lake.dataset_dir(MANIFEST)
    return f"{lake.root}/{dataset}{manifest_folder[len(prefix) :]}"
