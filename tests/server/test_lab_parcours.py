"""Le parcours walked end to end in headless Chromium, in French and in English (issue 16), against a real
`atelier serve` on the embedded model with 2-4 steps per run.

Theory steps are read, module 1's exercises are run from the step's own button, module 2's graphs are queued
as the node editor queues them (POST /prompt, the template's graph) and checked with the step's button. The
editor's page itself is not opened: the step's button hands it the workflow through localStorage, which is checked.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.lessons.parcours import STEPS as PARCOURS_STEPS
from atelier.lessons.parcours import missing_wires
from atelier.server.frontend import TEMPLATES_DIR
from tests.browser import CHROMIUM, VIEWPORT, atelier_server, chromium

pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

RUN_TIMEOUT = 120_000  # ms
ARTIFACTS = Path(os.environ.get("ATELIER_ARTIFACTS") or tempfile.mkdtemp(prefix="atelier-parcours-")) / "parcours"
STEPS = 13


@pytest.fixture(scope="module")
def registry():
    from atelier.graph.catalog import default_registry
    from atelier.server.files import DataDir, OutputFiles

    data = DataDir(Path(tempfile.mkdtemp(prefix="atelier-parcours-registry-")))
    return default_registry(data.root, OutputFiles(data))


def template_prompt(registry, name: str) -> dict:
    """The API prompt the editor queues for a template (2 steps per sampler to stay fast)."""
    from atelier.graph.workflow import ui_to_api

    prompt = ui_to_api(json.loads((TEMPLATES_DIR / f"{name}.json").read_text()), registry)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    return prompt


# ---- the checks of module 2, on the templates' own graphs ----


def test_the_templates_pass_their_checks_and_a_cut_graph_names_its_missing_wires(registry):
    txt2img, img2img = template_prompt(registry, "atelier_txt2img"), template_prompt(registry, "atelier_img2img")
    assert missing_wires(txt2img, "txt2img") == []
    assert missing_wires(img2img, "img2img") == []
    assert missing_wires(img2img, "txt2img") == ["empty_latent"]
    assert missing_wires(txt2img, "img2img") == ["vae_encode", "denoise"]
    cut = json.loads(json.dumps(txt2img))
    cut["3"]["inputs"]["negative"] = cut["3"]["inputs"]["positive"]  # one encoder on both sides
    del cut["8"]["inputs"]["vae"]
    assert missing_wires(cut, "txt2img") == ["two_prompts", "decode_vae"]
    assert missing_wires({"1": {"class_type": "SaveImage", "inputs": {}}}, "txt2img") == ["sampler"]


# ---- the walk ----


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with atelier_server(tmp_path_factory.mktemp("parcours-data"), ready_path="/atelier/lab/options") as url:
        yield url
    print(f"\nParcours screenshots: {ARTIFACTS}")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as b:
        yield b


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def queue_as_the_editor(pg, server: str, prompt: dict) -> None:
    """POST /prompt as the editor does, then wait until the history says it finished."""
    r = pg.request.post(
        f"{server}/prompt",
        data=json.dumps({"prompt": prompt, "client_id": "editor-test"}),
        headers={"Content-Type": "application/json"},
    )
    assert r.ok, r.text()
    prompt_id = r.json()["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT / 1000
    while time.monotonic() < deadline:
        entry = pg.request.get(f"{server}/history/{prompt_id}").json().get(prompt_id)
        if entry and entry["status"]["completed"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"the prompt {prompt_id} did not finish")


WORDS = {
    "fr": {
        "tab": "Le parcours",
        "done": "✓ Fait",
        "count": "13 étapes faites sur 13",
        "part": "Théorie : du bruit à l'image",
        "not_ran": "Aucun graphe n'a tourné",
        "missing": "ce n'est pas encore celui attendu",
    },
    "en": {
        "tab": "The path",
        "done": "✓ Done",
        "count": "13 of 13 steps done",
        "part": "Theory: from noise to an image",
        "not_ran": "No graph has run",
        "missing": "it is not the expected one yet",
    },
}


# The same walk in both languages; the English one runs with the slow tests.
@pytest.mark.parametrize("lang", ["fr", pytest.param("en", marks=pytest.mark.slow)])
def test_the_whole_parcours(browser, server, registry, lang):
    words = WORDS[lang]
    context = browser.new_context(viewport=VIEWPORT, locale="fr-FR" if lang == "fr" else "en-GB")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{server}/lab/")
    pg.wait_for_selector("body[data-ready=true]")
    assert pg.get_attribute("html", "lang") == lang
    pg.evaluate("() => { window.open = (url) => { window.__opened = url; }; }")  # the editor is not loaded here
    pg.click("#tab-parcours")
    assert pg.inner_text("#tab-parcours") == words["tab"]
    assert pg.inner_text("#parcours-steps .part h3 >> nth=0") == words["part"]
    assert pg.locator("#parcours-steps .step").count() == STEPS
    pg.click("#parcours-reset")  # the server keeps the progress: the other language's walk may have left it done
    pg.wait_for_function("() => !document.querySelector('#parcours-steps .step[data-done=true]')")
    shot(pg, f"{lang}-0-start")

    def step(sid: str) -> str:
        return f"#pc-{sid}"

    def done(sid: str) -> None:
        pg.click("#tab-parcours")
        pg.wait_for_selector(f"{step(sid)}[data-done=true]", timeout=RUN_TIMEOUT)
        assert pg.inner_text(f"{step(sid)} .step-status") == words["done"]

    # Theory: open the view the screen speaks of, then say it is read.
    for sid, view in [
        ("th-noise", "filmstrip"),
        ("th-latent", "latent"),
        ("th-clip", "text"),
        ("th-scheduler", "schedules"),
    ]:
        pg.click(f"{step(sid)} .open")
        assert pg.is_visible(f"#view-{view}")
        pg.click("#tab-parcours")
        pg.click(f"{step(sid)} .read")
        done(sid)

    # Module 1: each step's button opens its exercise on the teaching defaults; the step ticks when it has run.
    fast = {
        "m1-steps": ("#ex-steps-list", "2, 3"),
        "m1-xy": ("#xy-x-values", "1, 7"),
        "m1-samplers": ("#conv-steps", "4"),
    }
    for sid, run in [
        ("m1-stability", "#ex-stability .run"),
        ("m1-variability", "#ex-variability .run"),
        ("m1-cfg", "#ex-cfg .run"),
        ("m1-steps", "#ex-steps .run"),
        ("m1-xy", "#ex-xy .run"),
        ("m1-samplers", "#view-convergence .run"),
    ]:
        pg.click(f"{step(sid)} .open")
        if sid == "m1-samplers":
            assert pg.input_value("#conv-steps") == "40"  # the step's own setting
        assert pg.input_value("#f-steps") == "20"  # the teaching defaults
        pg.fill("#f-steps", "2")  # fast
        if sid in fast:
            pg.fill(*fast[sid])
        pg.click(run)
        done(sid)
    shot(pg, f"{lang}-1-module1")

    # Module 2: the button hands the editor its template; the check reads the newest graph run from the editor.
    for sid, template, check_with in [
        ("m2-rebuild", None, "atelier_txt2img"),
        ("m2-puzzle", "atelier_puzzle", "atelier_txt2img"),
        ("m2-img2img", "atelier_img2img", "atelier_img2img"),
    ]:
        pg.click(f"{step(sid)} .open")
        pg.wait_for_function("() => window.__opened === '/'")
        handed = json.loads(pg.evaluate("() => localStorage.getItem('workflow')"))
        expected = json.loads((TEMPLATES_DIR / f"{template}.json").read_text())["nodes"] if template else []
        assert [n["type"] for n in handed["nodes"]] == [n["type"] for n in expected]
        pg.evaluate("() => { window.__opened = null; }")
        pg.click(f"{step(sid)} .check")
        pg.wait_for_selector(f"{step(sid)} .step-status[data-state=missing]")
        assert words["not_ran"] in pg.inner_text(f"{step(sid)} .step-status")  # nothing ran since the step opened
        if sid == "m2-img2img":  # a txt2img graph is not an img2img one: the check names what is missing
            queue_as_the_editor(pg, server, template_prompt(registry, "atelier_txt2img"))
            pg.click(f"{step(sid)} .check")
            pg.wait_for_function(f"() => document.querySelector('{step(sid)} .step-status').innerText.includes('VAE')")
            assert words["missing"] in pg.inner_text(f"{step(sid)} .step-status")
            shot(pg, f"{lang}-2-missing-wires")
        queue_as_the_editor(pg, server, template_prompt(registry, check_with))
        pg.click(f"{step(sid)} .check")
        done(sid)

    assert pg.inner_text("#parcours-count") == words["count"]
    pg.reload()
    pg.wait_for_selector("body[data-ready=true]")
    pg.click("#tab-parcours")
    assert pg.locator("#parcours-steps .step[data-done=true]").count() == STEPS  # kept in this browser
    shot(pg, f"{lang}-3-all-done")
    context.close()
    assert errors == []
    # ...and on the server (the instructor's page reads it there): a browser that never saw it finds every step done.
    other = browser.new_context(viewport=VIEWPORT, locale="fr-FR" if lang == "fr" else "en-GB")
    pg = other.new_page()
    pg.goto(f"{server}/lab/")
    pg.wait_for_selector("body[data-ready=true]")
    pg.click("#tab-parcours")
    assert pg.inner_text("#parcours-count") == words["count"]
    kept = pg.request.get(f"{server}/atelier/lab/parcours/progress").json()["steps"]
    assert sorted(step for step, record in kept.items() if record["done"]) == sorted(PARCOURS_STEPS)
    other.close()
