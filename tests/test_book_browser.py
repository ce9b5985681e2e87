"""The built book in a real browser, offline: figures draw, a plotly slider works, MathJax typesets, no errors.

The site is served on 127.0.0.1 and every request elsewhere is aborted, so a page that needs a CDN fails here.
Needs Debian's Chromium at /usr/bin/chromium (``apt-get install chromium``; ``.ci/run`` installs it): without it the
tests are skipped, except under CI (env ``CI`` set), where they fail.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.test_book import NOTEBOOKS, built_book

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 20_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """``directory`` served on 127.0.0.1 (a free port) for as long as the block runs; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The built book served on 127.0.0.1; yields its base URL, and always stops the server."""
    book = built_book()
    if book.returncode != 0:
        pytest.fail(f"the book did not build (exit {book.returncode}); see test_book.py. Log end:\n{book.log[-3000:]}")
    with serve(book.html) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: `apt-get install chromium` to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (it is a dev dependency: `make test` installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            yield b
        finally:
            b.close()


class _Visit:
    """One page opened offline: what it logged, what it tried to fetch elsewhere, what failed to load."""

    def __init__(self, browser, url: str):
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.route("**/*", self._route)
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.page.goto(url, wait_until="load")

    def _route(self, route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def assert_clean(self) -> None:
        assert not self.blocked, "requests outside the site:\n" + "\n".join(self.blocked)
        assert not self.failed, "failed requests:\n" + "\n".join(self.failed)
        assert not self.errors, "errors in the browser console:\n" + "\n".join(self.errors)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, site):
    opened: list[_Visit] = []

    def open_page(path: str) -> _Visit:
        v = _Visit(browser, site + path)
        opened.append(v)
        return v

    yield open_page
    for v in opened:
        v.close()


def _wait_for_plots(page) -> int:
    """Wait until every plotly figure on the page has drawn data; returns how many there are."""
    n = page.locator(".plotly-graph-div").count()
    if n:
        page.wait_for_function(
            """() => [...document.querySelectorAll('.plotly-graph-div')].every(
                   gd => gd.classList.contains('js-plotly-plot') && gd.data && gd.data.length > 0
                         && gd.querySelector('.main-svg'))"""
        )
    return n


def _wait_for_mathjax(page) -> int:
    """Wait until MathJax has typeset the page's math (if any); returns the number of typeset formulas."""
    if page.locator(".math").count() == 0:
        return 0
    page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0")
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise")
    return page.locator("mjx-container").count()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_page_renders_offline(visit, notebook):
    v = visit(f"notebooks/{notebook.stem}.html")
    _wait_for_plots(v.page)
    _wait_for_mathjax(v.page)
    v.assert_clean()


def test_tour_draws_its_figures_and_typesets_its_equation(visit):
    v = visit("notebooks/00_tour.html")
    assert _wait_for_plots(v.page) >= 2
    assert _wait_for_mathjax(v.page) >= 1
    v.assert_clean()


def test_a_static_plotly_slider_changes_its_figure(visit):
    """Drag-free: a click at the right end of the slider's rail selects the last step, and the figure updates."""
    checked = 0
    for notebook in NOTEBOOKS:
        v = visit(f"notebooks/{notebook.stem}.html")
        _wait_for_plots(v.page)
        index = v.page.evaluate(
            """() => [...document.querySelectorAll('.plotly-graph-div')].findIndex(
                   gd => (gd.layout.sliders || []).length > 0)"""
        )
        if index < 0:
            continue
        gd = v.page.locator(".plotly-graph-div").nth(index)
        gd.scroll_into_view_if_needed()
        before = gd.evaluate("gd => JSON.stringify([gd.data.map(t => t.y), gd.layout.sliders[0].active])")
        rail = gd.locator(".slider-rail-touch-rect").first
        box = rail.bounding_box()
        assert box is not None, "the slider's rail is not visible"
        v.page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
        v.page.wait_for_function(
            "([gd, before]) => JSON.stringify([gd.data.map(t => t.y), gd.layout.sliders[0].active]) !== before",
            arg=[gd.element_handle(), before],
        )
        last = gd.evaluate("gd => gd.layout.sliders[0].steps.length - 1")
        assert gd.evaluate("gd => gd.layout.sliders[0].active") == last
        v.assert_clean()
        checked += 1
        break
    assert checked, "no lesson page has a plotly figure with a slider (the Tour has one)"


def test_glossary_typesets_its_math(visit):
    v = visit("glossary.html")
    assert _wait_for_mathjax(v.page) >= 1
    v.assert_clean()
