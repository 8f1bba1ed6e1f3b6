"""The lab in headless Chromium against a real `atelier serve` (embedded model, 128x128, few steps).

Each test asserts on what the page shows and keeps a screenshot under $ATELIER_ARTIFACTS (or a temp folder,
printed at the end). Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import CHROMIUM, VIEWPORT, atelier_server, chromium

STEPS = "3"  # few steps: each 128x128 image takes well under a second on two CPU cores
RUN_TIMEOUT = 90_000  # ms

pytest.importorskip("playwright.sync_api")  # skipped without Playwright
if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

ARTIFACTS = Path(os.environ.get("ATELIER_ARTIFACTS") or tempfile.mkdtemp(prefix="atelier-lab-e2e-")) / "lab"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with atelier_server(tmp_path_factory.mktemp("lab-data"), ready_path="/atelier/lab/options") as url:
        yield url
    print(f"\nLab screenshots: {ARTIFACTS}")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{server}/lab/")
    pg.wait_for_selector("body[data-ready=true]")
    pg.fill("#f-steps", STEPS)
    yield pg
    context.close()
    assert errors == []


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def images_in(pg, selector: str) -> list[str]:
    """The src of every loaded image under `selector`."""
    pg.wait_for_function(
        f"() => [...document.querySelectorAll('{selector} img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    return pg.eval_on_selector_all(f"{selector} img", "els => els.map(e => e.getAttribute('src'))")


# ---- generate, history, node editor ----


def test_generate_shows_the_image_and_what_ran(page):
    page.fill("#f-seed", "5")
    page.click("#generate")
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)
    [src] = images_in(page, "#result-images")
    assert src.startswith("/api/view?filename=lab_")
    params = dict(
        zip(
            page.locator("#result-params dt").all_inner_texts(),
            page.locator("#result-params dd").all_inner_texts(),
            strict=True,
        )
    )
    assert (params["Seed"], params["Steps"], params["CFG"], params["Sampler"], params["Size"]) == (
        "5",
        STEPS,
        "7.5",
        "euler",
        "128 × 128",
    )
    assert page.get_attribute("#download", "download").endswith(".png")
    shot(page, "generate")


def test_history_restores_parameters_after_reload(page):
    page.fill("#f-seed", "77")
    page.fill("#f-cfg", "4")
    page.click("#generate")
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#f-seed") == "42"  # a fresh page starts from the defaults
    page.click("#tab-history")
    page.wait_for_selector("#history .hist")
    page.locator("#history .hist", has_text="77").first.click()
    assert (page.input_value("#f-seed"), page.input_value("#f-cfg"), page.input_value("#f-steps")) == ("77", "4", STEPS)
    assert page.is_visible("#panel-result")
    shot(page, "history")


def test_open_in_node_editor_loads_the_same_graph(page):
    page.fill("#f-seed", "1234")
    page.click("#generate")
    page.wait_for_selector("#open-editor:not([hidden])", timeout=RUN_TIMEOUT)
    with page.context.expect_page() as opened:
        page.click("#open-editor")
    editor = opened.value
    # The editor starts on its default graph, then loads the lab's: wait for the lab's KSampler (a function: no eval).
    loaded = """() => window.app && window.app.graph &&
        window.app.graph._nodes.some(n => n.type === "KSampler" && n.widgets_values[0] === 1234)"""
    editor.wait_for_function(loaded, timeout=60_000)
    nodes = editor.evaluate("window.app.graph.serialize().nodes.map(n => [n.type, n.widgets_values])")
    sampler = next(values for kind, values in nodes if kind == "KSampler")
    assert sampler[0] == 1234 and sampler[2] == int(STEPS)
    assert sorted(kind for kind, _ in nodes) == sorted(
        [
            "CheckpointLoaderSimple",
            "CLIPTextEncode",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
            "SaveImage",
        ]
    )
    editor.wait_for_timeout(500)
    editor.screenshot(path=str(ARTIFACTS / "node-editor.png"))


def test_bad_value_shows_a_message_and_nothing_runs(page):
    page.fill("#f-width", "100")
    page.click("#generate")
    assert page.inner_text("#message-text") == "Width must be a multiple of 8 (the latent is 8× smaller), got 100."
    assert page.locator("#result-images img").count() == 0
    shot(page, "error")


def test_stop_interrupts_the_run_with_a_message(page):
    page.fill("#f-steps", "200")  # long enough to be stopped half-way
    page.click("#generate")
    page.wait_for_function("() => /step [1-9][0-9]*\\/200/.test(document.querySelector('#progress-text').innerText)",
                           timeout=RUN_TIMEOUT)
    page.click("#stop")
    page.wait_for_function("() => document.querySelector('#message-text').innerText.length > 0", timeout=RUN_TIMEOUT)
    assert page.inner_text("#message-text") == "Stopped: the run was interrupted."
    assert page.locator("#result-images img").count() == 0  # nothing half-made is shown
    shot(page, "stopped")


def test_form_limits_are_the_node_schemas(page, server):
    """The form's fields take what the KSampler and EmptyLatentImage inputs take, as /object_info lists them."""

    def inputs(node: str) -> dict:
        with urllib.request.urlopen(f"{server}/api/object_info/{node}") as resp:
            return {name: spec[1] for name, spec in json.load(resp)[node]["input"]["required"].items()}

    sampler, latent = inputs("KSampler"), inputs("EmptyLatentImage")
    fields = {
        "steps": sampler["steps"],
        "cfg": sampler["cfg"],
        "denoise": sampler["denoise"],
        "width": latent["width"],
        "height": latent["height"],
        "batch": latent["batch_size"],
    }
    for name, schema in fields.items():
        attributes = [float(page.get_attribute(f"#f-{name}", key)) for key in ("min", "max", "step")]
        assert attributes == [schema["min"], schema["max"], schema.get("step", 1)], name
    assert page.get_attribute("#f-steps", "max") == "10000"
    # seed -1 draws a random seed; JavaScript numbers are whole-number exact up to 2^53 - 1
    assert (page.get_attribute("#f-seed", "min"), page.get_attribute("#f-seed", "max")) == ("-1", str(2**53 - 1))
    for name, value, message in [
        ("steps", "10001", "Steps must be a whole number from 1 to 10000."),
        ("batch", "4097", "Batch must be a whole number from 1 to 4096."),
        ("width", "8", "Width must be a whole number from 16 to 16384."),
    ]:
        page.fill(f"#f-{name}", value)
        page.click("#generate")
        assert page.inner_text("#message-text") == message
        page.click("#reset")
        page.fill("#f-steps", STEPS)
    assert page.locator("#result-images img").count() == 0


def test_french_interface(browser, server):
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="fr-FR")
    pg = context.new_page()
    pg.goto(f"{server}/lab/")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.inner_text("#generate") == "Générer" and pg.get_attribute("html", "lang") == "fr"
    pg.click("#lang")
    pg.wait_for_function("() => document.getElementById('generate').textContent === 'Generate'")
    assert pg.get_attribute("html", "lang") == "en"
    pg.click("#lang")
    pg.wait_for_function("() => document.getElementById('generate').textContent === 'Générer'")
    shot(pg, "french")
    context.close()


# ---- the four exercises and the XY grid ----


def run_card(page, card: str, done: str) -> None:
    page.click("#tab-exercises")
    page.click(f"#{card} .run")
    page.wait_for_selector(f"#{card} {done}", timeout=RUN_TIMEOUT)


def test_exercise_stability_gives_identical_images(page):
    run_card(page, "ex-stability", ".verdict")
    verdict = page.locator("#ex-stability .verdict")
    assert verdict.get_attribute("data-identical") == "true" and verdict.get_attribute("data-max-diff") == "0"
    assert verdict.inner_text().startswith("Pixel difference: 0 — identical.")
    assert page.locator("#ex-stability figcaption").all_inner_texts() == ["run 1 · seed 42", "run 2 · seed 42"]
    assert "(0 nodes reused from cache)" in page.inner_text("#ex-stability .help")
    shot(page, "exercise-1-stability")


def test_exercise_variability_changes_the_picture(page):
    run_card(page, "ex-variability", ".verdict")
    assert page.locator("#ex-variability figcaption").all_inner_texts() == [
        "“a red circle on the left”",
        "“a blue circle on the left”",
    ]
    assert page.get_attribute("#ex-variability .verdict", "data-identical") == "false"
    shot(page, "exercise-2-variability")


def test_exercise_cfg_gives_three_labelled_images(page):
    run_card(page, "ex-cfg", ".help")
    assert page.locator("#ex-cfg figcaption").all_inner_texts() == ["CFG 1", "CFG 7", "CFG 30"]
    assert len(set(images_in(page, "#ex-cfg"))) == 3
    shot(page, "exercise-3-cfg")


def test_exercise_convergence_compares_step_counts(page):
    page.click("#tab-exercises")
    page.fill("#ex-steps-list", "2, 4")
    run_card(page, "ex-steps", ".help")
    assert page.locator("#ex-steps figcaption").all_inner_texts() == ["2 steps", "4 steps"]
    assert len(images_in(page, "#ex-steps")) == 2
    shot(page, "exercise-4-convergence")


def test_xy_grid(page):
    page.click("#tab-exercises")
    page.select_option("#xy-x", "cfg")
    page.fill("#xy-x-values", "1, 7")
    page.select_option("#xy-y", "prompt")
    page.fill("#xy-y-values", "red, red, green")
    run_card(page, "ex-xy", "table.xy")
    page.wait_for_selector("#ex-xy .fig.pending", state="detached", timeout=RUN_TIMEOUT)
    assert page.locator("#ex-xy thead th").all_inner_texts()[1:] == ["1", "7"]
    assert page.locator("#ex-xy tbody th").all_inner_texts() == ["red", "red", "green"]
    assert len(images_in(page, "#ex-xy")) == 6
    shot(page, "exercise-xy-grid")


# ---- look inside ----


def open_view(page, name: str) -> None:
    page.click("#tab-inside")
    page.click(f".subnav [data-view={name}]")


def test_film_strip(page):
    open_view(page, "filmstrip")
    page.click("#view-filmstrip .run")
    page.wait_for_selector("#view-filmstrip .anims", timeout=RUN_TIMEOUT)
    rows = page.locator("#view-filmstrip .strip.film")
    assert [rows.nth(i).get_attribute("data-frames") for i in range(2)] == [STEPS, STEPS]
    assert page.locator("#view-filmstrip .strip.film figcaption").first.inner_text() == "1 · σ 14.615"
    webps = page.eval_on_selector_all("#view-filmstrip .anims a", "els => els.map(e => e.getAttribute('download'))")
    assert len(webps) == 2 and all(name.endswith(".webp") for name in webps)
    images_in(page, "#view-filmstrip")
    shot(page, "inside-film-strip")


def test_sampler_convergence(page):
    open_view(page, "convergence")
    page.fill("#conv-steps", "6")
    page.click("#view-convergence .run")
    page.wait_for_selector("#view-convergence svg.chart", timeout=RUN_TIMEOUT)
    samplers = page.eval_on_selector_all("#view-convergence .pair figure", "els => els.map(e => e.dataset.sampler)")
    assert samplers == ["euler", "euler_ancestral"]
    assert page.input_value("#view-convergence .player input") == "6"
    page.fill("#view-convergence .player input", "2")
    page.dispatch_event("#view-convergence .player input", "input")
    assert page.inner_text("#view-convergence .player output") == "step 2 / 6"
    assert page.locator("#view-convergence path.line").count() == 2  # one curve of change per sampler
    shot(page, "inside-convergence")


def test_euler_settles_while_euler_a_keeps_moving_at_40_steps(page):
    """The workshop's point, at the workshop's step count: over the second half of the steps, Euler's guesses
    have settled while Euler a's keep moving (about 8x on the embedded model, seed 42)."""
    open_view(page, "convergence")
    page.fill("#conv-steps", "40")
    page.click("#view-convergence .run")
    page.wait_for_selector("#view-convergence p.verdict", timeout=RUN_TIMEOUT * 3)  # 2 x 40 steps: slow on a busy CPU
    text = page.inner_text("#view-convergence p.verdict")
    assert text.startswith("Steps 21 to 40: Euler changes its picture by"), text
    assert float(page.get_attribute("#view-convergence p.verdict", "data-ratio")) > 3, text
    shot(page, "inside-convergence-40")


def test_latent_channels(page):
    open_view(page, "latent")
    page.click("#view-latent .run")
    page.wait_for_selector("#view-latent pre.stats", timeout=RUN_TIMEOUT)
    captions = page.locator("#view-latent .fig.channel figcaption").all_inner_texts()
    assert captions == [f"channel {n} (16×16)" for n in range(4)]
    assert page.inner_text("#view-latent pre.stats").startswith("latent (4, 16, 16)")
    shot(page, "inside-latent")


def test_vae_round_trip(page, tmp_path):
    yy, xx = np.mgrid[:128, :128]
    pixels = np.full((128, 128, 3), (60, 120, 200), np.uint8)
    pixels[(yy - 64) ** 2 + (xx - 40) ** 2 < 400] = (230, 40, 30)
    Image.fromarray(pixels).save(tmp_path / "disc.png")
    open_view(page, "vae")
    page.set_input_files("#vae-file", str(tmp_path / "disc.png"))
    page.wait_for_selector("#view-vae .figures", timeout=30_000)
    assert page.get_attribute("#view-vae .figures", "data-ratio") == "48"
    assert "49,152 numbers → latent 4×16×16 = 1,024 numbers: 48× fewer" in page.inner_text("#view-vae .figures")
    assert len(images_in(page, "#view-vae")) == 6  # original, reconstruction, 4 channels
    shot(page, "inside-vae")


def test_text_tokens_and_the_cut_warning(page):
    open_view(page, "text")
    page.wait_for_selector("#view-text .token")
    assert page.locator("#view-text .token b").all_inner_texts() == ["a", "red", "circle", "on", "the", "left"]
    assert page.locator("#view-text .window .cell").count() == 77
    assert page.locator("#view-text .warning").count() == 0
    page.fill("#f-prompt", "a red circle on the left " * 14)
    page.wait_for_selector("#view-text .warning")
    assert page.inner_text("#view-text .warning").startswith("Too long: 84 tokens for 75 places.")
    assert page.locator("#view-text .window").count() == 2
    shot(page, "inside-text")


def test_attention_maps(page):
    open_view(page, "attention")
    assert page.input_value("#att-words") == "red, circle, left"
    page.fill("#att-words", "red, circle")
    page.click("#view-attention .run")
    page.wait_for_selector("#view-attention .fig.heat", timeout=RUN_TIMEOUT)
    words = page.eval_on_selector_all("#view-attention .fig.heat", "els => els.map(e => e.dataset.word)")
    assert words == ["red", "circle"]
    assert len(images_in(page, "#view-attention")) == 3
    shot(page, "inside-attention")


def test_schedules_plot_highlights_the_choice(page):
    page.select_option("#f-scheduler", "karras")
    open_view(page, "schedules")
    page.wait_for_selector("#view-schedules svg.chart")
    assert page.locator("#view-schedules path.line").count() == 9  # one curve per scheduler
    assert page.get_attribute("#view-schedules path.line.hl", "data-name") == "karras"
    assert page.inner_text("#view-schedules .figures").startswith("karras, 3 steps: 14.615 →")
    shot(page, "inside-schedules")


def test_concept_map_puts_rouge_next_to_red(page):
    open_view(page, "concepts")
    page.click("#view-concepts .run")
    page.wait_for_selector("#view-concepts svg.chart", timeout=30_000)
    labels = page.eval_on_selector_all("#view-concepts g.pt", "els => els.map(e => e.dataset.label)")
    assert labels[:2] == ["red", "rouge"] and len(labels) == 12
    assert "rouge → red" in page.inner_text("#view-concepts .nearest")
    shot(page, "inside-concepts")


# ---- outputs found by their role, whatever the node ids ----


def renumbered(answer: dict) -> dict:
    """A /atelier/lab/graph answer with every node id n changed to 1000 - n (which reverses their order too), in
    the prompt, in its links and in the roles."""
    new = {old: str(1000 - int(old)) for old in answer["prompt"]}

    def relink(value):
        is_link = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in new
        return [new[value[0]], value[1]] if is_link else value

    prompt = {
        new[old]: {**node, "inputs": {name: relink(value) for name, value in node["inputs"].items()}}
        for old, node in answer["prompt"].items()
    }
    return {**answer, "prompt": prompt, "roles": {role: new[old] for role, old in answer["roles"].items()}}


def test_views_find_their_outputs_in_a_renumbered_graph(page, server):
    """Every graph the page asks for comes back renumbered: each view still shows each of its outputs, and the
    history finds the image, since the page reads outputs only through the roles that come with a graph."""
    queued = []

    def renumber(route) -> None:
        answer = renumbered(route.fetch().json())
        queued.append(answer["prompt"])
        route.fulfill(json=answer)

    page.route("**/atelier/lab/graph", renumber)
    page.fill("#f-seed", "31")
    page.click("#generate")
    page.wait_for_selector("#download:not([hidden])", timeout=RUN_TIMEOUT)
    assert len(images_in(page, "#result-images")) == 1
    page.click("#tab-history")
    page.wait_for_selector("#history .hist img")
    assert "31" in page.locator("#history .hist").first.inner_text()

    open_view(page, "latent")
    page.click("#view-latent .run")
    page.wait_for_selector("#view-latent pre.stats", timeout=RUN_TIMEOUT)
    assert page.inner_text("#view-latent pre.stats").startswith("latent (4, 16, 16)")
    assert len(images_in(page, "#view-latent")) == 5  # the image and its 4 channels

    open_view(page, "filmstrip")
    page.click("#view-filmstrip .run")
    page.wait_for_selector("#view-filmstrip .anims", timeout=RUN_TIMEOUT)
    rows = page.locator("#view-filmstrip .strip.film")
    assert [rows.nth(i).get_attribute("data-frames") for i in range(2)] == [STEPS, STEPS]
    assert len(images_in(page, "#view-filmstrip .anims")) == 2

    open_view(page, "convergence")
    page.fill("#conv-steps", "4")
    page.click("#view-convergence .run")
    page.wait_for_selector("#view-convergence svg.chart", timeout=RUN_TIMEOUT)
    assert page.inner_text("#view-convergence .player output") == "step 4 / 4"
    assert len(images_in(page, "#view-convergence .pair")) == 2

    open_view(page, "attention")
    page.fill("#att-words", "red, circle")
    page.click("#view-attention .run")
    page.wait_for_selector("#view-attention .fig.heat", timeout=RUN_TIMEOUT)
    assert len(images_in(page, "#view-attention")) == 3

    assert len(queued) == 5 and all(int(node) > 900 for prompt in queued for node in prompt)  # all renumbered
    shot(page, "inside-attention-renumbered")


def teardown_module() -> None:
    if ARTIFACTS.exists() and not any(ARTIFACTS.iterdir()):
        shutil.rmtree(ARTIFACTS)
