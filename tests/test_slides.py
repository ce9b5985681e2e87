"""`make slides`: an offline reveal.js deck per lesson, with one slide per slide-marked cell, opened in Chromium.

The deck of the Tour is built exactly as ``make slides`` builds it (``scripts/build_slides.sh``, into a temporary
folder), opened from the disk (file://) with every request that leaves the machine aborted, and stepped through with
the keyboard. Needs Debian's Chromium (see ``test_book_browser.py``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from tests.test_book_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _unavailable

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
DECK = "00_tour"
HIDDEN = {"remove-cell", "hide-cell"}  # left out of the deck, as out of the book
CURRENT_JS = ("() => [...document.querySelectorAll('.reveal .slides > section')]"
              ".findIndex(s => s.classList.contains('present'))")


def slide_count(ipynb: Path) -> int:
    """Top-level slides the deck of ``ipynb`` must have: its cells marked "slide" that the deck keeps."""
    nb = nbformat.read(ipynb, as_version=4)
    return sum(1 for c in nb.cells if c.metadata.get("slideshow", {}).get("slide_type") == "slide"
               and not HIDDEN & set(c.metadata.get("tags", [])))


@functools.cache
def built_deck() -> tuple[int, str, Path]:
    out = Path(tempfile.mkdtemp(prefix="dsv3-slides-"))
    env = {**os.environ, "PY": sys.executable, "SLIDES_OUT": str(out), "NB": f"notebooks/{DECK}.ipynb"}
    run = subprocess.run(["bash", "scripts/build_slides.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    return run.returncode, run.stdout + run.stderr, out


@pytest.fixture(scope="module")
def deck():
    code, log, out = built_deck()
    if code != 0:
        pytest.fail(f"scripts/build_slides.sh failed (exit {code}):\n{log[-4000:]}")
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("source", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_marks_its_slides(source):
    """The slide convention: the title and every `## ` section open a slide; remove-cells are skipped."""
    import jupytext

    nb = jupytext.read(source, fmt="py:percent")
    for i, cell in enumerate(nb.cells):
        kind = cell.metadata.get("slideshow", {}).get("slide_type")
        if cell.cell_type == "markdown" and cell.source.startswith(("# ", "## ")):
            assert kind == "slide", f"{source.name} cell {i} opens a section but is not a slide: {cell.source[:60]!r}"
        if "remove-cell" in cell.metadata.get("tags", []):
            assert kind == "skip", f"{source.name} cell {i} is a remove-cell without slide_type skip"
    assert nb.cells[0].metadata.get("slideshow", {}).get("slide_type") == "slide", "the title cell is a slide"


def test_the_deck_uses_only_local_files(deck):
    html = (deck / f"{DECK}.slides.html").read_text(encoding="utf-8")
    remote = re.findall(r"""<script[^>]*\ssrc=["'](?:https?:)?//[^"']+|<link[^>]*\shref=["'](?:https?:)?//[^"']+"""
                        r"""|import[^;'"]*from\s*["'](?:https?:)?//[^"']+|["']https?://[^"']*\.m?js["']""", html)
    assert not remote, f"the deck loads code or styles from outside: {remote}"
    for local in ("lib/reveal.js/dist/reveal.js", "lib/require.js", "lib/jquery.min.js", "lib/plotly.min.js",
                  "lib/mathjax/MathJax.js"):
        assert (deck / local).is_file(), f"{local} is missing from the deck's folder"
    assert (deck / "index.html").is_file()


def test_the_deck_opens_offline_and_steps_through_every_slide(deck):
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: `apt-get install chromium` to run the browser tests")
    from playwright.sync_api import sync_playwright

    expected = slide_count(ROOT / "notebooks" / f"{DECK}.ipynb")
    assert expected >= 5
    blocked, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)

            def route(r):
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((deck / f"{DECK}.slides.html").as_uri(), wait_until="load")
            # reveal.js is loaded as a require.js module (no global): read its state from the DOM it drives
            page.wait_for_selector(".reveal.ready")
            assert page.evaluate("() => document.querySelectorAll('.reveal .slides > section').length") == expected
            seen = [page.evaluate(CURRENT_JS)]
            for _ in range(expected - 1):
                page.keyboard.press("ArrowRight")
                page.wait_for_function(f"(h) => ({CURRENT_JS})() > h", arg=seen[-1])
                seen.append(page.evaluate(CURRENT_JS))
            assert seen == list(range(expected))
            page.keyboard.press("ArrowRight")  # past the last slide: nothing moves
            page.wait_for_timeout(300)
            assert page.evaluate(CURRENT_JS) == expected - 1
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
            page.wait_for_function("() => document.querySelectorAll('.mjx-chtml').length > 0")  # math typeset
        finally:
            browser.close()
    assert not blocked, "the deck asked for files outside the machine:\n" + "\n".join(blocked)
    assert not errors, "errors in the deck:\n" + "\n".join(errors)


def test_the_teachers_guide_gives_each_lessons_slide_count():
    """Rows of the guide's slide table whose number names exactly one lesson (NN_*) give its slide count."""
    guide = (ROOT / "book" / "teachers-guide.md").read_text(encoding="utf-8")
    section = guide.split("## Running a class with slides", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (\d+) \|", section, flags=re.M))
    assert rows, "the guide's slide table is missing"
    checked = 0
    for number, count in rows.items():
        lessons = sorted((ROOT / "notebooks").glob(f"{int(number):02d}_*.ipynb"))
        if len(lessons) == 1:  # two lessons share a number until the integrator renumbers them
            assert int(count) == slide_count(lessons[0]), f"{lessons[0].stem}: the guide says {count} slides"
            checked += 1
    assert checked >= 6
