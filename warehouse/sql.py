"""Ad-hoc SQL on the warehouse: one query, printed as a table, CSV or JSON.

`sql` is a reader. The query must be one statement, and a query (SELECT, and what
DuckDB reads as one: FROM, VALUES, WITH, SHOW, DESCRIBE, SUMMARIZE); anything else
(COPY, EXPORT, ATTACH, INSTALL, LOAD, SET, PRAGMA, CALL, EXPLAIN, which can run a
COPY) is refused. It runs on a read-only connection with external access disabled
and the configuration locked, extensions neither installed nor loaded: no file
outside the lake can be read or written, no database attached. The warehouse's
staging views read the lake's Parquet files, so the lake folders its views name
(read from the views themselves) stay readable, and only those.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from polypythias.warehouse.schemas import DATASETS


class WarehouseError(Exception):
    """The warehouse is missing or a query failed; the message says which."""


#: A view's lake root: the folder before `/<dataset>/**/*.parquet` in its read_parquet.
_LAKE_GLOB = re.compile(r"'([^']+)/(?:" + "|".join(map(re.escape, DATASETS)) + r")/\*\*/\*\.parquet'")


def query(db_path: Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one query read-only; returns (column names, rows)."""
    if not db_path.is_file():
        raise WarehouseError(f"{db_path}: no warehouse yet; run `polypythias build` first")
    try:
        with reader(db_path) as con:
            statements = con.extract_statements(sql)
            if not statements:
                raise WarehouseError(f"{db_path}: the query holds no SQL statement")
            if len(statements) > 1:
                raise WarehouseError(f"{db_path}: give one statement per call, not {len(statements)}")
            kind = statements[0].type
            if kind != duckdb.StatementType.SELECT:
                raise WarehouseError(
                    f"{db_path}: `sql` only reads: a {kind.name} statement is refused; "
                    "give a query (select, from, with, show, describe, summarize)"
                )
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall()
    except duckdb.Error as error:
        raise WarehouseError(f"{db_path}: {error}") from None


def reader(db_path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse that can read the lake folders its
    views name and no other file, attach nothing, load no extension, and cannot
    change these settings."""
    con = duckdb.connect(
        str(db_path),
        read_only=True,
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    try:
        roots = lake_roots(con)
        if roots:
            con.execute("set allowed_directories = $1", [[f"{root}/" for root in roots]])
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def lake_roots(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The local lake folders the warehouse's views read (a remote lake's views, on
    s3:// or gs://, cannot be read without network extensions: refused)."""
    views = con.execute("select sql from duckdb_views() where not internal").fetchall()
    roots = {match for (text,) in views for match in _LAKE_GLOB.findall(text or "")}
    return sorted(root for root in roots if root.startswith("/") and "://" not in root)


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def to_csv(columns: list[str], rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_plain(v) for v in row] for row in rows])
    return buffer.getvalue()


def to_json(columns: list[str], rows: list[tuple]) -> str:
    records = [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(records, indent=2, default=str)
