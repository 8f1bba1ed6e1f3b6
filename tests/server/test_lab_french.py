"""The lab as a French-speaking learner meets it (issue 16): headless Chromium in fr-FR against a real
`atelier serve` (embedded model, 128x128 or smaller, few steps).

Each test is one defect of the issue, asserted on what the page shows, with a screenshot under $ATELIER_ARTIFACTS
(or a temp folder, printed at the end). Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, VIEWPORT, atelier_server, chromium

STEPS = "2"
RUN_TIMEOUT = 90_000  # ms
OWN_MODEL = "mon-modele.safetensors"  # a user's own checkpoint: listed, never loaded here

pytest.importorskip("playwright.sync_api")  # skipped without Playwright
if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = Path(os.environ.get("ATELIER_ARTIFACTS") or tempfile.mkdtemp(prefix="atelier-lab-fr-")) / "lab-fr"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("lab-fr-data")
    (data / "models" / "checkpoints").mkdir(parents=True)
    (data / "models" / "checkpoints" / OWN_MODEL).write_bytes(b"not loaded by these tests")
    with atelier_server(data, ready_path="/atelier/lab/options") as url:
        yield url
    print(f"\nFrench lab screenshots: {ARTIFACTS}")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, locale="fr-FR")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{server}/lab/")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.get_attribute("html", "lang") == "fr"
    pg.fill("#f-steps", STEPS)
    yield pg
    context.close()
    assert errors == []


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def set_prompt(pg, text: str) -> None:
    pg.fill("#f-prompt", text)  # fires "input", as typing does


# ---- 1. the variability exercise replaces a word of the prompt, in the prompt's language ----


def test_variability_replaces_a_word_of_the_french_prompt(page):
    page.click("#tab-exercises")
    assert (page.input_value("#ex-var-from"), page.input_value("#ex-var-to")) == ("rouge", "bleu")
    page.click("#ex-variability .run")
    page.wait_for_selector("#ex-variability .verdict", timeout=RUN_TIMEOUT)
    assert page.is_hidden("#message")
    assert page.locator("#ex-variability figcaption").all_inner_texts() == [
        "“un cercle rouge à gauche”",
        "“un cercle bleu à gauche”",
    ]
    assert page.get_attribute("#ex-variability .verdict", "data-identical") == "false"
    shot(page, "1-variability")


def test_variability_follows_the_prompt_until_the_learner_types(page):
    set_prompt(page, "une étoile verte en haut")
    page.click("#tab-exercises")
    assert (page.input_value("#ex-var-from"), page.input_value("#ex-var-to")) == ("verte", "bleue")  # agreement
    set_prompt(page, "un soleil bleu")
    assert (page.input_value("#ex-var-from"), page.input_value("#ex-var-to")) == ("bleu", "rouge")
    page.fill("#ex-var-to", "jaune")
    set_prompt(page, "un soleil bleu au centre")
    assert (page.input_value("#ex-var-from"), page.input_value("#ex-var-to")) == ("bleu", "jaune")


# ---- 2. what the embedded model knows, and the words it never saw ----


def test_the_model_shows_its_world_in_french_and_builds_a_prompt(page):
    assert page.is_visible("#world")
    assert page.inner_text("#world summary") == "Ce que ce modèle sait dessiner"
    page.click("#world summary")
    objects = page.locator("#world [data-category=objects] .chip").all_inner_texts()
    assert objects[:4] == ["cercle", "carré", "triangle", "étoile"] and len(objects) == 14
    assert "vert" in page.locator("#world [data-category=colours] .chip").all_inner_texts()
    assert "sur l'herbe" in page.locator("#world [data-category=backgrounds] .chip").all_inner_texts()
    page.click("#world [data-category=objects] [data-name=star]")
    assert "couleur" in page.inner_text("#world .world-hint").lower()
    for category, name in [("colours", "green"), ("sizes", "small"), ("places", "1,0"), ("backgrounds", "grass")]:
        page.click(f"#world [data-category={category}] [data-name='{name}']")
    page.wait_for_function("document.querySelector('#f-prompt').value.startsWith('une petite')")
    assert page.input_value("#f-prompt") == "une petite étoile verte à gauche sur l'herbe"  # agreement, elision
    assert page.is_hidden("#prompt-unknown")
    shot(page, "2-world-builder")


def test_words_never_seen_in_training_are_marked_before_running(page):
    assert page.is_hidden("#prompt-unknown")  # the default prompt is the world's own
    set_prompt(page, "un chat astronaute sur l'herbe")
    page.wait_for_selector("#prompt-unknown:not([hidden])")
    assert page.get_attribute("#prompt-unknown", "data-words") == "chat astronaute"
    assert page.locator("#prompt-unknown mark").all_inner_texts() == ["chat", "astronaute"]
    assert page.inner_text("#prompt-unknown").startswith("Jamais vu à l'entraînement : chat, astronaute")
    shot(page, "2-unknown-words")
    set_prompt(page, "a cat")
    assert page.get_attribute("#prompt-unknown", "data-words") == "cat"
    set_prompt(page, "un cercle rouge à gauche")
    assert page.is_hidden("#prompt-unknown")


def test_nothing_is_said_of_a_users_own_checkpoint(page):
    set_prompt(page, "un chat astronaute")
    page.wait_for_selector("#prompt-unknown:not([hidden])")
    page.select_option("#f-model", OWN_MODEL)
    page.wait_for_selector("#world", state="hidden")
    assert page.is_hidden("#prompt-unknown")
    shot(page, "2-own-checkpoint")


# ---- 3. sizes: the native size, what happens above it, a warning before long runs; an honest Stop ----


def test_the_native_size_and_a_warning_before_long_sizes(page):
    assert page.inner_text("#size-native") == (
        "Taille native de ce modèle : 128×128 (il a appris sur des images de cette taille)."
    )
    assert page.is_hidden("#size-warning")
    page.fill("#f-width", "256")
    assert page.get_attribute("#size-native", "data-above") == "true"
    assert "il répète ses objets sur toute l'image" in page.inner_text("#size-native")
    assert page.is_hidden("#size-warning")  # twice the pixels: not long yet
    page.fill("#f-width", "512")
    page.fill("#f-height", "512")
    page.wait_for_selector("#size-warning:not([hidden])")
    assert page.inner_text("#size-warning") == (
        "Long : 16× les pixels de 128×128, donc chaque étape coûte au moins 16× plus."
    )
    shot(page, "3-size-warning")
    page.select_option("#f-model", OWN_MODEL)  # an SD1.x-style checkpoint without our metadata: 512
    assert page.inner_text("#size-native").startswith("Taille native de ce modèle : 512×512")
    assert page.is_hidden("#size-warning")


def test_stop_says_stopped_only_once_the_server_has_stopped(page, server):
    page.fill("#f-steps", "400")  # long enough to be stopped half-way
    page.click("#generate")
    page.wait_for_function(
        "/étape [1-9][0-9]*\\/400/.test(document.querySelector('#progress-text').innerText)", timeout=RUN_TIMEOUT
    )
    # A server that has not stopped yet: the interrupt request is answered but never reaches it.
    page.route("**/api/interrupt", lambda route: route.fulfill(status=200, body=""))
    page.click("#stop")
    page.wait_for_function("document.querySelector('#progress-text').innerText.includes('arrêt demandé')")
    page.wait_for_timeout(1500)
    assert page.is_hidden("#message")  # no "Arrêté" while the server computes on
    assert page.locator("#result-images img.live").count() == 1
    shot(page, "3-stop-requested")
    page.unroute("**/api/interrupt")
    page.click("#stop")
    page.wait_for_function("document.querySelector('#message-text').innerText.length > 0", timeout=RUN_TIMEOUT)
    assert page.inner_text("#message-text") == "Arrêté : le calcul a été interrompu."
    with urllib.request.urlopen(f"{server}/api/history?max_items=1") as resp:
        [entry] = json.load(resp).values()
    assert "execution_interrupted" in [kind for kind, _ in entry["status"]["messages"]]
    shot(page, "3-stopped")


# ---- 6. what the server says reaches the learner in French ----


def open_view(pg, name: str) -> None:
    pg.click("#tab-inside")
    pg.click(f".subnav [data-view={name}]")


def test_a_word_missing_from_the_prompt_is_said_in_french(page):
    open_view(page, "attention")
    page.fill("#att-words", "chat")
    page.click("#view-attention .run")
    page.wait_for_selector("#message:not([hidden])", timeout=RUN_TIMEOUT)
    assert page.inner_text("#message-text") == (
        "Le mot « chat » n'est pas dans le prompt ; ses mots sont : un, cercle, rouge, à, gauche."
    )
    shot(page, "6-word-missing")


def test_lab_route_errors_are_said_in_french(page):
    open_view(page, "concepts")
    page.fill("#concept-words", "rouge, bleu")
    page.click("#view-concepts .run")
    page.wait_for_selector("#message:not([hidden])", timeout=RUN_TIMEOUT)
    assert page.inner_text("#message-text") == (
        "Donnez au moins 3 mots ou images en tout : une carte de moins de points ne montre rien."
    )
    open_view(page, "text")
    set_prompt(page, "rouge " * 400)
    page.wait_for_function("document.querySelector('#view-text .out').innerText.startsWith('Le texte fait')")
    assert (
        page.inner_text("#view-text .out") == "Le texte fait 2400 caractères ; la vue des tokens en lit au plus 2000."
    )


def test_a_step_count_of_zero_is_refused_in_french_before_anything_runs(page):
    page.click("#tab-exercises")
    page.fill("#ex-steps-list", "0, 2")
    page.click("#ex-steps .run")
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message-text") == "Étapes doit être un nombre entier de 1 à 10000."
    assert page.locator("#ex-steps img").count() == 0


def test_latent_statistics_are_in_french_with_decimal_commas(page):
    page.fill("#f-width", "64")
    page.fill("#f-height", "64")
    open_view(page, "latent")
    page.click("#view-latent .run")
    page.wait_for_selector("#view-latent pre.stats", timeout=RUN_TIMEOUT)
    head, *lines = page.inner_text("#view-latent pre.stats").split("\n")
    assert head == "latent (4, 8, 8) (canaux, hauteur, largeur), en unités brutes du VAE"
    assert len(lines) == 4
    for n, line in enumerate(lines):
        assert re.fullmatch(
            rf"canal {n} : moyenne [+-]\d,\d{{3}}  écart-type \d,\d{{3}}  min [+-]\d,\d{{3}}  max [+-]\d,\d{{3}}", line
        ), line
    shot(page, "6-latent-stats")


def teardown_module() -> None:
    if ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS)
