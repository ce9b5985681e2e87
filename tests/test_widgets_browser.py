"""One real-browser test: JupyterLab + Chromium (Playwright) run a notebook with a widget and move a slider.

Skipped when /usr/bin/chromium is missing, except under CI (environment variable ``CI`` set), where it fails.
All network traffic stays on 127.0.0.1: the browser aborts any other request and the test checks none was made.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
JUPYTER = Path(sys.executable).with_name("jupyter")
SERVER_START_TIMEOUT = 90  # s
RUN_TIMEOUT_MS = 120_000


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this test may not be skipped)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, token: str, method: str = "GET", timeout: float = 5.0) -> bytes:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # always http://127.0.0.1
        return r.read()


def _write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import sys\nprint('KERNEL_PREFIX=' + sys.prefix)"),
        nbformat.v4.new_code_cell("from widgets import KVCacheWidget\nw = KVCacheWidget()\nw"),
    ]
    nbformat.write(nb, path)


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on a free port rooted at tmp_path; yields (base_url, token, notebook). Always stopped.

    A random token (rather than none) lets the teardown shut kernels down through the REST API and keeps other
    local users out.
    """
    if not Path(CHROMIUM).exists():
        _skip_or_fail(f"{CHROMIUM} not found (install it with: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_or_fail("playwright is not installed in this environment")
    _write_notebook(tmp_path / "kv.ipynb")
    port = _free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"), "JUPYTER_PLATFORM_DIRS": "1"}
    cmd = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", "--ServerApp.password=", "--allow-root",
           f"--ServerApp.root_dir={tmp_path}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(tmp_path / "server.log", "wb")  # closed in the teardown
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{(tmp_path / 'server.log').read_text()}")
            try:
                _request(f"{base}/api/status", token, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {SERVER_START_TIMEOUT} s")
                time.sleep(0.3)
        yield base, token, "kv.ipynb"
    finally:
        try:  # shut the kernels down first: they run in their own sessions
            for k in json.loads(_request(f"{base}/api/kernels", token)):
                _request(f"{base}/api/kernels/{k['id']}", token, method="DELETE", timeout=20)
        except OSError as err:
            print(f"could not shut the kernels down through the API ({err}); stopping the server stops them")
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (start_new_session=True)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()


def _plot_data(page) -> str:
    return page.evaluate(
        "() => { const el = document.querySelector('.js-plotly-plot');"
        " return el && el.data ? JSON.stringify(el.data.map(t => [t.x, t.y])) : null; }"
    )


def test_kv_widget_slider_redraws_in_jupyterlab(jupyter_lab):
    from playwright.sync_api import sync_playwright

    base, token, nb = jupyter_lab
    outside: list[str] = []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(60_000)
            page.route("**/*", only_local)
            page.goto(f"{base}/lab/tree/{nb}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=RUN_TIMEOUT_MS)
            page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=RUN_TIMEOUT_MS)  # kernel is up
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.wait_for_selector(".js-plotly-plot", timeout=RUN_TIMEOUT_MS)
            page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=RUN_TIMEOUT_MS)
            page.wait_for_function("() => { const el = document.querySelector('.js-plotly-plot');"
                                   " return el && el.data && el.data.length === 4; }", timeout=RUN_TIMEOUT_MS)

            # the kernel is this venv's python
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert f"KERNEL_PREFIX={sys.prefix}" in "\n".join(outputs), outputs
            assert page.locator(".dsv3-widget").count() == 1
            before = _plot_data(page)
            bars = json.loads(before)
            assert bars[0][1][3] == 70272  # MLA bytes per token of DeepSeek-V3 at bf16, as in the headless test

            # first slider of the widget: context length; ArrowRight moves it one step (1024 tokens)
            handle = page.locator(".dsv3-widget .widget-slider .noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")
            handle.press("ArrowRight")
            page.wait_for_function(
                "(old) => { const el = document.querySelector('.js-plotly-plot');"
                " return JSON.stringify(el.data.map(t => [t.x, t.y])) !== old; }", arg=before, timeout=30_000)
            after = json.loads(_plot_data(page))
            assert after[0] == bars[0]  # bytes per token do not depend on the context length
            assert after[1][1][3] > bars[1][1][3]  # the whole MLA cache grew
            # the redraw kept the traces' styles (plotly's batched restyle would null keys it did not set)
            styles = page.evaluate("() => document.querySelector('.js-plotly-plot').data"
                                   ".map(t => [t.name, t.marker && t.marker.color])")
            assert [s[0] for s in styles] == ["per token", "total", "formula", "measured"]
            assert styles[2][1] == "#56B4E9" and styles[3][1] == "#7F7F7F"
            assert not outside, f"requests left 127.0.0.1: {outside}"
        finally:
            browser.close()
