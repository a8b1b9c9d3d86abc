"""Reading marts from the warehouse for charts, and the report's errors."""

from __future__ import annotations

import math
import re
from typing import Any

import altair as alt
import duckdb


class ReportError(RuntimeError):
    """The report cannot be built; the message names the file and the problem."""


class WarehouseError(ReportError):
    """The warehouse file is missing or cannot be read."""


# What a figure function returns: any top-level Altair chart.
AnyChart = alt.Chart | alt.LayerChart | alt.FacetChart


class MartError(ReportError):
    """A mart exists but does not have the shape a chart needs."""


def database_path(con: duckdb.DuckDBPyConnection) -> str:
    """The file behind ``con`` (``":memory:"`` for an in-memory database)."""
    row = con.execute(
        "select path from duckdb_databases() where database_name = current_database()"
    ).fetchone()
    return row[0] if row and row[0] else ":memory:"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def mart_schema(con: duckdb.DuckDBPyConnection, mart: str) -> str | None:
    """The schema holding a table or view called ``mart``, or None if there is none.

    dbt may put marts in ``main`` or in a custom schema; ``main`` wins when the
    name exists in several schemas.
    """
    rows = con.execute(
        """
        select table_schema
        from information_schema.tables
        where table_catalog = current_database() and table_name = ?
        order by table_schema = 'main' desc, table_schema
        """,
        [mart],
    ).fetchall()
    return rows[0][0] if rows else None


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; Vega treats null as missing.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mart_relation(
    con: duckdb.DuckDBPyConnection, mart: str, columns: tuple[str, ...]
) -> str | None:
    """The quoted ``schema.mart`` to select from, or None if the mart is missing.

    Raises MartError, naming the database file, when the mart lacks one of ``columns``.
    """
    schema = mart_schema(con, mart)
    if schema is None:
        return None
    present = {
        name
        for (name,) in con.execute(
            "select column_name from information_schema.columns "
            "where table_catalog = current_database() "
            "and table_schema = ? and table_name = ?",
            [schema, mart],
        ).fetchall()
    }
    missing = [c for c in columns if c not in present]
    if missing:
        raise MartError(
            f"mart {mart} in {database_path(con)} lacks column(s) {', '.join(missing)}; "
            "rebuild the warehouse (`polypythias build`)"
        )
    return f"{_quote(schema)}.{_quote(mart)}"


def query_rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    """The rows of a query as dicts keyed by column name, NaN/inf turned into None."""
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [
        {name: _clean(value) for name, value in zip(names, row)} for row in cursor.fetchall()
    ]


def read_mart(
    con: duckdb.DuckDBPyConnection,
    mart: str,
    columns: tuple[str, ...],
    order_by: str,
) -> list[dict[str, Any]] | None:
    """The mart's rows as dicts (only ``columns``), or None if it is missing or empty.

    Raises MartError, naming the database file, when the mart lacks a column.
    """
    relation = mart_relation(con, mart, columns)
    if relation is None:
        return None
    select = ", ".join(_quote(c) for c in columns)
    rows = query_rows(con, f"select {select} from {relation} order by {order_by}")
    return rows or None


def size_order(rows: list[dict[str, Any]]) -> list[str]:
    """Model sizes from smallest to largest nominal parameter count (unknown last)."""
    params: dict[str, float | None] = {}
    for row in rows:
        size, n = row["model_size"], row["nominal_parameters"]
        if size not in params or (n is not None and (params[size] is None or n < params[size])):
            params[size] = n
    return sorted(params, key=lambda s: (params[s] is None, params[s] or 0.0, s))


_SIZE_NAME = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kmbt])")
_SIZE_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def nominal_parameters(model_size: str) -> float | None:
    """Parameters a size's name states ("410m" → 4.1e8, "1.4b" → 1.4e9), else None.

    The same rule as the dbt macro ``nominal_parameters``, for marts without the column.
    """
    match = _SIZE_NAME.fullmatch(model_size.lower())
    return float(match[1]) * _SIZE_SUFFIX[match[2]] if match else None


def sizes_by_name(rows: list[dict[str, Any]]) -> list[str]:
    """``size_order`` for rows without ``nominal_parameters``: parsed from the size name."""
    return size_order(
        [{"model_size": r["model_size"], "nominal_parameters": nominal_parameters(r["model_size"])}
         for r in rows]
    )  # fmt: skip
