"""Figures that read well on every screen: no two text elements of a plotly figure overlap, at 1280 px and 390 px.

Each lesson page of the built book (``tests.test_book.built_book``, built once per session) is opened offline in
Chromium at a desktop window (1280 px) and a phone screen (390 px). For every drawn plotly figure the bounding box of
each non-empty SVG ``text`` element (titles, axis titles, tick labels, legend entries, annotations, slider labels) is
taken with ``getBoundingClientRect``; two boxes that intersect by more than ``TOLERANCE_PX`` in both directions are an
overlap, and a box that reaches past the figure's edge is text cut off.

``python -m tests.test_book_layout OUT`` writes a screenshot of every static widget twin (the figures with a slider) at
both widths into OUT, for a person to look at.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.test_book import NOTEBOOKS, built_book
from tests.test_book_browser import (  # noqa: F401 - browser and site are fixtures
    CHROMIUM,
    CHROMIUM_ARGS,
    _Visit,
    _wait_for_plots,
    browser,
    serve,
    site,
)

WIDTHS = {"desktop": 1280, "phone": 390}
TOLERANCE_PX = 1.0  # glyph boxes of neighbouring tick labels may touch; they may not run into each other

# For each figure: every non-empty text element's box, and the pairs whose boxes intersect. Text in a hidden slider
# step or inside an element with zero size is skipped (it is not drawn).
OVERLAPS_JS = """(tol) => {
  const out = [];
  document.querySelectorAll('.js-plotly-plot').forEach((gd, fig) => {
    const boxes = [];
    const svg = gd.querySelector('.main-svg').getBoundingClientRect();
    gd.querySelectorAll('svg text').forEach(t => {
      const text = (t.textContent || '').trim();
      if (!text) return;
      const style = getComputedStyle(t);
      if (style.display === 'none' || style.visibility === 'hidden' || Number(style.opacity) === 0) return;
      const r = t.getBoundingClientRect();
      if (r.width < 0.5 || r.height < 0.5) return;
      boxes.push({text, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom});
      const cut = Math.max(svg.left - r.left, r.right - svg.right, svg.top - r.top, r.bottom - svg.bottom);
      if (cut > 2 * tol) out.push({fig, a: text, b: '(the figure edge: cut off)', w: Math.round(cut), h: 0});
    });
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        const w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0);
        const h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
        if (w > tol && h > tol) out.push({fig, a: a.text, b: b.text, w: Math.round(w), h: Math.round(h)});
      }
    }
  });
  return out;
}"""

# Figures wider than the page: plotly draws at its layout width, and a fixed width past the column is cut off.
TOO_WIDE_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map((gd, fig) => {
  const svg = gd.querySelector('.main-svg');
  const column = gd.closest('.cell_output, .output') || gd.parentElement;
  return {fig, svg: svg ? svg.getBoundingClientRect().width : 0, column: column.getBoundingClientRect().width};
}).filter(f => f.svg > f.column + 2)"""


def open_lesson(browser, site: str, stem: str, width: int) -> _Visit:  # noqa: F811 - browser is the fixture's value
    """A lesson page at ``width`` px, with every plotly figure drawn."""
    v = _Visit(browser, f"{site}notebooks/{stem}.html")
    v.page.set_viewport_size({"width": width, "height": 900})
    # a resize redraws responsive figures asynchronously: wait until plotly has settled at the new width
    v.page.evaluate("() => Promise.all([...document.querySelectorAll('.js-plotly-plot')].map("
                    "gd => window.Plotly.Plots.resize(gd)))")
    _wait_for_plots(v.page)
    return v


def describe(overlaps: list[dict]) -> str:
    return "\n".join(f"  figure {o['fig']}: {o['a']!r} overlaps {o['b']!r} ({o['w']}×{o['h']} px)" for o in overlaps)


@pytest.mark.parametrize("width", list(WIDTHS.values()), ids=list(WIDTHS))
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_two_texts_of_a_figure_overlap(browser, site, notebook, width):  # noqa: F811 - fixtures
    v = open_lesson(browser, site, notebook.stem, width)
    try:
        overlaps = v.page.evaluate(OVERLAPS_JS, TOLERANCE_PX)
        assert not overlaps, f"{notebook.stem} at {width} px: text runs into other text\n{describe(overlaps)}"
        wide = v.page.evaluate(TOO_WIDE_JS)
        assert not wide, f"{notebook.stem} at {width} px: figures wider than the text column (cut off): {wide}"
    finally:
        v.close()


def test_the_overlap_check_finds_an_overlap(browser, site):  # noqa: F811 - fixtures
    """The check itself: two plotly annotations placed on top of each other are reported."""
    v = open_lesson(browser, site, NOTEBOOKS[0].stem, WIDTHS["desktop"])
    try:
        v.page.evaluate("""() => Plotly.relayout(document.querySelector('.js-plotly-plot'), {annotations: [
            {text: 'first label', x: 0.5, y: 0.5, xref: 'paper', yref: 'paper', showarrow: false},
            {text: 'second label', x: 0.52, y: 0.5, xref: 'paper', yref: 'paper', showarrow: false}]})""")
        overlaps = v.page.evaluate(OVERLAPS_JS, TOLERANCE_PX)
        assert any({o["a"], o["b"]} == {"first label", "second label"} for o in overlaps), overlaps
    finally:
        v.close()


def screenshots(out: Path, html: Path) -> list[Path]:
    """Screenshots of every figure with a slider (the widgets' static twins) of the site ``html``, at both widths.

    Prints the overlaps it finds on the way; returns the PNG paths (``out/NN_name_figI_desktop.png`` ...).
    """
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with serve(html) as base, sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for notebook in NOTEBOOKS:
                for name, width in WIDTHS.items():
                    v = open_lesson(b, base, notebook.stem, width)
                    # the theme's sticky header would cover the top of a figure in an element screenshot
                    v.page.add_style_tag(content=".skip-link, .bd-header-article, header.bd-header "
                                                 "{visibility: hidden !important}")
                    figs = v.page.locator(".js-plotly-plot")
                    for i in range(figs.count()):
                        if figs.nth(i).evaluate("gd => (gd.layout.sliders || []).length > 0"):
                            path = out / f"{notebook.stem}_fig{i}_{name}.png"
                            figs.nth(i).screenshot(path=str(path))
                            shots.append(path)
                    overlaps = v.page.evaluate(OVERLAPS_JS, TOLERANCE_PX)
                    if overlaps:
                        print(f"{notebook.stem} at {width} px:\n{describe(overlaps)}")
                    v.close()
        finally:
            b.close()
    return shots


if __name__ == "__main__":
    # python -m tests.test_book_layout OUT [HTML]: HTML defaults to a fresh build (as the tests make it)
    html = Path(sys.argv[2]) if len(sys.argv) > 2 else built_book().html
    for shot in screenshots(Path(sys.argv[1]), html):
        print(shot)
