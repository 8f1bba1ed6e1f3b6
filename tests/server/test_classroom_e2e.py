"""Classroom mode in headless Chromium: two learners in separate browser contexts and the instructor in a third,
against a real classroom server (embedded model, 128x128, 3 steps) on 127.0.0.1.

Each learner joins by the class link, generates in the lab and sees only their own history; neither can open the
other's image by its URL; the instructor sees both. Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.server.classroom import REFUSED, Classroom
from atelier.server.store import PromptStore
from tests.browser import CHROMIUM, VIEWPORT, chromium, free_port

RUN_TIMEOUT = 90_000  # ms

pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

# `atelier serve --classroom` binds the LAN; the test's server is the same app on 127.0.0.1 only.
SERVER_SCRIPT = """
import sys
from aiohttp import web
from atelier.server.app import create_app, default_registry
from atelier.server.files import DataDir
data_dir, port = sys.argv[1], int(sys.argv[2])
app = create_app(default_registry(DataDir(data_dir)), data_dir, classroom=True)
web.run_app(app, host="127.0.0.1", port=port, print=None)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("classroom-data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (data_dir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, str(data_dir), str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/lab/", timeout=2)
                except urllib.error.HTTPError as ex:
                    assert ex.code == 403 and ex.read().decode() == REFUSED  # up, and closed to strangers
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((data_dir / "server.log").read_text()[-2000:]) from None
                    time.sleep(0.2)
            yield url, data_dir
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as b:
        yield b


def secrets_of(data_dir: Path) -> tuple[str, str]:
    """(join code, instructor secret), as the terminal printed them."""
    store = PromptStore(data_dir / "atelier.sqlite")
    room = Classroom(store)
    store.close()
    return room.join_code, room.instructor_secret


def learner(browser, url: str, code: str, name: str, seed: str):
    """A browser context that joins as `name` and generates one image in the lab; returns (page, image src)."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    page = context.new_page()
    page.goto(f"{url}/lab/?join={code}")
    page.fill("#name", name)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready=true]")
    assert "join=" not in page.url
    page.fill("#f-steps", "3")
    page.fill("#f-seed", seed)
    page.click("#generate")
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)
    page.wait_for_function("[...document.querySelectorAll('#result-images img')].every(i => i.naturalWidth > 0)")
    [src] = page.eval_on_selector_all("#result-images img", "els => els.map(e => e.getAttribute('src'))")
    return page, src


def history_count(page) -> int:
    page.click("#tab-history")
    page.wait_for_selector("#history .hist")
    return page.locator("#history .hist").count()


def test_two_learners_and_the_instructor(browser, server):
    url, data_dir = server
    code, secret = secrets_of(data_dir)
    ana, ana_src = learner(browser, url, code, "Ana", "5")
    ben, ben_src = learner(browser, url, code, "Ben", "6")
    assert ana_src != ben_src

    assert history_count(ana) == 1 and history_count(ben) == 1
    assert ana.locator("#history .hist").first.inner_text() != ""
    assert ana.request.get(url + ana_src).status == 200
    assert ana.request.get(url + ben_src).status == 404  # Ben's image, by its URL, from Ana's browser
    assert ben.request.get(url + ana_src).status == 404

    teacher = browser.new_context(viewport=VIEWPORT, locale="en-US").new_page()
    teacher.goto(f"{url}/lab/?instructor={secret}")
    teacher.wait_for_selector("body[data-ready=true]")
    assert "instructor=" not in teacher.url
    assert history_count(teacher) == 2
    assert teacher.request.get(url + ana_src).status == 200 and teacher.request.get(url + ben_src).status == 200

    stranger = browser.new_context().new_page()
    response = stranger.goto(f"{url}/lab/")
    assert response.status == 403 and stranger.inner_text("body") == REFUSED
