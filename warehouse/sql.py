"""Ad-hoc SQL on the warehouse: one query, printed as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb


class WarehouseError(Exception):
    """The warehouse is missing or a query failed; the message says which."""


def query(db_path: Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one query read-only; returns (column names, rows)."""
    if not db_path.is_file():
        raise WarehouseError(f"{db_path}: no warehouse yet; run `polypythias build` first")
    try:
        with duckdb.connect(str(db_path), read_only=True) as con:
            cursor = con.execute(sql)
            if cursor is None:
                raise WarehouseError(f"{db_path}: the query holds no SQL statement")
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall()
    except duckdb.Error as error:
        raise WarehouseError(f"{db_path}: {error}") from None


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
