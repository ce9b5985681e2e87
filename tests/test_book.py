"""The Jupyter Book: builds with warnings as errors, has a page per lesson, and loads every script from itself.

The book is built once per test session into a temporary folder (``built_book()``, shared with
``test_book_browser.py``), exactly as ``make book`` builds it: ``scripts/fetch_book_assets.sh`` then
``jupyter-book build book -W --keep-going``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CDN_MARKERS = ("cdn.", "unpkg", "jsdelivr", "cdnjs")


@dataclass(frozen=True)
class BookBuild:
    returncode: int
    log: str
    html: Path  # the built site: index.html, notebooks/NN_name.html, _static/...


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


@functools.cache
def built_book() -> BookBuild:
    """Fetch the local assets and build the book into a fresh temporary folder (once per session)."""
    env = {**os.environ, "PY": sys.executable}
    fetch = subprocess.run(["bash", "scripts/fetch_book_assets.sh"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    out = Path(tempfile.mkdtemp(prefix="dsv3-book-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    if fetch.returncode != 0:
        return BookBuild(fetch.returncode, fetch.stdout + fetch.stderr, out / "_build" / "html")
    build = subprocess.run(
        [_tool("jupyter-book"), "build", str(BOOK), "-W", "--keep-going", "--path-output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    return BookBuild(build.returncode, build.stdout + build.stderr, out / "_build" / "html")


@pytest.fixture(scope="module")
def book() -> BookBuild:
    b = built_book()
    if b.returncode != 0:
        pytest.fail(f"the book did not build (exit {b.returncode}); the end of its log:\n{b.log[-6000:]}")
    return b


class _Assets(HTMLParser):
    """The URLs of a page's scripts and of the stylesheets and fonts it links."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "link" and a.get("href") and {"stylesheet", "preload", "modulepreload"} & set(
            (a.get("rel") or "").split()
        ):
            self.links.append(a["href"])


def _assets(page: Path) -> _Assets:
    parser = _Assets()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _is_remote(url: str) -> bool:
    return bool(re.match(r"^([a-z][a-z0-9+.-]*:)?//", url, re.IGNORECASE)) or any(m in url for m in CDN_MARKERS)


def test_the_book_builds_with_warnings_as_errors(book):
    assert (book.html / "index.html").is_file()
    assert (book.html / "intro.html").is_file()


def test_there_are_lessons():
    assert NOTEBOOKS, "notebooks/NN_name.ipynb: no lesson found"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_page_with_launch_and_download_buttons(book, notebook):
    page = book.html / "notebooks" / f"{notebook.stem}.html"
    assert page.is_file(), f"{notebook.name} has no page in the book: is it matched by the glob in book/_toc.yml?"
    html = page.read_text(encoding="utf-8")
    rel = f"notebooks/{notebook.name}"
    assert "mybinder.org/v2/gh/" in html and f"urlpath=lab/tree/{rel}" in html, "no Binder launch button"
    assert "colab.research.google.com/github/" in html and f"/blob/main/{rel}" in html, "no Colab launch button"
    assert f"_sources/{rel}" in html and (book.html / "_sources" / rel).is_file(), "no .ipynb download"
    # the lesson is in the navigation of the home page, which every reader starts from
    assert f'href="notebooks/{notebook.stem}.html"' in (book.html / "intro.html").read_text(encoding="utf-8")


def test_pages_for_the_reader():
    """The book's own pages are in the table of contents."""
    toc = (BOOK / "_toc.yml").read_text(encoding="utf-8")
    for name in ("running-locally", "teachers-guide", "benchmarks", "glossary", "references"):
        assert f"file: {name}" in toc
        assert (BOOK / f"{name}.md").is_file()
    assert "glob: notebooks/" in toc, "lessons are picked up by a glob, so a new notebook needs no toc edit"


def _pages(html: Path) -> list[Path]:
    """The site's pages (not the theme's template fragments in _static/)."""
    return sorted(p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts)


def test_no_page_loads_anything_from_a_cdn(book):
    pages = _pages(book.html)
    assert len(pages) >= len(NOTEBOOKS) + 5
    remote = [f"{p.relative_to(book.html)}: {url}" for p in pages for url in _assets(p).scripts + _assets(p).links
              if _is_remote(url)]
    assert not remote, "pages load scripts or styles from outside the site:\n" + "\n".join(remote)


def test_every_local_script_exists(book):
    missing = []
    for page in _pages(book.html):
        for url in _assets(page).scripts:
            target = (page.parent / url.split("?")[0].split("#")[0]).resolve()
            if not target.is_file():
                missing.append(f"{page.relative_to(book.html)}: {url}")
    assert not missing, "scripts that are not in the built site:\n" + "\n".join(missing)


def test_plotly_and_mathjax_are_local_on_the_tour(book):
    page = book.html / "notebooks" / "00_tour.html"
    scripts = _assets(page).scripts
    assert any(s.split("?")[0].endswith("_static/local/plotly.min.js") for s in scripts), scripts
    assert any(s.split("?")[0].endswith("_static/local/mathjax/tex-mml-chtml.js") for s in scripts), scripts
    html = page.read_text(encoding="utf-8")
    assert "plotly-graph-div" in html and "Plotly.newPlot" in html


def test_cited_references_resolve(book):
    refs = (book.html / "references.html").read_text(encoding="utf-8")
    for arxiv in ("2412.19437", "2405.04434", "2408.15664", "2305.13245", "2309.00071", "2211.17192", "2101.03961"):
        assert arxiv in refs, f"arXiv {arxiv} is missing from the references page"
    intro = (book.html / "intro.html").read_text(encoding="utf-8")
    assert 'href="references.html#id' in intro, "the intro's citations do not link to the references page"


def test_the_benchmarks_page_shows_the_committed_run(book):
    """The book shows make bench's table (included from benchmarks/results/BENCH.md, never copied), dated."""
    results = json.loads((ROOT / "benchmarks" / "results" / "bench.json").read_text())
    # Sphinx's smart quotes print an apostrophe as ’ ("make train’s run")
    html = (book.html / "benchmarks.html").read_text(encoding="utf-8").replace("\u2019", "'")
    assert results["date"] in html
    rows = [row for entry in results["benchmarks"].values() for row in entry.get("rows", [])]
    assert rows
    for row in rows:
        assert html_escape(row["item"], quote=False) in html, row["item"]
