"""Wall-clock time of the course's two slow checks: the nbval suite and the Jupyter Book build.

- nbval: ``.venv/bin/pytest -q --nbval notebooks/`` as a subprocess (pyproject's options apply: current env,
  the sanitiser); every lesson notebook is executed and its outputs compared. ``--quick`` runs the first notebook.
- book: ``scripts/fetch_book_assets.sh`` then ``jupyter-book build book -W --keep-going``, as ``make book`` does, but
  into a temporary folder (``--path-output``) so ``book/_build`` is left alone. The book renders the notebooks'
  committed outputs (it does not execute them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, row

TIMEOUT = 1800


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, **kw)
    return time.perf_counter() - t, proc


def _tail(proc: subprocess.CompletedProcess, lines: int = 15) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def run_nbval(quick: bool = False) -> dict:
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    targets = notebooks[:1] if quick else ["notebooks/"]
    seconds, proc = _timed([_tool("pytest"), "-q", "-p", "no:cacheprovider", "--nbval", *targets])
    ok = proc.returncode == 0
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    n = 1 if quick else len(notebooks)
    rows = [row(f"nbval suite ({n} notebook{'s' * (n != 1)})", f"{seconds:,.0f} s", "—", "passes", ok, last)]
    return {"rows": rows, "data": {"seconds": seconds, "returncode": proc.returncode, "notebooks": n,
                                   "summary": last, "tail": "" if ok else _tail(proc)}}


def run_book(quick: bool = False) -> dict:  # noqa: ARG001 (the book has no smaller version)
    env = {**os.environ, "PY": sys.executable}
    fetch_s, fetch = _timed(["bash", "scripts/fetch_book_assets.sh"], env=env)
    out = Path(tempfile.mkdtemp(prefix="dsv3-bench-book-"))
    try:
        build_s, build = (0.0, fetch) if fetch.returncode else _timed(
            [_tool("jupyter-book"), "build", "book", "-W", "--keep-going", "--path-output", str(out)], env=env)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ok = fetch.returncode == 0 and build.returncode == 0
    total = fetch_s + build_s
    rows = [row("Book build (fetch assets + jupyter-book -W)", f"{total:,.0f} s",
                f"assets {fetch_s:,.1f} s + build {build_s:,.0f} s", "builds without warnings", ok)]
    return {"rows": rows, "data": {"seconds": total, "fetch_seconds": fetch_s, "build_seconds": build_s,
                                   "returncode": build.returncode, "tail": "" if ok else _tail(build)}}
