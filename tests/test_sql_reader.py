"""`polypythias sql` is a reader (issue 18): each escape the adversary tried is refused
with one line, nothing is written, and the lake stays readable through the views."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from polypythias.cli import app


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def warehouse(tmp_path) -> dict[str, Path]:
    """A warehouse as `build` leaves it: a mart table and a staging view reading the
    lake with read_parquet; beside it another database and a file outside the lake."""
    lake = tmp_path / "lake"
    partition = lake / "token_stats" / "suite=s" / "model_size=m" / "seed=0" / "step=0"
    partition.mkdir(parents=True)
    lake_file = partition / "x.parquet"
    pq.write_table(pa.table({"extraction_id": ["x", "x"], "doc_id": [1, 2]}), lake_file)
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table fct_loss as select 7 as n_seeds")
        con.execute("create schema staging")
        con.execute(
            f"create view staging.stg_lake__token_stats as select * from "
            f"read_parquet('{lake}/token_stats/**/*.parquet', hive_partitioning = true)"
        )
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("create table precious as select 1 as a")
    secret = tmp_path / "secret.csv"
    secret.write_text("name,value\nkey,hunter2\n")
    return {"db": db, "lake": lake, "lake_file": lake_file, "other": other, "secret": secret, "tmp": tmp_path}


def test_a_query_reads_marts_and_the_lake_through_the_views(warehouse):
    result = invoke("sql", "select n_seeds from fct_loss", "--db", warehouse["db"], "--format", "csv")
    assert result.exit_code == 0 and result.stdout == "n_seeds\n7\n"
    result = invoke(
        "sql",
        "select sum(doc_id) as s, any_value(seed) as seed from staging.stg_lake__token_stats",
        "--db",
        warehouse["db"],
        "--format",
        "csv",
    )
    assert result.exit_code == 0 and result.stdout == "s,seed\n3,0\n"
    for query in ["show tables", "describe fct_loss", "from fct_loss", "with a as (select 1 as x) select * from a"]:
        assert invoke("sql", query, "--db", warehouse["db"]).exit_code == 0, query


def _escapes(w: dict[str, Path]) -> dict[str, str]:
    return {
        "attach and drop": f"attach '{w['other']}' as o; drop table o.precious",
        "attach": f"attach '{w['other']}' as o",
        "copy over a lake file": f"copy (select 1 as a) to '{w['lake_file']}' (format parquet)",
        "copy elsewhere": f"copy (select 1 as a) to '{w['tmp'] / 'out.csv'}'",
        "export database": f"export database '{w['tmp'] / 'exported'}'",
        "install": "install httpfs",
        "load": "load httpfs",
        "two statements": "select 1; select 2",
        "read any file": f"select * from read_csv('{w['secret']}')",
        "read /etc/passwd": "select * from read_csv('/etc/passwd', sep = ':')",
        "read text": f"select content from read_text('{w['secret']}')",
        "escape the lake": f"select * from read_csv('{w['lake']}/../secret.csv')",
        "glob": "select * from glob('/etc/*')",
        "unlock": "set enable_external_access = true",
        "pragma": "pragma enable_profiling",
        "explain analyze copy": f"explain analyze copy (select 1) to '{w['lake_file']}'",
    }


@pytest.mark.parametrize(
    "escape",
    [
        "attach and drop",
        "attach",
        "copy over a lake file",
        "copy elsewhere",
        "export database",
        "install",
        "load",
        "two statements",
        "read any file",
        "read /etc/passwd",
        "read text",
        "escape the lake",
        "glob",
        "unlock",
        "pragma",
        "explain analyze copy",
    ],
)
def test_each_escape_is_refused_with_one_line_and_nothing_written(warehouse, escape):
    before = {p: p.read_bytes() for p in warehouse["tmp"].rglob("*") if p.is_file()}
    result = invoke("sql", _escapes(warehouse)[escape], "--db", warehouse["db"])
    assert result.exit_code == 2
    assert result.stdout == "" and "hunter2" not in result.output and "root:" not in result.output
    assert result.stderr.startswith(f"error: {warehouse['db']}: ")
    after = {p: p.read_bytes() for p in warehouse["tmp"].rglob("*") if p.is_file()}
    assert after == before
    with duckdb.connect(str(warehouse["other"]), read_only=True) as con:
        assert con.execute("select a from precious").fetchall() == [(1,)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select 1; select 2", "give one statement per call, not 2"),
        ("copy (select 1) to '/tmp/x.csv'", "a COPY statement is refused"),
        ("select * from read_csv('/etc/passwd')", "Permission Error"),
        ("set threads = 1", "a SET statement is refused"),
    ],
)
def test_the_refusal_says_why(warehouse, query, expected):
    result = invoke("sql", query, "--db", warehouse["db"])
    assert result.exit_code == 2 and expected in " ".join(result.stderr.split())
