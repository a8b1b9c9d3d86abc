"""The report: files, self-containment, the loss chart's spec, and missing data."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import duckdb
import pytest

from polypythias.analyses import loss_curves, marts, report
from polypythias.analyses.report import build_report
from polypythias.warehouse.sql import WarehouseError

MART_DDL = """
create table fct_loss_consistency (
    suite varchar,
    model_size varchar,
    nominal_parameters double,
    step bigint,
    n_seeds bigint,
    loss_median double,
    loss_q25 double,
    loss_q75 double,
    loss_mean double,
    loss_std double,
    loss_min double,
    loss_max double
)
"""

STEPS = (0, 1, 8, 64, 512)
# Named so that alphabetical order ("big" < "small") differs from size order.
SIZES = (("small", 2e5, 6.0), ("big", 1e6, 5.0))


def mart_rows(suite: str = "micro") -> list[tuple]:
    rows = []
    for size, params, start in SIZES:
        for i, step in enumerate(STEPS):
            median = start - 0.7 * i
            rows.append(
                (
                    suite, size, params, step, 3,
                    median, median - 0.1, median + 0.15,
                    median + 0.01, 0.12, median - 0.3, median + 0.3,
                )
            )  # fmt: skip
    return rows


def make_warehouse(path: Path, rows: list[tuple] | None, *, mart: bool = True) -> Path:
    con = duckdb.connect(str(path))
    try:
        con.execute("create table unrelated (x integer)")
        if mart:
            con.execute(MART_DDL)
            if rows:
                con.executemany(
                    "insert into fct_loss_consistency values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
    finally:
        con.close()
    return path


def table_as_dicts(path: Path) -> list[dict[str, Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cursor = con.execute("select * from fct_loss_consistency")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        con.close()


def html_spec(page: str) -> dict[str, Any]:
    """The Vega-Lite spec inside a chart's own HTML file (Altair's inline template)."""
    start = page.index("const spec = ") + len("const spec = ")
    spec, _ = json.JSONDecoder().raw_decode(page, start)
    return spec


def index_specs(page: str) -> dict[str, dict[str, Any]]:
    marker = '<script type="application/json" id="figure-specs">'
    start = page.index(marker) + len(marker)
    end = page.index("</script>", start)
    return json.loads(page[start:end])


def chart_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    data = spec["data"]
    if "values" in data:
        return data["values"]
    return spec["datasets"][data["name"]]


def sort_key(row: dict[str, Any]) -> tuple:
    return (row["suite"], row["model_size"], row["step"])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """One warehouse and its report, shared by the read-only checks below."""
    root = tmp_path_factory.mktemp("report")
    db = make_warehouse(root / "warehouse.duckdb", mart_rows())
    index = build_report(db, root / "out")
    return db, index


def test_writes_index_html_and_png(built):
    db, index = built
    out = index.parent
    assert index == out / "index.html"
    assert index.is_file()
    assert (out / "loss_curves.html").is_file()
    png = (out / "loss_curves.png").read_bytes()
    width, height = png_size(png)
    # Rendered at scale 2: wider than any chart at scale 1 would be.
    assert width > 1000 and height > 500
    assert len(png) > 20_000
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize("name", ["index.html", "loss_curves.html"])
def test_html_is_self_contained(built, name):
    page = (built[1].parent / name).read_text(encoding="utf-8")
    assert "https://cdn" not in page
    assert '<script src="http' not in page
    assert "<link" not in page
    assert "vegaEmbed" in page


def test_index_lists_each_figure(built):
    db, index = built
    page = index.read_text(encoding="utf-8")
    assert "<h1>polypythias report</h1>" in page
    assert "Generated " in page and " UTC" in page
    assert str(db.resolve()) in page
    assert loss_curves.TITLE in page
    assert loss_curves.DESCRIPTION in page
    assert 'href="loss_curves.html"' in page
    assert 'href="loss_curves.png"' in page
    assert 'id="vis-loss_curves"' in page
    # Vega libraries inlined once, not once per figure.
    chart_page = (index.parent / "loss_curves.html").read_text(encoding="utf-8")
    assert len(page) < 1.5 * len(chart_page)
    # Only the loss mart is in this warehouse: the other figures say they have no data.
    loss_section = page[page.index('<section id="loss_curves">') :]
    assert "No data yet" not in loss_section[: loss_section.index("</section>")]


def test_index_embeds_the_same_spec_as_the_chart_file(built):
    out = built[1].parent
    from_index = index_specs((out / "index.html").read_text(encoding="utf-8"))
    from_file = html_spec((out / "loss_curves.html").read_text(encoding="utf-8"))
    assert from_index["loss_curves"] == from_file


def test_spec_draws_line_over_iqr_band_on_log_steps(built):
    spec = html_spec((built[1].parent / "loss_curves.html").read_text(encoding="utf-8"))
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["area", "line"]  # band first, line drawn over it
    band, line = spec["layer"]
    assert band["encoding"]["y"]["field"] == "loss_q25"
    assert band["encoding"]["y2"]["field"] == "loss_q75"
    assert 0.15 <= band["mark"]["opacity"] <= 0.35
    assert line["encoding"]["y"]["field"] == "loss_median"
    assert line["encoding"]["y"]["title"] == "mean token loss (nats)"
    for layer in (band, line):
        x = layer["encoding"]["x"]
        assert x["field"] == "step_plus_one"
        assert x["scale"]["type"] == "log"
        assert "log scale" in x["title"] and "+ 1" in x["title"]
    assert {"calculate": "datum.step + 1", "as": "step_plus_one"} in spec["transform"]
    tooltips = {t["field"] for t in line["encoding"]["tooltip"]}
    assert {"step", "model_size", "loss_median", "iqr", "n_seeds"} <= tooltips


def test_sizes_are_coloured_in_parameter_order(built):
    spec = html_spec((built[1].parent / "loss_curves.html").read_text(encoding="utf-8"))
    for layer in spec["layer"]:
        assert layer["encoding"]["color"]["scale"]["domain"] == ["small", "big"]


def test_chart_data_is_the_mart_rows_unaggregated(built):
    db, index = built
    spec = html_spec((index.parent / "loss_curves.html").read_text(encoding="utf-8"))
    assert sorted(chart_rows(spec), key=sort_key) == sorted(table_as_dicts(db), key=sort_key)
    # Nothing in the chart summarises rows.
    text = json.dumps(spec)
    for word in ('"aggregate"', '"joinaggregate"', '"window"', '"bin"', '"density"'):
        assert word not in text


def test_warehouse_opened_read_only_and_closed(tmp_path, monkeypatch):
    db = make_warehouse(tmp_path / "w.duckdb", mart_rows())
    calls = []
    real_connect = duckdb.connect

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(report.duckdb, "connect", spy)
    build_report(db, tmp_path / "out")
    assert calls == [{"read_only": True}]
    monkeypatch.undo()
    # A read-write connection in this process fails while a read-only one is open.
    real_connect(str(db)).close()


def test_missing_mart_is_no_data_yet(tmp_path):
    db = make_warehouse(tmp_path / "w.duckdb", None, mart=False)
    with duckdb.connect(str(db)) as con:  # a warehouse: it has dim_checkpoints
        con.execute("create table dim_checkpoints (step bigint)")
    out = tmp_path / "out"
    out.mkdir()
    (out / "loss_curves.png").write_bytes(b"stale")  # from an earlier run
    page = build_report(db, out).read_text(encoding="utf-8")
    assert "No data yet" in page
    assert "fct_loss_consistency is not in the warehouse" in page
    assert str(db.resolve()) in page
    assert loss_curves.TITLE in page
    assert not (out / "loss_curves.png").exists()
    assert not (out / "loss_curves.html").exists()
    assert "vegaEmbed" not in page  # nothing to draw, no 900 kB of JavaScript


def test_empty_mart_is_no_data_yet(tmp_path):
    db = make_warehouse(tmp_path / "w.duckdb", [])
    page = build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    assert "No data yet" in page
    assert "has no rows" in page


def test_a_database_that_is_no_warehouse_is_refused(tmp_path):
    db = make_warehouse(tmp_path / "w.duckdb", None, mart=False)  # only an unrelated table
    with pytest.raises(WarehouseError, match="is not a polypythias warehouse"):
        build_report(db, tmp_path / "out")
    assert not (tmp_path / "out" / "index.html").exists()


def test_missing_warehouse_names_the_file(tmp_path):
    db = tmp_path / "nowhere.duckdb"
    with pytest.raises(WarehouseError, match="nowhere.duckdb"):
        build_report(db, tmp_path / "out")
    assert not (tmp_path / "out" / "index.html").exists()


def test_mart_without_expected_columns_names_the_file(tmp_path):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table fct_loss_consistency (suite varchar, step bigint)")
    con.close()
    with pytest.raises(marts.MartError, match=r"w\.duckdb.*loss_median"):
        build_report(db, tmp_path / "out")


def test_failure_mid_way_keeps_the_previous_index(tmp_path, monkeypatch):
    db = make_warehouse(tmp_path / "w.duckdb", mart_rows())
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("previous report")

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "_index_html", broken)
    with pytest.raises(RuntimeError, match="boom"):
        build_report(db, out)
    assert (out / "index.html").read_text() == "previous report"
    assert not list(out.glob(".*.tmp"))


def test_several_suites_are_faceted(tmp_path):
    db = make_warehouse(tmp_path / "w.duckdb", mart_rows("micro") + mart_rows("other"))
    con = duckdb.connect(str(db), read_only=True)
    try:
        spec = loss_curves.chart(con).to_dict()
    finally:
        con.close()
    assert spec["facet"]["field"] == "suite"
    marks = [layer["mark"]["type"] for layer in spec["spec"]["layer"]]
    assert marks == ["area", "line"]
    assert len(chart_rows(spec)) == 2 * len(mart_rows())


def test_registry_entries_are_well_formed():
    names = [figure.name for figure in report.FIGURES]
    assert "loss_curves" in names
    assert {"performance", "gender_bias", "probe_accuracy", "probe_layers"} <= set(names)
    assert len(names) == len(set(names))
    for figure in report.FIGURES:
        assert figure.title and figure.description and figure.mart
        assert "\n" not in figure.description
    with pytest.raises(ValueError):
        report.Figure("Bad Name", "t", "d", "m", loss_curves.chart)


def test_charts_use_the_polypythias_theme(built):
    import altair as alt

    from polypythias.analyses import theme

    assert alt.theme.active == theme.THEME_NAME
    spec = html_spec((built[1].parent / "loss_curves.html").read_text(encoding="utf-8"))
    assert spec["background"] == "white"
    assert spec["config"]["range"]["category"] == theme.CATEGORY
