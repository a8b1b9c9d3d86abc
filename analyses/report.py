"""The report: every registered figure as HTML and PNG, plus one page that shows them all.

A figure is a chart module's function ``(con) -> chart | None`` with a name, a title
and a one-line description; ``FIGURES`` lists them, so a new chart is one more entry.
``build_report`` opens the warehouse read-only, asks each figure for its chart, and
writes into ``out_dir``:

- ``<name>.html`` — the chart alone, self-contained (Vega libraries inlined, no CDN);
- ``<name>.png`` — a static rendering through vl-convert at twice the size;
- ``index.html`` — one self-contained page with every chart embedded (the Vega
  libraries inlined once), each figure's title, description and links to its files.
  A figure whose mart is missing or empty (or lacks the rows it draws) is listed as
  "no data yet".

Every file is written to a temporary name in ``out_dir`` and renamed into place, the
index last, so a failure part-way never leaves a half-written page.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import vl_convert
from altair.utils import spec_to_html

from ..warehouse.sql import WarehouseError
from . import (
    gender_bias,
    integrity,
    loss_curves,
    outliers,
    performance,
    probes,
    theme,
    training_maps,
)
from .marts import AnyChart, mart_schema

INDEX_NAME = "index.html"
PNG_SCALE = 2.0
# Export buttons only: the "open in editor" and "view source" actions go online.
# SVG, not canvas: the marks are elements of the page (crisp text, countable by tests).
EMBED_OPTIONS: dict[str, Any] = {
    "mode": "vega-lite",
    "renderer": "svg",
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}

# vl-convert's name of the Vega-Lite version Altair writes: v6.4.1 -> "v6_4".
_VL_CONVERT_VERSION = "_".join(alt.SCHEMA_VERSION.split(".")[:2])

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Figure:
    """One chart in the report."""

    name: str
    """File stem and page anchor: lowercase letters, digits, underscores."""
    title: str
    description: str
    """One line saying what the chart shows."""
    mart: str
    """The mart the chart reads; used to tell "missing" from "empty"."""
    build: Callable[[duckdb.DuckDBPyConnection], AnyChart | None]
    """Returns the chart, or None when the mart is missing, empty, or lacks its rows."""
    needs: str | None = None
    """What the figure needs from a non-empty mart (e.g. which tasks), for the page."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"figure name {self.name!r} must match {_NAME_RE.pattern}")


FIGURES: list[Figure] = [
    Figure(
        name=loss_curves.NAME,
        title=loss_curves.TITLE,
        description=loss_curves.DESCRIPTION,
        mart=loss_curves.MART,
        build=loss_curves.chart,
    ),
    Figure(
        name=loss_curves.SPIKES_NAME,
        title=loss_curves.SPIKES_TITLE,
        description=loss_curves.SPIKES_DESCRIPTION,
        mart=loss_curves.TRAINING_LOG,
        build=loss_curves.spikes_chart,
    ),
    Figure(
        name=performance.NAME,
        title=performance.TITLE,
        description=performance.DESCRIPTION,
        mart=performance.MART,
        build=performance.chart,
    ),
    Figure(
        name=gender_bias.NAME,
        title=gender_bias.TITLE,
        description=gender_bias.DESCRIPTION,
        mart=gender_bias.MART,
        build=gender_bias.chart,
        needs="rows for " + ", ".join(f"{t} {m}" for t, m, _ in gender_bias.MEASURES),
    ),
    Figure(
        name=probes.NAME,
        title=probes.TITLE,
        description=probes.DESCRIPTION,
        mart=probes.MART,
        build=probes.chart,
        needs=f"{probes.ACCURACY} rows",
    ),
    Figure(
        name=probes.LAYERS_NAME,
        title=probes.LAYERS_TITLE,
        description=probes.LAYERS_DESCRIPTION,
        mart=probes.MART,
        build=probes.layer_chart,
        needs=f"{probes.ACCURACY} rows",
    ),
    Figure(
        name=training_maps.NAME,
        title=training_maps.TITLE,
        description=training_maps.DESCRIPTION,
        mart=training_maps.MART,
        build=training_maps.chart,
    ),
    Figure(
        name=outliers.NAME,
        title=outliers.TITLE,
        description=outliers.DESCRIPTION,
        mart=outliers.MART,
        build=outliers.chart,
    ),
    Figure(
        name=outliers.LEAD_NAME,
        title=outliers.LEAD_TITLE,
        description=outliers.LEAD_DESCRIPTION,
        mart=outliers.FORECAST_MART,
        build=outliers.lead_chart,
        needs="run that is an outlier at the end (is_outlier_at_end)",
    ),
    Figure(
        name=integrity.NAME,
        title=integrity.TITLE,
        description=integrity.DESCRIPTION,
        mart=integrity.MART,
        build=integrity.chart,
    ),
]


@dataclass(slots=True)
class _Rendered:
    figure: Figure
    chart: AnyChart | None
    no_data: str | None  # why there is no chart, for the page


def build_report(
    db_path: Path,
    out_dir: Path,
    figures: Sequence[Figure] | None = None,
) -> Path:
    """Render every figure from the warehouse at ``db_path`` into ``out_dir``.

    Returns the path of ``out_dir/index.html``. Raises WarehouseError, naming the
    file, when the warehouse does not exist or cannot be opened. A figure whose mart
    is missing or empty is reported on the page as "no data yet", not raised.
    """
    db_path = Path(db_path).expanduser().resolve()
    out_dir = Path(out_dir)
    figures = list(FIGURES if figures is None else figures)
    names = [f.name for f in figures]
    if len(set(names)) != len(names) or INDEX_NAME.removesuffix(".html") in names:
        raise ValueError(f"figure names must be unique and not 'index': {names}")

    rendered = _build_charts(db_path, figures)

    out_dir.mkdir(parents=True, exist_ok=True)
    specs: dict[str, dict[str, Any]] = {}
    for item in rendered:
        name = item.figure.name
        if item.chart is None:
            # Don't leave a previous run's files behind a "no data yet" entry.
            for suffix in (".html", ".png"):
                (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
            continue
        # Validated once here; the HTML and the PNG are made from the dict (Altair's
        # to_html and save would each validate again: a third of the report's time).
        spec = specs[name] = item.chart.to_dict()
        _write_atomic(out_dir / f"{name}.html", _standalone_html(spec).encode("utf-8"))
        _write_atomic(
            out_dir / f"{name}.png", vl_convert.vegalite_to_png(spec, vl_version=_VL_CONVERT_VERSION, scale=PNG_SCALE)
        )

    page = _index_html(db_path, rendered, specs, generated=datetime.now(UTC))
    index = out_dir / INDEX_NAME
    _write_atomic(index, page.encode("utf-8"))
    return index


#: Every warehouse `polypythias build` writes has this mart, even over an empty lake.
WAREHOUSE_MARK = "dim_checkpoints"


def _build_charts(db_path: Path, figures: list[Figure]) -> list[_Rendered]:
    if not db_path.is_file():
        raise WarehouseError(f"warehouse {db_path} does not exist; build it first (`polypythias build`)")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        raise WarehouseError(f"cannot open warehouse {db_path} read-only: {exc}") from exc
    try:
        if all(mart_schema(con, mart) is None for mart in {WAREHOUSE_MARK, *(f.mart for f in figures)}):
            raise WarehouseError(
                f"{db_path} is not a polypythias warehouse: it holds none of the marts the "
                f"report draws nor {WAREHOUSE_MARK}; build one with `polypythias build`"
            )
        rendered = []
        for figure in figures:
            chart = figure.build(con)
            no_data = None
            if chart is None:
                where = f"warehouse {db_path}"
                schema = mart_schema(con, figure.mart)
                if schema is None:
                    no_data = f"mart {figure.mart} is not in the {where}"
                elif figure.needs and _has_rows(con, schema, figure.mart):
                    no_data = f"mart {figure.mart} in the {where} has no {figure.needs}"
                else:
                    no_data = f"mart {figure.mart} in the {where} has no rows"
            rendered.append(_Rendered(figure, chart, no_data))
        return rendered
    finally:
        con.close()


def _has_rows(con: duckdb.DuckDBPyConnection, schema: str, mart: str) -> bool:
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, mart))
    return con.execute(f"select exists (select 1 from {quoted})").fetchone()[0]


def _standalone_html(spec: dict[str, Any]) -> str:
    """The chart's own page, as ``chart.to_html(inline=True)`` writes it."""
    return spec_to_html(
        spec,
        mode="vega-lite",
        vega_version=alt.VEGA_VERSION,
        vegaembed_version=alt.VEGAEMBED_VERSION,
        vegalite_version=alt.VEGALITE_VERSION,
        embed_options=dict(EMBED_OPTIONS),
        template="inline",
    )


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:  # mode follows the umask, unlike mkstemp's 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    # "\u003c" is "<" in both JSON and JavaScript, and can never close the element.
    return text.replace("<", "\\u003c")


def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one script, for the Vega-Lite version Altair targets."""
    import vl_convert as vlc

    major_minor = ".".join(alt.VEGALITE_VERSION.split(".")[:2])
    return vlc.javascript_bundle(vl_version=major_minor)


_STYLE = """
body { font-family: %(font)s; color: #222; max-width: 1100px; margin: 2rem auto;
       padding: 0 1.5rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
.meta code { font-size: 0.9em; word-break: break-all; }
nav ul { padding-left: 1.2rem; }
section { border-top: 1px solid #ddd; padding-top: 1rem; margin-top: 1.5rem; }
section h2 { margin-bottom: 0.2rem; }
.description { color: #444; margin-top: 0.2rem; }
.chart { margin: 0.8rem 0; }
.links a { margin-right: 1rem; }
.no-data { color: #8a5300; background: #fff6e5; border: 1px solid #f0d9a8;
           padding: 0.6rem 0.8rem; border-radius: 4px; }
.vega-embed { max-width: 100%%; }
"""


def _index_html(
    db_path: Path,
    rendered: list[_Rendered],
    specs: dict[str, dict[str, Any]],
    generated: datetime,
) -> str:
    e = html.escape
    stamp = generated.strftime("%Y-%m-%d %H:%M:%S UTC")
    toc = "\n".join(
        f'    <li><a href="#{r.figure.name}">{e(r.figure.title)}</a>'
        + (" — no data yet" if r.chart is None else "")
        + "</li>"
        for r in rendered
    )
    sections = []
    for r in rendered:
        f = r.figure
        head = f'<section id="{f.name}">\n  <h2>{e(f.title)}</h2>\n  <p class="description">{e(f.description)}</p>\n'
        if r.chart is None:
            body = (
                f'  <p class="no-data"><strong>No data yet</strong>: {e(r.no_data or "")}. '
                "Build the marts (<code>polypythias build</code>) and run the report "
                "again.</p>\n"
            )
        else:
            body = (
                f'  <div class="chart" id="vis-{f.name}"></div>\n'
                f'  <noscript><p>JavaScript is off: see <a href="{f.name}.png">'
                f"{f.name}.png</a>.</p></noscript>\n"
                f'  <p class="links"><a href="{f.name}.html">interactive chart on its own'
                f'</a><a href="{f.name}.png">PNG image</a></p>\n'
            )
        sections.append(head + body + "</section>")

    if specs:
        scripts = (
            "<script>\n"
            + _vega_bundle()
            + "\n</script>\n"
            + '<script type="application/json" id="figure-specs">'
            + _script_json(specs)
            + "</script>\n<script>\n"
            + "  const specs = JSON.parse(document.getElementById('figure-specs').textContent);\n"
            + f"  const embedOptions = {_script_json(EMBED_OPTIONS)};\n"
            # data-rendered on each chart ("ok" or "error") and window.vegaViews tell a
            # test (tests/browser.py) when every chart is drawn and let it count marks.
            + "  window.vegaViews = {};\n"
            + "  for (const [name, spec] of Object.entries(specs)) {\n"
            + "    const el = document.getElementById('vis-' + name);\n"
            + "    vegaEmbed(el, spec, embedOptions).then((result) => {\n"
            + "      window.vegaViews[name] = result.view;\n"
            + "      el.dataset.rendered = 'ok';\n"
            + "    }).catch((err) => {\n"
            + "      el.textContent = 'Could not draw this chart: ' + err;\n"
            + "      el.dataset.rendered = 'error';\n"
            + "      console.error(err);\n"
            + "    });\n"
            + "  }\n</script>\n"
        )
    else:
        scripts = ""

    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>polypythias report</title>\n"
        f"<style>{_STYLE % {'font': theme.FONT}}</style>\n"
        "</head>\n<body>\n"
        "<h1>polypythias report</h1>\n"
        f'<p class="meta">Generated {e(stamp)} from the warehouse '
        f"<code>{e(str(db_path))}</code>.</p>\n"
        f"<nav>\n  <ul>\n{toc}\n  </ul>\n</nav>\n" + "\n".join(sections) + "\n" + scripts + "</body>\n</html>\n"
    )
