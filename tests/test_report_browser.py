"""The report in a real browser: headless Debian Chromium draws every chart, offline.

A hand-built warehouse holds every mart the report reads (the loss, evaluation and
probe marts from the other chart tests' builders, and the issue-5 marts from
tests/stability_fixtures.py), so every figure has a chart; ``check_report_in_browser``
must find marks in each and no console error. The negative tests break a page in the
ways the check exists to catch — a spec Vega-Lite rejects, a console error, a chart
with no marks, a request to the network — and the check must fail on each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import stability_fixtures as fx
from browser import check_report_in_browser
from polypythias.analyses import loss_curves, report
from polypythias.analyses.report import build_report
from test_eval_charts import eval_rows, make_eval_warehouse
from test_probe_charts import make_probe_warehouse, probe_marts
from test_report import make_warehouse, mart_rows

pytestmark = pytest.mark.slow

SPECS_MARKER = '<script type="application/json" id="figure-specs">'


def full_warehouse(path: Path) -> tuple[Path, dict]:
    make_warehouse(path, mart_rows())  # fct_loss_consistency
    make_eval_warehouse(path, eval_rows())
    make_probe_warehouse(path, probe_marts())
    stability = fx.stability_marts()
    fx.make_stability_warehouse(path, stability)
    return path, stability


def test_every_figure_renders_in_chromium(tmp_path):
    db, stability = full_warehouse(tmp_path / "w.duckdb")
    index = build_report(db, tmp_path / "out")
    page = index.read_text(encoding="utf-8")
    assert "No data yet" not in page  # the warehouse feeds every figure
    shot = tmp_path / "screenshot.png"
    marks = check_report_in_browser(index, shot)
    assert set(marks) == {f.name for f in report.FIGURES}
    assert all(n >= 1 for n in marks.values())
    # Each checkpoint of the training map is a point (plus the runs' lines).
    assert marks["training_maps"] >= len(stability["fct_training_phases"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_report(tmp_path_factory) -> Path:
    """A one-figure report (the loss chart), the base of the broken pages below."""
    root = tmp_path_factory.mktemp("small")
    db = make_warehouse(root / "w.duckdb", mart_rows())
    return build_report(db, root / "out", figures=[report.FIGURES[0]])


def with_specs(page: str, change) -> str:
    start = page.index(SPECS_MARKER) + len(SPECS_MARKER)
    end = page.index("</script>", start)
    specs = json.loads(page[start:end])
    change(specs)
    return page[:start] + json.dumps(specs) + page[end:]


def broken_spec(specs):
    specs[loss_curves.NAME]["layer"][1]["mark"] = "no_such_mark"


def no_marks(specs):
    specs[loss_curves.NAME]["data"] = {"values": []}


def inject(html: str):
    """Insert ``html`` before the page's own </body> (the last one: the inlined Vega
    bundle holds the string too)."""

    def change(page: str) -> str:
        head, tail = page.rsplit("</body>", 1)
        return head + html + "\n</body>" + tail

    return change


@pytest.mark.parametrize(
    "breakage,expected",
    [
        (lambda page: with_specs(page, broken_spec), r"failed to draw|console error"),
        (
            inject("<script>console.error('something broke');</script>"),
            r"console error: something broke",
        ),
        (lambda page: with_specs(page, no_marks), r"chart loss_curves draws no marks"),
        (inject('<img src="http://192.0.2.1/tracker.png">'), r"network request .*192\.0\.2\.1"),
        (inject("<script>undefinedFunction();</script>"), r"page error: .*undefinedFunction"),
    ],
    ids=["broken-spec", "console-error", "no-marks", "network", "page-error"],
)
def test_the_check_fails_on_a_broken_page(small_report, tmp_path, breakage, expected):
    page = small_report.read_text(encoding="utf-8")
    broken = small_report.parent / f"broken-{tmp_path.name}.html"
    broken.write_text(breakage(page), encoding="utf-8")
    with pytest.raises(AssertionError, match=expected):
        check_report_in_browser(broken, tmp_path / "shot.png", timeout_s=20)
    assert (tmp_path / "shot.png").is_file()  # written for the record even on failure


def test_the_unbroken_small_page_passes(small_report, tmp_path):
    marks = check_report_in_browser(small_report, tmp_path / "shot.png")
    assert set(marks) == {loss_curves.NAME} and marks[loss_curves.NAME] >= 1
