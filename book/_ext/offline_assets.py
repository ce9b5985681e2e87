"""Sphinx extension of the dsv3-mini book: every script a page loads comes from the book itself, none from a CDN.

- Fails early, with what to run, when ``book/_offline/local/`` (filled by ``scripts/fetch_book_assets.sh``) is
  missing or incomplete.
- Adds the local plotly.js to the pages that hold a plotly figure (the notebooks' figures are plain HTML that expects
  a global ``Plotly``), once per page and before the page's inline scripts run.
- Makes the ipywidgets HTML manager look for third-party widget modules in ``_static/local/npm/`` relative to each
  page (its ``data-jupyter-widgets-cdn`` attribute is a URL prefix, so it must be right for the page's folder), and
  for its own fonts in ``_static/local/html-manager/``.
- Leaves out sphinx-thebe's scripts while the thebe launch button is off (they would only declare a CDN URL).
- After the build, warns (an error under ``-W``) about any ``<script src>`` that leaves the site.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

LOCAL = "local"  # book/_offline/local/ -> _static/local/
REQUIRED = ("plotly.min.js", "require.js", "html-manager/embed-amd.js", "mathjax/tex-mml-chtml.js")
WIDGETS_CDN_ATTR = "data-jupyter-widgets-cdn"
_SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def _check_assets(app: Sphinx) -> None:
    root = Path(app.srcdir) / "_offline" / LOCAL
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise ExtensionError(
            f"the book's local JavaScript is missing from {root} ({', '.join(missing)}): run "
            "`bash scripts/fetch_book_assets.sh` (`make book` runs it for you)"
        )


def _per_page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: object) -> None:
    if "plotly-graph-div" in context.get("body", ""):
        # before require.js (priority 500), so that plotly.js never meets an AMD loader
        app.add_js_file(f"{LOCAL}/plotly.min.js", priority=200)
    scripts = context.get("script_files", [])
    if not app.config.html_theme_options.get("launch_buttons", {}).get("thebe"):
        # thebe (live code on the page) is off: its loader would only declare a CDN URL, and sphinx-thebe adds its
        # inline config twice, which redeclares a const (a page error)
        scripts[:] = [js for js in scripts if not _is_thebe(js)]
    for i, js in enumerate(scripts):
        attributes = getattr(js, "attributes", {})
        if WIDGETS_CDN_ATTR in attributes:
            local = context["pathto"](f"_static/{LOCAL}/npm/", 1)
            scripts[i] = type(js)(js.filename, priority=js.priority, **{**attributes, WIDGETS_CDN_ATTR: local})
            # the manager finds its fonts beside its require.js module id: map that id to our copy
            manager = context["pathto"](f"_static/{LOCAL}/html-manager", 1)
            paths = json.dumps({"paths": {"@jupyter-widgets/html-manager/dist": manager}})
            scripts.insert(i, type(js)(None, priority=js.priority, body=f"require.config({paths});"))
            break


def _is_thebe(js: object) -> bool:
    filename = str(getattr(js, "filename", "") or "")
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in getattr(js, "attributes", {}).get("body", "")


def _check_output(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in sorted(Path(app.outdir).rglob("*.html")):
        for src in _SCRIPT_SRC.findall(page.read_text(encoding="utf-8", errors="replace")):
            if "://" in src or src.startswith("//"):
                logger.warning("%s loads a script from outside the site: %s", page.relative_to(app.outdir), src)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _check_assets)
    app.connect("html-page-context", _per_page, priority=900)  # after myst-nb adds the page's widget scripts
    app.connect("build-finished", _check_output)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
