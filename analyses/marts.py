"""Reading marts from the warehouse for charts, and the report's errors."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import altair as alt
import duckdb


class ReportError(RuntimeError):
    """The report cannot be built; the message names the file and the problem."""


# What a figure function returns: any top-level Altair chart.
AnyChart = alt.Chart | alt.LayerChart | alt.FacetChart


class MartError(ReportError):
    """A mart exists but does not have the shape a chart needs."""


def database_path(con: duckdb.DuckDBPyConnection) -> str:
    """The file behind ``con`` (``":memory:"`` for an in-memory database)."""
    row = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()
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


def mart_relation(con: duckdb.DuckDBPyConnection, mart: str, columns: tuple[str, ...]) -> str | None:
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


def query_rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """The rows of a query as dicts keyed by column name, NaN/inf turned into None."""
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [{name: _clean(value) for name, value in zip(names, row)} for row in cursor.fetchall()]


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


def run_status_sql(outliers: str, alias: str, *, outlier: str, stable: str, unknown: str) -> tuple[str, str]:
    """The select expression and the join that label each row of table ``alias`` by its
    run in ``outliers`` (the quoted ``fct_run_outliers``): ``outlier`` when any of the
    run's signals fires, ``stable`` when none does, ``unknown`` when the run is not in it.
    """
    status = f"case when o.is_outlier then '{outlier}' when not o.is_outlier then '{stable}' else '{unknown}' end"
    # is_outlier repeats on each signal's row of a run; one value per run.
    join = f"""
        left join (
            select suite, model_size, seed, bool_or(is_outlier) as is_outlier
            from {outliers}
            group by suite, model_size, seed
        ) as o
            on {alias}.suite = o.suite and {alias}.model_size = o.model_size
            and {alias}.seed = o.seed
        """
    return status, join


def size_order(rows: list[dict[str, Any]]) -> list[str]:
    """Model sizes from smallest to largest nominal parameter count (unknown last)."""
    params: dict[str, float | None] = {}
    for row in rows:
        size, n = row["model_size"], row["nominal_parameters"]
        if size not in params or (n is not None and (params[size] is None or n < params[size])):
            params[size] = n
    return sorted(params, key=lambda s: (params[s] is None, params[s] or 0.0, s))


RUNS_DIM = "dim_runs"


def size_parameters(con: duckdb.DuckDBPyConnection) -> dict[str, float | None]:
    """Each model size's nominal parameter count, read from ``dim_runs`` (the dbt macro
    ``nominal_parameters`` states the rule), for marts without the column.

    Empty when ``dim_runs`` is missing: ``sizes_in_order`` then orders sizes by name.
    """
    relation = mart_relation(con, RUNS_DIM, ("model_size", "nominal_parameters"))
    if relation is None:
        return {}
    return dict(
        con.execute(
            f"select model_size, min(nominal_parameters) from {relation} "
            "where model_size is not null group by model_size"
        ).fetchall()
    )


def sizes_in_order(sizes: Iterable[str], parameters: Mapping[str, float | None]) -> list[str]:
    """``size_order`` of ``sizes``, each size's parameter count from ``parameters``
    (``size_parameters``); a size it lacks counts as unknown."""
    return size_order([{"model_size": s, "nominal_parameters": parameters.get(s)} for s in sizes])
