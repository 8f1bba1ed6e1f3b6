"""End-to-end fixtures: `atelier serve` in a subprocess on a free port, and headless Chromium driven by Playwright.

Chromium is Debian's (/usr/bin/chromium, `apt-get install chromium`); Playwright never downloads a browser here.
Screenshots go to $ATELIER_ARTIFACTS (or a temporary folder); the path is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1366, "height": 768}
_artifacts: list[Path] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """The base URL of a fresh `atelier serve` (its own empty data directory), stopped after the module."""
    if not CHROMIUM.exists():
        pytest.skip("End-to-end tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium).")
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("atelier-data")
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 (closed by the finalizer below)
    process = subprocess.Popen(
        [sys.executable, "-m", "atelier.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/system_stats", timeout=2) as response:
                json.load(response)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                raise RuntimeError(
                    f"atelier serve did not start: {(data_dir / 'server.log').read_text()[-2000:]}"
                ) from None
            time.sleep(0.3)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("ATELIER_ARTIFACTS") or tmp_path_factory.mktemp("e2e-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    _artifacts.append(folder)
    return folder


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Editor:
    """One browser tab on the editor, with everything it asked for and everything it was told."""

    page: object
    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # WebSocket text frames {"type", "data"} from the server

    def open(self) -> None:
        self.page.goto(f"{self.url}/")
        self.page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=60_000)

    def command(self, command_id: str) -> None:
        """Run one of the editor's commands, as its menus and keyboard shortcuts do."""
        self.page.evaluate("id => window.app.extensionManager.command.execute(id)", command_id)

    def of_type(self, kind: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == kind]


@pytest.fixture
def editor(browser, server):
    """A fresh browser context (empty local storage) with request, console and WebSocket recorders."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    ed = Editor(page, server)
    page.on("request", lambda request: ed.requests.append(request.url))
    page.on("console", lambda msg: msg.type == "error" and ed.console_errors.append(msg.text))
    page.on("pageerror", lambda error: ed.page_errors.append(str(error)))

    def on_socket(ws) -> None:
        ws.on("framereceived", lambda frame: isinstance(frame, str) and ed.messages.append(json.loads(frame)))

    page.on("websocket", on_socket)
    yield ed
    context.close()


def pytest_terminal_summary(terminalreporter) -> None:
    for folder in _artifacts:
        terminalreporter.write_line(f"e2e screenshots: {folder}")
