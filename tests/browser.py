"""Open a built report in headless Chromium and check that every chart renders.

``check_report_in_browser(index_html, screenshot)`` drives Debian's Chromium
(``/usr/bin/chromium``, installed by ``make test``; never a downloaded browser) through
Playwright:

- the page is opened from ``file://`` and may load nothing else: any request that is
  not a local file (or an inline ``data:``/``blob:`` URL) is aborted and fails the check;
- console errors and uncaught page errors fail the check;
- it waits until every chart container of the page (``div.chart``, one per figure
  with data) is drawn or has failed — the page's embed code marks each container
  ``data-rendered="ok"`` or ``"error"`` — and requires each to hold an SVG or canvas
  with at least one mark item (counted in the Vega scenegraph: items of data marks,
  not axes, legends or titles);
- it writes a full-page PNG screenshot, also when a check fails (for the record).

Returns the number of mark items per figure name; raises ``AssertionError`` listing
every problem found.
"""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("POLYPYTHIAS_CHROMIUM", "/usr/bin/chromium"))
ALLOWED_SCHEMES = ("file:", "data:", "blob:", "about:")
VIEWPORT = {"width": 1280, "height": 900}

# Marks drawn per chart: the items of every non-group mark whose role is "mark"
# (the chart's own marks), found by walking the Vega scenegraph; the SVG's data-mark
# elements as a fallback where the view is not exposed.
_COUNT_MARKS = """
(el) => {
  const name = el.id.replace(/^vis-/, '');
  const has = {
    svg: el.querySelector('svg') !== null,
    canvas: el.querySelector('canvas') !== null,
  };
  const view = (window.vegaViews || {})[name];
  let marks = 0;
  if (view) {
    const walk = (mark) => {
      for (const item of mark.items || []) {
        if (mark.marktype === 'group') {
          for (const child of item.items || []) walk(child);
        } else if (mark.role === 'mark') {
          marks += 1;
        }
      }
    };
    walk(view.scenegraph().root);
  } else {
    marks = el.querySelectorAll('svg g.role-mark:not(.mark-group) > *').length;
  }
  return {name, rendered: el.dataset.rendered || null, ...has, marks};
}
"""


def check_report_in_browser(index_html: Path, screenshot: Path, *, timeout_s: float = 60.0) -> dict[str, int]:
    """Open ``index_html`` in headless Chromium, check every chart, save ``screenshot``.

    Returns ``{figure name: number of mark items drawn}``. Raises AssertionError naming
    each problem (no Chromium, a network request, a console or page error, a chart that
    is not drawn or draws no marks), after writing the screenshot when the page loaded.
    """
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    index_html = Path(index_html).resolve()
    screenshot = Path(screenshot)
    if not index_html.is_file():
        raise AssertionError(f"report page {index_html} does not exist")
    if not CHROMIUM.is_file():
        raise AssertionError(
            f"no Chromium at {CHROMIUM}: install Debian's package (`make test` does: "
            "apt-get install chromium) or set POLYPYTHIAS_CHROMIUM"
        )

    problems: list[str] = []
    console_errors: list[str] = []
    blocked: dict[str, None] = {}  # URLs in order, once each
    timeout_ms = timeout_s * 1000

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport=VIEWPORT, service_workers="block")

            def route(route_):
                url = route_.request.url
                if url.startswith(ALLOWED_SCHEMES):
                    route_.continue_()
                else:
                    blocked[url] = None
                    route_.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(timeout_ms)

            def on_request(request):
                # Routing may not see every scheme; the request log does.
                if not request.url.startswith(ALLOWED_SCHEMES):
                    blocked[request.url] = None

            page.on("request", on_request)
            page.on(
                "console",
                lambda msg: console_errors.append(f"console error: {msg.text}") if msg.type == "error" else None,
            )
            page.on("pageerror", lambda exc: console_errors.append(f"page error: {exc}"))

            page.goto(index_html.as_uri(), wait_until="load")
            charts = page.locator("div.chart")
            n_charts = charts.count()
            if n_charts == 0:
                problems.append(f"{index_html} has no chart (every figure is 'no data yet')")
            try:
                page.wait_for_function(
                    "() => [...document.querySelectorAll('div.chart')].every((el) => el.dataset.rendered)",
                    timeout=timeout_ms,
                )
            except PlaywrightError:
                pending = page.eval_on_selector_all(
                    "div.chart",
                    "(els) => els.filter((el) => !el.dataset.rendered).map((el) => el.id)",
                )
                problems.append(f"charts not drawn after {timeout_s:.0f} s: {', '.join(pending) or '?'}")

            marks: dict[str, int] = {}
            for state in charts.evaluate_all(f"(els) => els.map({_COUNT_MARKS})"):
                name = state["name"]
                marks[name] = state["marks"]
                if state["rendered"] == "error":
                    problems.append(f"chart {name} failed to draw (see the console errors)")
                if not (state["svg"] or state["canvas"]):
                    problems.append(f"chart {name} has no SVG or canvas")
                elif state["marks"] < 1:
                    problems.append(f"chart {name} draws no marks")

            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    problems.extend(console_errors)
    problems.extend(f"network request (blocked; the page must be self-contained): {u}"
                    for u in blocked)  # fmt: skip
    if problems:
        raise AssertionError(f"report {index_html} in Chromium: " + "; ".join(problems))
    return marks
