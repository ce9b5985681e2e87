"""`make lab` opens the course as users expect: the tour first, lessons listed once in order, no news prompt.

The settings ship in the repository (jupyter_config/); the Makefile's lab target copies them into .venv and points
JupyterLab at them. A browser test starts JupyterLab exactly with the Makefile's flags and settings, on 127.0.0.1 and
a free port, and checks that the tour opens and that no notification asks about news.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_book_browser import CHROMIUM, CHROMIUM_ARGS, _unavailable

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "jupyter_config" / "lab" / "user-settings"
NOTIFICATION = SHIPPED / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"


def _json5(path: Path) -> dict:
    """JupyterLab settings files are JSON with // comments."""
    return json.loads(re.sub(r"^\s*//.*$", "", path.read_text(encoding="utf-8"), flags=re.M))


def makefile_lab_flags() -> list[str]:
    """LAB_FLAGS of the Makefile, as the shell passes them to `jupyter lab`."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    line = next(li for li in text.splitlines() if li.startswith("LAB_FLAGS :="))
    return shlex.split(line.split(":=", 1)[1])


def test_shipped_settings_turn_the_news_prompt_off():
    settings = _json5(NOTIFICATION)
    assert settings["fetchNews"] == "false" and settings["checkForUpdates"] is False


def test_shipped_settings_are_valid_for_the_installed_jupyterlab():
    schemas = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
    schema_file = schemas / "@jupyterlab" / "apputils-extension" / "notification.json"
    if not schema_file.is_file():
        pytest.skip("JupyterLab's schemas are not installed in this environment")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))["properties"]
    settings = _json5(NOTIFICATION)
    for key in settings:
        assert key in schema, f"{key} is not a setting of the notification extension"
    allowed = [o["const"] for o in schema["fetchNews"]["oneOf"]]
    assert settings["fetchNews"] in allowed


def test_make_lab_uses_the_shipped_settings_and_opens_the_tour():
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "JUPYTERLAB_SETTINGS_DIR=$(LAB_SETTINGS)" in recipe and "jupyter_config/lab/user-settings" in recipe
    flags = makefile_lab_flags()
    assert "--LabApp.default_url=/lab/tree/00_tour.ipynb" in flags and "--ServerApp.root_dir=notebooks" in flags
    assert (ROOT / "notebooks" / "00_tour.ipynb").is_file()
    hidden = json.loads(next(f for f in flags if f.startswith("--ContentsManager.hide_globs=")).split("=", 1)[1])
    assert "*.py" in hidden  # the .py twins of the lessons: the file browser lists each lesson once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_starts_on_the_tour_without_a_news_prompt():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: `apt-get install chromium` to run the browser tests")
    from playwright.sync_api import sync_playwright

    settings = Path(tempfile.mkdtemp(prefix="dsv3-lab-settings-"))
    shutil.copytree(SHIPPED, settings, dirs_exist_ok=True)
    port = _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(settings / "workspaces")}
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.token=", "--ServerApp.password=", "--allow-root", *makefile_lab_flags()]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("JupyterLab did not start within 60 s")
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.route("**/*", lambda r: r.continue_() if "127.0.0.1" in r.request.url else r.abort())
                # where `make lab` sends the browser: the server's default URL
                default = next(f for f in makefile_lab_flags() if f.startswith("--LabApp.default_url=")).split("=")[1]
                page.goto(f"http://127.0.0.1:{port}{default}")
                page.wait_for_selector(".jp-DirListing-item")
                page.wait_for_selector(".lm-TabBar-tab >> text=00_tour.ipynb")  # the first page: the tour
                page.wait_for_timeout(3000)  # the news question appears a moment after start-up when it is on
                toasts = page.locator(".Toastify__toast, .jp-Notification-Toast").all_inner_texts()
                assert not [t for t in toasts if "news" in t.lower()], toasts
                names = page.locator(".jp-DirListing-itemName").all_inner_texts()
                lessons = [n for n in names if re.match(r"\d\d_", n)]
                assert lessons and lessons == sorted(lessons) and all(n.endswith(".ipynb") for n in lessons), names
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        shutil.rmtree(settings, ignore_errors=True)
    assert server.returncode is not None
