"""The lake: Hive-partitioned Parquet datasets under one root URI.

    <root>/<dataset>/suite=<s>/model_size=<m>/seed=<k>/step=<n>/<extraction_id>.parquet

A file becomes visible only once complete: it is written under a hidden
temporary name (``.<id>.parquet.tmp``, which neither DuckDB's ``*.parquet`` glob
nor pyarrow's discovery picks up) and renamed into place. Nothing is updated in
place: a re-extraction writes a new ``extraction_id`` and staging keeps the
latest successful one.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from polypythias.warehouse.schemas import (
    DATASETS,
    PARTITION_TYPES,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    Dataset,
)

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_TEMPORARY_SUFFIX = ".parquet.tmp"
_EXTRACTION_ID = re.compile(r"^\d{8}T\d{6}\d{6}Z-[0-9a-f]{8}$")


#: Object stores a lake may live on (through pyarrow's filesystems).
REMOTE_SCHEMES = ("s3", "gs")


class LakeError(Exception):
    """A lake operation that cannot go ahead; the message names what and where."""


def validate_partition_value(column: str, value: object) -> str:
    """Return the path text of one partition value, refusing anything unsafe.

    Partition values become folder names, so a value with ``/``, ``..`` or ``=``
    (or a negative seed or step) would escape or corrupt the layout.
    """
    expected = PARTITION_TYPES.get(column)
    if expected is None:
        raise LakeError(f"unknown partition column {column!r}")
    if pa.types.is_integer(expected):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LakeError(f"{column} must be a non-negative integer, got {value!r}")
        return str(value)
    text = str(value)
    if not _SAFE_VALUE.match(text) or ".." in text:
        raise LakeError(
            f"{column} {text!r} is not a safe partition value: use letters, digits, "
            "'.', '_', '+' and '-' (no '/', '..' or '='), starting with a letter or digit"
        )
    return text


def new_extraction_id(now: datetime | None = None) -> str:
    """A time-sortable unique id: ``20261128T120915123456Z-1a2b3c4d``."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


def _validate_extraction_id(extraction_id: str) -> None:
    if not _EXTRACTION_ID.match(extraction_id):
        raise LakeError(f"malformed extraction id {extraction_id!r}")


class Lake:
    """A lake rooted at a local folder or a filesystem URI (``s3://…``, ``gs://…``)."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if "://" in text:
            scheme = text.partition("://")[0].lower()
            if scheme not in REMOTE_SCHEMES:
                raise LakeError(
                    f"the lake {text}: {scheme}:// is not supported; give a folder or an "
                    f"{' / '.join(f'{s}://' for s in REMOTE_SCHEMES)} URI"
                )
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(text)
            except (OSError, pa.ArrowException) as error:
                raise LakeError(f"the lake {text} cannot be reached: {' '.join(str(error).split())}") from None
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(text).resolve())
        self.uri = text if "://" in text else self.root
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    @property
    def is_local(self) -> bool:
        """A folder on a POSIX filesystem (local disk or a shared NFS mount)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    # -- layout ---------------------------------------------------------------

    def dataset_dir(self, dataset: Dataset) -> str:
        return f"{self.root}/{dataset.name}"

    def partition_dir(self, dataset: Dataset, partition: dict[str, object]) -> str:
        if set(partition) != set(dataset.partition_by):
            raise LakeError(
                f"{dataset.name} is partitioned by {', '.join(dataset.partition_by)}; "
                f"got {', '.join(sorted(partition))}"
            )
        parts = [f"{column}={validate_partition_value(column, partition[column])}" for column in dataset.partition_by]
        return "/".join([self.dataset_dir(dataset), *parts])

    # -- writing --------------------------------------------------------------

    def write(
        self,
        dataset: Dataset,
        partition: dict[str, object],
        extraction_id: str,
        table: pa.Table,
    ) -> str:
        """Write one partition file atomically and return its path.

        The table must match the dataset's schema exactly (column names, types and
        order; metadata is added here). Rows are sorted by the dataset's key.
        """
        _validate_extraction_id(extraction_id)
        directory = self.partition_dir(dataset, partition)
        table = self._conform(dataset, table)
        if table.num_rows and dataset.sort_by:
            table = _sorted(table, dataset.sort_by)
        final = f"{directory}/{extraction_id}.parquet"
        temporary = f"{directory}/.{extraction_id}{_TEMPORARY_SUFFIX}"
        try:
            self.fs.create_dir(directory, recursive=True)
            pq.write_table(
                table,
                temporary,
                filesystem=self.fs,
                compression="zstd",
                # Dictionary pages pay off for repeated strings only; on floats
                # they cost time and make files larger.
                use_dictionary=[f.name for f in table.schema if pa.types.is_string(f.type)],
                # so that `polypythias verify` finds a flipped bit in any data page
                write_page_checksum=True,
            )
            self.fs.move(temporary, final)
        except OSError as error:
            self._discard(temporary)
            raise LakeError(f"cannot write {final}: {error}") from error
        return final

    def check_writable(self, datasets) -> None:
        """Refuse, naming the folder, a lake where one of `datasets` cannot be written
        (a read-only folder, a file in its place): before a job loads any checkpoint,
        rather than failing each one. Writes and deletes a hidden file in each."""
        if not self.is_local:
            return
        for dataset in datasets:
            directory = Path(self.dataset_dir(dataset))
            probe = directory / f".write-check-{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}"
            try:
                directory.mkdir(parents=True, exist_ok=True)
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                raise LakeError(f"cannot write into {directory}: {error.strerror or error}") from None

    def discard_unfinished(self, partition: dict[str, object]) -> int:
        """Delete the temporary files a killed writer left in the partition's folder of
        every dataset partitioned like it; returns how many. Only for a caller that
        holds the partition's claim: no live writer is then writing there."""
        discarded = 0
        for dataset in DATASETS.values():
            if set(dataset.partition_by) != set(partition):
                continue
            selector = pafs.FileSelector(self.partition_dir(dataset, partition), allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                if info.base_name.startswith(".") and info.base_name.endswith(_TEMPORARY_SUFFIX):
                    self._discard(info.path)
                    discarded += 1
        return discarded

    def _conform(self, dataset: Dataset, table: pa.Table) -> pa.Table:
        expected = dataset.schema
        if table.schema.names != expected.names:
            raise LakeError(f"{dataset.name}: columns {table.schema.names} do not match the schema {expected.names}")
        try:
            return table.cast(expected)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise LakeError(f"{dataset.name}: rows do not fit the schema: {error}") from error

    def _discard(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except OSError:
            pass

    # -- reading --------------------------------------------------------------

    def read(self, dataset: Dataset, filter: ds.Expression | None = None) -> pa.Table:
        """Every row of a dataset, partition columns included (empty if none yet).

        Refuses files written with another schema version, naming the file.
        """
        partition_schema = pa.schema([pa.field(c, PARTITION_TYPES[c]) for c in dataset.partition_by])
        full_schema = pa.schema(list(partition_schema) + list(dataset.schema))
        directory = self.dataset_dir(dataset)
        if self.fs.get_file_info(directory).type == pafs.FileType.NotFound:
            return full_schema.empty_table()
        selector = pafs.FileSelector(directory, recursive=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet"):
                problem = layout_problem(dataset, info.path[len(directory) + 1 :])
                if problem:
                    raise LakeError(f"{info.path}: {problem}")
        dataset_ = ds.dataset(
            directory,
            # The schema of today's files: a column added since (nullable, at the
            # end) reads as null from a file written before it.
            schema=full_schema,
            filesystem=self.fs,
            format="parquet",
            partitioning=ds.partitioning(partition_schema, flavor="hive"),
        )
        _check_schema_versions(dataset_)
        try:
            return dataset_.to_table(filter=filter).select(full_schema.names).cast(full_schema)
        except (OSError, pa.ArrowException) as error:
            raise LakeError(f"cannot read {directory}: {' '.join(str(error).split())}") from None

    def read_partition(self, dataset: Dataset, partition: dict[str, object]) -> pa.Table:
        """The rows of one partition (without its partition columns): cheaper than a
        filtered `read`, which lists every file of the dataset."""
        directory = self.partition_dir(dataset, partition)
        selector = pafs.FileSelector(directory, allow_not_found=True)
        paths = sorted(
            info.path
            for info in self.fs.get_file_info(selector)
            if info.base_name.endswith(".parquet") and not info.base_name.startswith(".")
        )
        if not paths:
            return dataset.schema.empty_table()
        files = ds.dataset(paths, schema=dataset.schema, filesystem=self.fs, format="parquet")
        _check_schema_versions(files)
        try:
            return files.to_table()
        except (OSError, pa.ArrowException) as error:
            raise LakeError(f"cannot read {directory}: {' '.join(str(error).split())}") from None

    def check_schema_versions(self) -> int:
        """Refuse a lake holding a file of another schema version (or an unreadable
        one), naming the first; returns how many files were checked.

        For readers that do not go through `read` (dbt reads the files directly).
        Only each file's footer is read, so this costs a small fraction of a build.
        """
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            return 0
        if info.type != pafs.FileType.Directory:
            raise LakeError(f"the lake {self.uri} is not a folder")
        checked = 0
        for name in DATASETS:
            selector = pafs.FileSelector(f"{self.root}/{name}", allow_not_found=True, recursive=True)
            # Every *.parquet counts, hidden or not: it is what dbt's glob reads.
            paths = sorted(
                i.path
                for i in self.fs.get_file_info(selector)
                if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
            )
            for path in paths:
                problem = layout_problem(DATASETS[name], path[len(self.root) + len(name) + 2 :])
                if problem:
                    raise LakeError(f"{path}: {problem}")
                try:
                    with self.fs.open_input_file(path) as file:
                        footer = pq.read_metadata(file)
                except (OSError, pa.ArrowException) as error:
                    raise LakeError(f"{path} is not a readable Parquet file: {error}") from None
                _refuse_version(path, (footer.metadata or {}).get(SCHEMA_VERSION_KEY))
                # A file of another dataset would be read by name (union_by_name), its
                # columns as nulls: refuse it here, naming it. (The top-level columns:
                # the Parquet schema's names are its leaves, `key` and `value` of a map.)
                foreign = set(footer.schema.to_arrow_schema().names) - set(DATASETS[name].schema.names)
                if foreign:
                    raise LakeError(
                        f"{path} is not a {name} file: it holds columns {name} does not have "
                        f"({', '.join(sorted(foreign)[:3])})"
                    )
                checked += 1
        return checked


def _refuse_version(path: str, version: bytes | None) -> None:
    if version != str(SCHEMA_VERSION).encode():
        raise LakeError(
            f"{path} has schema version "
            f"{version.decode(errors='replace') if version else 'none'}, this polypythias reads "
            f"version {SCHEMA_VERSION}: re-extract into a new lake or upgrade"
        )


def _check_schema_versions(dataset: ds.Dataset) -> None:
    """Refuse files written with another schema version, or unreadable, naming the first."""
    for fragment in dataset.get_fragments():
        try:
            metadata = fragment.physical_schema.metadata or {}
        except (OSError, pa.ArrowException) as error:
            raise LakeError(f"{fragment.path} is not a readable Parquet file: {' '.join(str(error).split())}") from None
        _refuse_version(fragment.path, metadata.get(SCHEMA_VERSION_KEY))


def layout_problem(dataset: Dataset, relative: str) -> str | None:
    """What is wrong with a file's place in its dataset (`relative` to the dataset's
    folder: partition folders, then the file), or None. A folder other than
    `<column>=<safe value>` in the dataset's order would be misread by every reader
    (DuckDB fails on a `seed=zero` deep into a build; `model_size=..` is skipped)."""
    *folders, _ = relative.split("/")
    if len(folders) != len(dataset.partition_by):
        return f"not {len(dataset.partition_by)} folders deep ({'/'.join(f'{c}=…' for c in dataset.partition_by)})"
    for column, folder in zip(dataset.partition_by, folders, strict=True):
        name, equals, value = folder.partition("=")
        if name != column or not equals:
            return f"folder {folder!r} should be {column}=<value>"
        typed: object = value
        if pa.types.is_integer(PARTITION_TYPES[column]):
            if not value.isascii() or not value.isdigit():
                return f"folder {folder!r}: {column} must be a non-negative integer"
            typed = int(value)
        try:
            validate_partition_value(column, typed)
        except LakeError as error:
            return f"folder {folder!r}: {error}"
    return None


def _sorted(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """The table sorted by `columns`; extractors mostly emit rows in order already,
    and finding the order is far cheaper than gathering the (list) columns."""
    order = pc.sort_indices(table, sort_keys=[(column, "ascending") for column in columns])
    if np.array_equal(order.to_numpy(), np.arange(table.num_rows)):
        return table
    return table.take(order)


def dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise LakeError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
