"""Notebook 06's labeling widget in a real browser: JupyterLab on a local port, the student version of 06 run in
headless Chromium (Playwright driving the system's `chromium`), the buttons clicked with the mouse, the label file
read back, and a restarted kernel resuming where the clicks left off. A screenshot is kept in .artifacts/browser/.

Skipped with the reason where Playwright or Chromium is missing (a student's laptop); `.ci/run` installs both
(requirements-dev.txt and the OS package), so CI runs it. The labels go to a scratch folder through
MINIRLHF_LABELS_DIR: a student's own labels/ is never touched."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from minirlhf import REPO_ROOT

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -r requirements-dev.txt)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")]
ARTIFACTS = REPO_ROOT / ".artifacts" / "browser"
NOTEBOOK = REPO_ROOT / "notebooks" / "student" / "06_preference_data.ipynb"
APP = "window.jupyterapp.shell.currentWidget"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_jupyterlab(root: Path, labels: Path, port: int, token: str) -> subprocess.Popen:
    env = {**os.environ, "MINIRLHF_LABELS_DIR": str(labels), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
                               "--LabApp.expose_app_in_browser=True"],   # window.jupyterapp: run cells by command
                              env=env, stdout=open(root / "jupyterlab.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"JupyterLab did not start: {(root / 'jupyterlab.log').read_text()[-2000:]}")


def _run_all_and_wait_for_the_widget(page):
    page.wait_for_function(f"{APP} && {APP}.sessionContext && {APP}.sessionContext.session "
                           f"&& {APP}.sessionContext.session.kernel", timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    button = page.get_by_role("button", name="A is better").first
    button.wait_for(state="attached", timeout=600_000)
    page.wait_for_function(f"{APP}.sessionContext.session.kernel.status === 'idle'", timeout=600_000)
    button.scroll_into_view_if_needed()


def _shown_prompt(page) -> str:
    widget = page.locator(".widget-vbox").filter(has=page.get_by_role("button", name="A is better")).last
    return widget.locator("pre").first.text_content()


def _progress(page) -> str:
    return page.get_by_text(re.compile(r"^\d+ / \d+ labelled$")).first.text_content()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_labeling_widget_saves_every_click_and_resumes_in_a_real_browser(tmp_path):
    root, labels = tmp_path / "lab", tmp_path / "labels"
    root.mkdir()
    assert "feedback.labels_dir()" in NOTEBOOK.read_text(), "06 must take its label folder from feedback.labels_dir()"
    shutil.copy(NOTEBOOK, root / "06.ipynb")
    port, token = _free_port(), "minirlhf-browser-test"
    server = _start_jupyterlab(root, labels, port, token)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/06.ipynb?token={token}")
            _run_all_and_wait_for_the_widget(page)
            assert _progress(page) == "0 / 20 labelled"
            prompts = []
            for button, shown in (("A is better", "1 / 20"), ("B is better", "2 / 20"), ("Tie", "3 / 20"),
                                  ("Undo", "2 / 20"), ("Skip", "3 / 20")):
                prompts.append(_shown_prompt(page))
                page.get_by_role("button", name=button).first.click()          # a real mouse click
                page.get_by_text(f"{shown} labelled", exact=True).first.wait_for(state="attached", timeout=60_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.get_by_role("button", name="A is better").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "labeling_widget.png"))
            shown_before = _shown_prompt(page)

            records = _records(labels / "my_labels.jsonl")
            assert [(r["op"], r.get("choice")) for r in records] == [
                ("label", "a"), ("label", "b"), ("label", "tie"), ("undo", None), ("label", "skip")]
            assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
            assert len({r["pair_id"] for r in records[:3]}) == 3 and records[4]["pair_id"] == records[2]["pair_id"]
            assert records[3]["undoes"] == records[2]["seq"]
            assert prompts[4] == prompts[2] != prompts[3]        # after Undo the undone pair is shown again

            # a restarted kernel opens a new session on the same file and resumes where the clicks left off
            page.evaluate(f"{APP}.sessionContext.restartKernel()")
            page.wait_for_timeout(2000)
            _run_all_and_wait_for_the_widget(page)
            page.get_by_text("3 / 20 labelled", exact=True).first.wait_for(state="attached", timeout=60_000)
            assert _shown_prompt(page) == shown_before
            assert len(_records(labels / "my_labels.jsonl")) == 5                  # reopening wrote nothing
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
