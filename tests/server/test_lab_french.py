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

import numpy as np
import pytest
from PIL import Image

from atelier.world.dataset import render_item
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
    expected = "une petite étoile verte à gauche sur l'herbe"  # agreement, elision; the last click's prompt wins
    page.wait_for_function("(want) => document.querySelector('#f-prompt').value === want", arg=expected)
    page.wait_for_timeout(300)  # an earlier click's answer arriving late must not replace it
    assert page.input_value("#f-prompt") == expected
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
        "() => /étape [1-9][0-9]*\\/400/.test(document.querySelector('#progress-text').innerText)", timeout=RUN_TIMEOUT
    )
    # A server that has not stopped yet: the interrupt request is answered but never reaches it.
    page.route("**/api/interrupt", lambda route: route.fulfill(status=200, body=""))
    page.click("#stop")
    page.wait_for_function("() => document.querySelector('#progress-text').innerText.includes('arrêt demandé')")
    page.wait_for_timeout(1500)
    assert page.is_hidden("#message")  # no "Arrêté" while the server computes on
    assert page.locator("#result-images img.live").count() == 1
    shot(page, "3-stop-requested")
    page.unroute("**/api/interrupt")
    page.click("#stop")
    page.wait_for_function("() => document.querySelector('#message-text').innerText.length > 0", timeout=RUN_TIMEOUT)
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
    page.wait_for_function("() => document.querySelector('#view-text .out').innerText.startsWith('Le texte fait')")
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


# ---- 9. the smaller things ----


def contrast(pg, selector: str) -> float:
    """WCAG contrast ratio of an element's text colour on its background colour (both opaque rgb)."""
    colours = pg.eval_on_selector(selector, "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")
    assert all(c.startswith("rgb(") for c in colours), colours

    def luminance(css: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(c) for c in colours), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_a_hovered_tab_stays_readable(page):
    page.hover("#tab-history")
    assert contrast(page, "#tab-history") >= 4.5
    shot(page, "9-tab-hover")


def test_the_token_view_shows_no_stray_null(page):
    open_view(page, "text")
    page.wait_for_selector("#view-text .token")
    assert "null" not in page.inner_text("#view-text .out")


def test_a_result_from_the_cache_says_so_with_french_numbers_and_no_broken_image(page):
    page.fill("#f-width", "64")
    page.fill("#f-height", "64")
    page.fill("#f-seed", "9")
    page.click("#generate")
    broken = "[...document.querySelectorAll('#result-images img')].filter(i => !i.hidden && !i.getAttribute('src'))"
    assert page.evaluate(f"() => {broken}.length") == 0  # before the first preview: a waiting slot, no broken image
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)
    assert "cache" not in page.inner_text("#progress-text") and page.is_hidden("#result-note")
    params = dict(
        zip(
            page.locator("#result-params dt").all_inner_texts(),
            page.locator("#result-params dd").all_inner_texts(),
            strict=True,
        )
    )
    assert params["CFG"] == "7,5"  # a decimal comma in French
    page.click("#generate")  # the same graph again
    page.wait_for_function(
        "() => document.querySelector('#progress-text').innerText.includes('depuis le cache')", timeout=RUN_TIMEOUT
    )
    assert page.inner_text("#result-note").startswith("Depuis le cache : ce graphe exact a déjà tourné")
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    assert hrefs and all(h.startswith(page.url.split("/lab/")[0] + "/") for h in hrefs)  # nothing points outside
    shot(page, "9-from-cache")
    page.click("#tab-exercises")
    page.fill("#ex-steps-list", "2")
    for expected in ("false", "true"):  # the same exercise twice: the second answer comes from the cache
        page.click("#ex-steps .run")
        page.wait_for_selector(f"#ex-steps figure[data-from-cache={expected}]", timeout=RUN_TIMEOUT)
    assert page.inner_text("#ex-steps .cache-note") == "depuis le cache"
    assert page.locator("#ex-steps figcaption").all_inner_texts() == ["2 étapes"]


def test_a_batch_is_shown_as_a_grid(page):
    for field, value in [("width", "32"), ("height", "32"), ("batch", "4"), ("steps", "1")]:
        page.fill(f"#f-{field}", value)
    page.click("#generate")
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)
    boxes = page.eval_on_selector_all("#result-images figure", "els => els.map(e => e.getBoundingClientRect().top)")
    assert len(boxes) == 4 and len({round(top) for top in boxes}) <= 2  # 4 images in at most 2 rows, not 4
    shot(page, "9-batch-grid")


def test_an_eight_column_xy_grid_fits_and_its_axis_says_what_it_does(page):
    page.click("#tab-exercises")
    for field, value in [("width", "32"), ("height", "32"), ("steps", "1")]:
        page.fill(f"#f-{field}", value)
    page.select_option("#xy-x", "seed")
    page.fill("#xy-x-values", "1, 2, 3, 4, 5, 6, 7, 8")
    page.select_option("#xy-y", "cfg")
    page.fill("#xy-y-values", "7")
    page.click("#ex-xy .run")
    page.wait_for_selector("#ex-xy table.xy", timeout=RUN_TIMEOUT)
    page.wait_for_selector("#ex-xy .fig.pending", state="detached", timeout=RUN_TIMEOUT)
    right = page.eval_on_selector(".main", "e => e.getBoundingClientRect().right")
    edges = page.eval_on_selector_all("#ex-xy img", "els => els.map(e => e.getBoundingClientRect().right)")
    assert len(edges) == 8 and max(edges) <= right, (edges, right)
    assert page.eval_on_selector("#xy-x option[value=prompt]", "o => o.textContent") == "prompt : remplacer un mot"
    shot(page, "9-xy-8-columns")


def test_the_vae_says_it_knows_only_its_world(page, tmp_path):
    Image.fromarray(render_item(0, 0)[0]).save(tmp_path / "world.png")  # a picture of its world: 30 dB
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)  # a "photo" from elsewhere
    Image.fromarray(noise).save(tmp_path / "photo.png")
    open_view(page, "vae")
    page.set_input_files("#vae-file", str(tmp_path / "world.png"))
    page.wait_for_selector("#view-vae .figures", timeout=30_000)
    assert page.locator("#view-vae .vae-outside").count() == 0
    page.set_input_files("#vae-file", str(tmp_path / "photo.png"))
    page.wait_for_selector("#view-vae .vae-outside", timeout=30_000)
    assert page.inner_text("#view-vae .vae-outside").startswith("PSNR ")
    assert "cette image est loin de ce monde" in page.inner_text("#view-vae .vae-outside")
    assert "Ce VAE n'a appris que les images du monde du modèle intégré" in page.inner_text("#view-vae .out")
    assert "49\u202f152 nombres" in page.inner_text("#view-vae .figures")  # French digit grouping
    shot(page, "9-vae-outside")


def teardown_module() -> None:
    if ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS)


# ---- 8. Euler settles, Euler a keeps moving: visible to the eye ----

MOVED_BRIGHTNESS = """sel => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0;
  for (let k = 0; k < d.length; k += 4) sum += d[k] + d[k + 1] + d[k + 2];
  return sum / (d.length / 4) / 3;
}"""


def test_euler_settles_and_euler_a_keeps_moving_in_french(page):
    """At 40 steps the second half's change per step is several times larger for Euler a (the verdict's ratio), and
    the amplified "what moved" picture (change summed over the second half) is dark for Euler, lit for Euler a."""
    open_view(page, "convergence")
    page.fill("#conv-steps", "40")
    page.click("#view-convergence .run")
    page.wait_for_selector("#view-convergence p.verdict, #message:not([hidden])", timeout=RUN_TIMEOUT * 6)  # busy CPU
    assert page.is_hidden("#message"), page.inner_text("#message-text")
    verdict = page.inner_text("#view-convergence p.verdict")
    assert verdict.startswith("Des étapes 21 à 40 : Euler change son image de") and "fois plus" in verdict, verdict
    ratio = float(page.get_attribute("#view-convergence p.verdict", "data-ratio"))
    assert ratio > 3, verdict
    assert re.search(r"\d,\d", verdict)  # decimal commas
    euler = page.evaluate(MOVED_BRIGHTNESS, "#view-convergence .moved [data-sampler=euler] canvas")
    ancestral = page.evaluate(MOVED_BRIGHTNESS, "#view-convergence .moved [data-sampler=euler_ancestral] canvas")
    assert ancestral > 1.5 * max(euler, 0.5), (euler, ancestral)  # measured 16.7 vs 8.1 (seed 42), mean of 0-255
    caption = page.locator("#view-convergence .moved figcaption").first.inner_text()
    assert caption == "Euler : changement cumulé de l'étape 20 à 40, × 20"
    shot(page, "8-convergence-40-steps")


# ---- every figure can be saved as a PNG with its parameters ----


def png_texts(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return dict(image.text)


def test_a_figure_and_a_chart_are_saved_as_png_with_their_parameters(page):
    page.click("#generate")
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)  # the final image, not a preview
    with page.expect_download() as download:
        page.click("#result-images figure .png-save")
    name = download.value.suggested_filename
    assert name == "atelier-result-seed42-2steps-cfg7.5-euler.png", name
    texts = png_texts(Path(download.value.path()))
    assert "un cercle rouge à gauche" in json.loads(texts["atelier"])["params"]["prompt"]
    assert "Steps: 2, Sampler: euler" in texts["parameters"]
    open_view(page, "schedules")
    page.wait_for_selector("#view-schedules svg.chart + .png-save")
    assert page.get_attribute("#view-schedules .png-save", "title").startswith("Enregistrer cette figure en PNG")
    with page.expect_download() as download:
        page.click("#view-schedules .png-save")
    assert download.value.suggested_filename.startswith("atelier-schedules-seed42-")
    with Image.open(download.value.path()) as chart:
        assert chart.size == (1440, 680) and len(set(chart.convert("RGB").getdata())) > 3  # drawn, not blank
    shot(page, "figures-png-buttons")
