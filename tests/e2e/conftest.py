"""End-to-end fixtures: `atelier serve` in a subprocess on a free port, and headless Chromium driven by Playwright.

Chromium is Debian's (/usr/bin/chromium, `apt-get install chromium`); Playwright never downloads a browser here.
Screenshots go to $ATELIER_ARTIFACTS (or a temporary folder); the path is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, VIEWPORT, atelier_server, chromium

_artifacts: list[Path] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """The base URL of a fresh `atelier serve` (its own empty data directory), stopped after the module."""
    if not CHROMIUM.exists():
        pytest.skip("End-to-end tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium).")
    with atelier_server(tmp_path_factory.mktemp("atelier-data")) as url:
        yield url


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("ATELIER_ARTIFACTS") or tmp_path_factory.mktemp("e2e-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    _artifacts.append(folder)
    return folder


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as browser:
        yield browser


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
        # Predicates are functions, not strings: a string is run with eval, which the editor's policy forbids.
        ready = "() => window.app && window.app.graph && window.app.extensionManager"
        self.page.wait_for_function(ready, timeout=60_000)

    def command(self, command_id: str) -> None:
        """Run one of the editor's commands, as its menus and keyboard shortcuts do."""
        self.page.evaluate("id => window.app.extensionManager.command.execute(id)", command_id)

    def of_type(self, kind: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == kind]


def open_context(browser, server: str, locale: str):
    """A fresh browser context (empty local storage) in `locale`, with request, console and WebSocket recorders."""
    context = browser.new_context(viewport=VIEWPORT, locale=locale)
    page = context.new_page()
    ed = Editor(page, server)
    page.on("request", lambda request: ed.requests.append(request.url))
    page.on("console", lambda msg: msg.type == "error" and ed.console_errors.append(msg.text))
    page.on("pageerror", lambda error: ed.page_errors.append(str(error)))

    def on_socket(ws) -> None:
        ws.on("framereceived", lambda frame: isinstance(frame, str) and ed.messages.append(json.loads(frame)))

    page.on("websocket", on_socket)
    return context, ed


@pytest.fixture
def editor(browser, server):
    """The editor in an English (en-US) browser."""
    context, ed = open_context(browser, server, "en-US")
    yield ed
    context.close()


@pytest.fixture
def editor_fr(browser, server):
    """The editor in a French (fr-FR) browser, as the workshop's learners have it."""
    context, ed = open_context(browser, server, "fr-FR")
    yield ed
    context.close()


def pytest_terminal_summary(terminalreporter) -> None:
    for folder in _artifacts:
        terminalreporter.write_line(f"e2e screenshots: {folder}")
