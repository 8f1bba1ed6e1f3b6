"""The instructor's page in headless Chromium: two learners in separate browser contexts and the instructor in a
third, against a real classroom server (embedded model, 128x128, 2-3 steps) on 127.0.0.1.

Each learner generates and sees only their own history, and cannot open the other's image by its URL; the
instructor's wall shows both images with their parameters, and the parcours table how far each learner is; an
exercise the instructor sends ("seed 42, CFG 1 / 7") appears in both labs, runs there, and its results line up on
the instructor's page. Screenshots are kept under $ATELIER_ARTIFACTS (or a temp folder, printed at the end).
Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, VIEWPORT

pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

from tests.server.test_classroom_e2e import (  # the same server and learners
    RUN_TIMEOUT,
    browser,  # noqa: F401  (a fixture)
    history_count,
    learner,
    secrets_of,
    server,  # noqa: F401  (a fixture)
)

ARTIFACTS = Path(os.environ.get("ATELIER_ARTIFACTS") or tempfile.mkdtemp(prefix="atelier-classroom-e2e-")) / "classroom"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def loaded(page, selector: str, count: int) -> list[str]:
    """Wait for `count` loaded images under `selector`; their src."""
    page.wait_for_function(
        f"() => {{ const imgs = [...document.querySelectorAll('{selector} img')];"
        f" return imgs.length === {count} && imgs.every(i => i.complete && i.naturalWidth > 0); }}",
        timeout=RUN_TIMEOUT,
    )
    return page.eval_on_selector_all(f"{selector} img", "els => els.map(e => e.getAttribute('src'))")


def test_the_instructor_watches_the_class_and_sends_an_exercise(browser, server):  # noqa: F811
    url, data_dir = server
    code, secret = secrets_of(data_dir)
    errors: list[str] = []
    ana, ana_src = learner(browser, url, code, "Ana", "5")
    ben, ben_src = learner(browser, url, code, "Ben", "6")
    for page in (ana, ben):
        page.on("pageerror", lambda e: errors.append(str(e)))

    # Each learner: their own history, and not the other's image.
    assert history_count(ana) == 1 and history_count(ben) == 1
    assert ana.request.get(url + ben_src).status == 404 and ben.request.get(url + ana_src).status == 404
    assert ana.request.get(f"{url}/classroom/").status == 403  # the instructor's page is not theirs

    # The instructor: the link lands on the page; the wall shows both images and their parameters.
    teacher = browser.new_context(viewport=VIEWPORT, locale="fr-FR").new_page()
    teacher.on("pageerror", lambda e: errors.append(str(e)))
    teacher.goto(f"{url}/classroom/?instructor={secret}")
    teacher.wait_for_selector("body[data-ready=true]")
    assert teacher.url == f"{url}/classroom/"
    assert teacher.inner_text("h1") == "Atelier Classe"  # French, as the browser asks
    assert teacher.is_hidden("#message")  # no empty message bar (its display: flex hid the hidden attribute)
    wall = sorted(loaded(teacher, "#wall", 2))
    assert wall == sorted([ana_src, ben_src])
    cards = {c.get_attribute("data-name"): c.inner_text() for c in teacher.locator("#wall .learner").all()}
    assert set(cards) == {"Ana", "Ben"} and "Graine 5" in cards["Ana"] and "Graine 6" in cards["Ben"]
    assert f"join={code}" in teacher.inner_text("#join-url")
    teacher.wait_for_function("() => document.getElementById('join-qr').naturalWidth > 0")  # the QR code
    shot(teacher, "instructor-wall")

    # Le parcours: Ana reads the first theory screen in her lab; the instructor's table shows where each one is,
    # in French, then in English.
    ana.click("#tab-parcours")
    ana.click("#pc-th-noise .read")
    ana.wait_for_selector("#pc-th-noise[data-done=true]")
    teacher.wait_for_selector('#parcours tr[data-name="Ana"][data-done="1"]', timeout=10_000)
    rows = {r.get_attribute("data-name"): r.inner_text() for r in teacher.locator("#parcours tbody tr").all()}
    assert "1 / 13" in rows["Ana"] and "2. L'espace latent et le VAE" in rows["Ana"]
    assert "0 / 13" in rows["Ben"] and "1. Du bruit à l'image" in rows["Ben"]
    shot(teacher, "instructor-parcours-fr")
    teacher.click("#lang")
    teacher.wait_for_function("() => document.getElementById('parcours').innerText.includes('Latent space and')")
    assert "Current step" in teacher.inner_text("#parcours thead")
    teacher.click("#lang")
    teacher.wait_for_function("() => document.querySelector('h1').innerText === 'Atelier Classe'")

    # An exercise for everyone: seed 42, 2 steps, CFG 1 / 7.
    teacher.fill("#ex-title", "CFG")
    teacher.fill("#ex-seed", "42")
    teacher.fill("#ex-steps", "2")
    teacher.select_option("#ex-vary", "cfg")
    teacher.fill("#ex-values", "1, 7")
    teacher.click("#ex-push")
    teacher.wait_for_selector("#results-section:not([hidden])")

    for page in (ana, ben):  # it reaches both labs on their sockets and fills their forms
        page.wait_for_selector("#ex-class:not([hidden])", timeout=10_000)
        assert page.input_value("#f-seed") == "42" and page.input_value("#f-steps") == "2"
        assert page.is_visible("#panel-exercises")
        assert "42" in page.inner_text("#ex-class .class-text")
    for page in (ana, ben):
        page.click("#ex-class .run")
    for page in (ana, ben):
        loaded(page, "#ex-class .out", 2)
    shot(ana, "lab-exercise-ana")

    # The class's results side by side: one row per learner, one column per CFG value.
    teacher.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].filter(i => i.naturalWidth > 0).length === 4",
        timeout=RUN_TIMEOUT,
    )
    rows = {r.get_attribute("data-name"): r.locator("img").count() for r in teacher.locator("#results tbody tr").all()}
    assert rows == {"Ana": 2, "Ben": 2}
    headers = teacher.locator("#results thead th").all_inner_texts()
    assert headers[1:] == ["CFG 1", "CFG 7"]
    shot(teacher, "instructor-results")

    # The learners' histories still hold only their own lab images; the instructor's export holds all six.
    assert history_count(ana) == 1 and history_count(ben) == 1
    export = teacher.request.get(f"{url}/atelier/classroom/export.zip")
    assert export.status == 200
    with zipfile.ZipFile(io.BytesIO(export.body())) as zf:
        assert sum(name.endswith(".png") for name in zf.namelist()) == 6

    # Removing Ben takes two clicks; then his cookie opens nothing, and the wall shows Ana alone.
    remove = teacher.locator('#wall .learner[data-name="Ben"] button')
    remove.click()
    assert remove.inner_text() == "Retirer ? Cliquez encore"
    remove.click()
    teacher.wait_for_function("() => document.querySelectorAll('#wall .learner').length === 1")
    assert "Ben" in teacher.inner_text("#removed")
    assert ben.request.get(f"{url}/api/history").status == 403
    shot(teacher, "instructor-after-removal")
    assert errors == []
    print(f"\nClassroom screenshots: {ARTIFACTS}")
