"""The official ComfyUI editor (comfyui-frontend-package 1.58), served by `atelier serve`, in headless Chromium at
1366 x 768: one test per frontend feature Atelier relies on. It starts offline and clean on Atelier's own default
graph (in English and in French), opens templates fitted to the view, speaks French for Atelier's nodes and
templates, runs them with live progress, shows the images it made, and lists the jobs in its queue panel; a
workflow with subgraphs queues as Atelier expands it, and runs.

About 1-2 minutes on a 2-core machine (the editor boots in ~5-10 s per tab; each 128x128 image takes a few seconds).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from atelier.graph.catalog import default_registry
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles
from atelier.server.frontend import TEMPLATES_DIR, localized_workflow, template_index, template_manifest

SUBGRAPH_WORKFLOW = Path(__file__).parents[1] / "fixtures" / "subgraphs" / "sd15_subgraph.json"

SAVE_IMAGE_SHOWN = """id => {
    const node = window.app.graph.getNodeById(id);
    const img = node && node.imgs && node.imgs[0];
    return img && img.complete && img.naturalWidth > 0 ? [img.src, img.naturalWidth, img.naturalHeight] : null;
}"""

GRAPH = """() => window.app.graph.nodes.map(n => ({
    id: Number(n.id), type: n.type, title: n.title, widgets: (n.widgets || []).map(w => w.value)
}))"""

# Where each output node is on screen (title bar included), with the canvas and, when shown, the minimap.
OUTPUTS_ON_SCREEN = """() => {
    const canvas = window.app.canvas, box = canvas.canvas.getBoundingClientRect();
    const minimap = document.querySelector('.minimap-main-container');
    const title = window.LiteGraph ? window.LiteGraph.NODE_TITLE_HEIGHT : 30;
    const outputs = window.app.graph.nodes.filter(n => n.constructor.nodeData && n.constructor.nodeData.output_node);
    return {
        canvas: [box.left, box.top, box.right, box.bottom],
        minimap: minimap ? (r => [r.left, r.top, r.right, r.bottom])(minimap.getBoundingClientRect()) : null,
        outputs: outputs.map(n => {
            const [x, y] = canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - title]);
            const s = canvas.ds.scale;
            const [x1, y1] = [x + n.size[0] * s, y + (n.size[1] + title) * s];
            return [n.type, box.left + x, box.top + y, box.left + x1, box.top + y1];
        }),
    };
}"""


def assert_only_local_requests(editor) -> None:
    host = urlparse(editor.url).netloc
    elsewhere = [
        u
        for u in editor.requests
        if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).netloc != host
    ]
    assert editor.requests and not elsewhere, elsewhere


def assert_clean(editor) -> None:
    """Nothing left the machine, nothing failed: no page error, no console error (no 404 from our routes)."""
    assert_only_local_requests(editor)
    assert editor.page_errors == []
    assert editor.console_errors == []


def open_template(editor, title: str, node_count: int) -> None:
    """Open the template browser (the sidebar's Templates button runs this command) and click a card."""
    editor.command("Comfy.BrowseTemplates")
    editor.page.get_by_text(title, exact=True).first.click()
    editor.page.wait_for_function(f"() => window.app.graph.nodes.length === {node_count}", timeout=30_000)


def wait_for_prompt(editor, timeout_ms: int = 300_000) -> None:
    for _ in range(timeout_ms // 250):
        if editor.of_type("execution_success") or editor.of_type("execution_error"):
            break
        editor.page.wait_for_timeout(250)
    assert not editor.of_type("execution_error"), editor.of_type("execution_error")
    assert editor.of_type("execution_success"), "the prompt did not finish"


def run_and_wait_for_image(editor, node_id: int, button: str = "Run", timeout_ms: int = 300_000) -> list:
    """Press Run, wait for the prompt to finish, bring every node into view and wait for the saved image."""
    editor.page.get_by_role("button", name=button).first.click()
    wait_for_prompt(editor, timeout_ms)
    editor.command("Comfy.Canvas.FitView")  # outputs load when their node is drawn
    editor.page.wait_for_function(SAVE_IMAGE_SHOWN, arg=node_id, timeout=30_000)
    return editor.page.evaluate(SAVE_IMAGE_SHOWN, node_id)


@pytest.mark.parametrize("locale", ["en-US", "fr-FR"])
def test_editor_starts_offline_on_atelier_default_graph(locale, request, artifacts):
    ed = request.getfixturevalue("editor" if locale == "en-US" else "editor_fr")
    lang = locale[:2]
    ed.open()
    ed.page.wait_for_function("() => window.app.graph.nodes.length === 7", timeout=30_000)
    ed.page.wait_for_timeout(1_500)  # late start-up requests (jobs, templates, i18n)
    ed.page.screenshot(path=artifacts / f"01-start-default-graph-{lang}.png")
    nodes = {n["id"]: n for n in ed.page.evaluate(GRAPH)}
    # Atelier's graph, never the bundle's Z-Image Turbo one: the embedded model at its native 128 x 128, and the
    # prompt in the interface language.
    expected = localized_workflow(TEMPLATES_DIR, "atelier_txt2img", lang)
    assert sorted((n["id"], n["type"]) for n in nodes.values()) == sorted(
        (n["id"], n["type"]) for n in expected["nodes"]
    )
    assert not {"CLIPLoader", "EmptySD3LatentImage", "ModelSamplingAuraFlow"} & {n["type"] for n in nodes.values()}
    assert nodes[4]["widgets"] == ["embedded.safetensors"] and nodes[5]["widgets"] == [128, 128, 1]
    prompt = nodes[6]["widgets"][0]
    assert prompt == next(n for n in expected["nodes"] if n["id"] == 6)["widgets_values"][0]
    if lang == "fr":
        assert prompt.startswith("un grand cercle rouge") and nodes[4]["title"] == "Charger le checkpoint"
    else:
        assert prompt.startswith("a big red circle") and nodes[4]["title"] == "Load Checkpoint"
    assert_clean(ed)
    print(f"start-up ({locale}): {len(ed.requests)} requests, all to {ed.url}, no console error")


def test_templates_open_fitted_with_their_output_node_on_screen(editor, artifacts):
    editor.open()
    for entry in template_manifest(TEMPLATES_DIR):
        nodes = json.loads((TEMPLATES_DIR / f"{entry['name']}.json").read_text())["nodes"]
        open_template(editor, entry["title"], len(nodes))
        editor.page.wait_for_timeout(500)  # the camera is fitted on the next frame
        editor.page.screenshot(path=artifacts / f"02-template-{entry['name']}.png")
        screen = editor.page.evaluate(OUTPUTS_ON_SCREEN)
        left, top, right, bottom = screen["canvas"]
        assert screen["outputs"], entry["name"]
        for kind, x0, y0, x1, y1 in screen["outputs"]:
            assert left <= x0 and top <= y0 and x1 <= right and y1 <= bottom, (entry["name"], kind, screen)
            if screen["minimap"]:  # the minimap, when shown, must not cover it
                mx0, my0, mx1, my1 = screen["minimap"]
                assert x1 <= mx0 or mx1 <= x0 or y1 <= my0 or my1 <= y0, (entry["name"], kind, screen)
    assert_clean(editor)


def test_french_node_names_and_template_notes(editor_fr, artifacts):
    ed = editor_fr
    ed.open()
    # The template browser in French: Atelier's titles from /templates/index.fr.json.
    titles = [t["title"] for t in template_index(TEMPLATES_DIR, "fr")[0]["templates"]]
    ed.command("Comfy.BrowseTemplates")
    for title in titles:
        ed.page.get_by_text(title, exact=True).first.wait_for(timeout=30_000)
    ed.page.screenshot(path=artifacts / "03-templates-fr.png")
    ed.page.get_by_text("Puzzle : reliez les nœuds", exact=True).first.click()
    ed.page.wait_for_function("() => window.app.graph.nodes.length === 8", timeout=30_000)
    note = ed.page.evaluate("() => window.app.graph.nodes.find(n => n.type === 'Note').widgets[0].value")
    assert "MODÈLE" in note and "CONDITIONNEMENT" in note and note.startswith("Puzzle : voici")
    # A teaching node as the French editor names it (its name, sockets and tooltips come from /i18n).
    shown = ed.page.evaluate(
        """() => {
            const node = window.LiteGraph.createNode('AtelierFilmStripSampler');
            window.app.graph.add(node);
            return [node.title, node.outputs.map(o => o.label || o.localized_name || o.name)];
        }"""
    )
    ed.page.screenshot(path=artifacts / "04-puzzle-fr.png")
    assert shown[0] == "Échantillonneur film" and shown[1] == ["latent", "bruité", "prédit"], shown
    assert_clean(ed)


def test_txt2img_template_runs_with_progress_and_shows_its_image(editor, artifacts):
    editor.open()
    open_template(editor, "Text to image", 7)
    widgets = editor.page.evaluate(
        "Object.fromEntries(window.app.graph.nodes.map(n => [n.id, (n.widgets || []).map(w => w.value)]))"
    )
    assert widgets["4"] == ["embedded.safetensors"] and widgets["5"] == [128, 128, 1]
    editor.page.screenshot(path=artifacts / "05-txt2img-loaded.png")

    src, width, height = run_and_wait_for_image(editor, 9)
    editor.page.screenshot(path=artifacts / "06-txt2img-done.png")
    assert "/api/view?" in src and "filename=Atelier_" in src and (width, height) == (128, 128)
    # Per-step progress of the KSampler (node 3) reached the editor: 1, 2, ... 20 of 20.
    steps = [m["value"] for m in editor.of_type("progress") if m["node"] == "3"]
    assert steps == list(range(1, 21)) and {m["max"] for m in editor.of_type("progress")} == {20}
    executed = [m["node"] for m in editor.of_type("executed")]
    assert executed == ["9"]

    # The jobs panel (1.58 reads /api/jobs only): the finished prompt is listed with its image.
    editor.command("Comfy.Queue.ToggleOverlay")
    editor.page.get_by_text("Completed", exact=True).first.click()
    job_image = editor.page.locator('img[src*="/api/view"][src*="filename=Atelier_"]').first
    job_image.wait_for(timeout=30_000)
    editor.page.screenshot(path=artifacts / "07-txt2img-jobs-panel.png")
    assert_clean(editor)
    print(f"txt2img: {len(steps)} progress messages, image {src}, listed in the jobs panel")


def test_puzzle_template_can_be_solved_and_run(editor, artifacts):
    editor.open()
    open_template(editor, "Puzzle: connect the nodes", 8)  # the seven nodes and a note
    assert editor.page.evaluate("window.app.graph.links ? Object.keys(window.app.graph.links).length : -1") in (0, -1)
    assert editor.page.evaluate("window.app.graph.nodes.every(n => (n.inputs || []).every(i => i.link == null))")
    editor.page.screenshot(path=artifacts / "08-puzzle-open.png")

    # Connect the links of the txt2img template through LiteGraph, as dragging from socket to socket does.
    # Inputs are named: the live node also lists its widgets as input slots, so template slot indices differ.
    solution = json.loads((TEMPLATES_DIR / "atelier_txt2img.json").read_text())
    inputs = {n["id"]: [i["name"] for i in n["inputs"]] for n in solution["nodes"]}
    links = [
        (origin, slot, target, inputs[target][target_slot])
        for _, origin, slot, target, target_slot, _ in solution["links"]
    ]
    editor.page.evaluate(
        """links => {
            const graph = window.app.graph;
            for (const [origin, slot, target, name] of links) {
                const node = graph.getNodeById(target);
                graph.getNodeById(origin).connect(slot, node, node.findInputSlot(name));
            }
            const seed = graph.getNodeById(3).widgets.find(w => w.name === 'seed');
            seed.value = 7;  // a new seed, so the sampler really runs (not served from the cache)
            graph.setDirtyCanvas(true, true);
        }""",
        links,
    )
    linked = editor.page.evaluate("window.app.graph.getNodeById(3).inputs.filter(i => i.link != null).map(i => i.name)")
    assert sorted(linked) == ["latent_image", "model", "negative", "positive"]
    src, width, height = run_and_wait_for_image(editor, 9)
    editor.page.screenshot(path=artifacts / "09-puzzle-solved.png")
    assert (width, height) == (128, 128) and "/api/view?" in src
    assert [m["value"] for m in editor.of_type("progress") if m["node"] == "3"][-1] == 20
    assert_only_local_requests(editor)
    assert editor.page_errors == []


def _as_queued(prompt: dict) -> dict:
    """What runs: class_type, inputs and title of each node (1.58 also copies properties.cnr_id/ver into _meta)."""
    return {
        node_id: {"class_type": n["class_type"], "inputs": n["inputs"], "title": n["_meta"]["title"]}
        for node_id, n in prompt.items()
    }


def test_a_subgraph_workflow_queues_as_atelier_expands_it_and_runs(editor, artifacts, tmp_path):
    """tests/fixtures/subgraphs/sd15_subgraph.json (a subgraph with a nested one, a promoted widget, a reroute and
    a bypassed node inside) opened in the editor: the prompt the editor builds from it is the one Atelier's
    converter builds, from the file and from the workflow as the editor saves it back (1.58 turns proxyWidgets
    into subgraph inputs); pressing Run runs it, and the job's image is in the history and the jobs panel."""
    editor.open()
    workflow = json.loads(SUBGRAPH_WORKFLOW.read_text(encoding="utf-8"))
    editor.page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    editor.page.wait_for_function("() => window.app.graph.nodes.length === 4", timeout=30_000)
    queued = editor.page.evaluate("async () => (await window.app.graphToPrompt()).output")
    saved = editor.page.evaluate("() => window.app.graph.serialize()")
    data = DataDir(tmp_path / "data")
    registry = default_registry(data.root, OutputFiles(data))
    ours = _as_queued(ui_to_api(workflow, registry))
    assert _as_queued(queued) == ours
    assert _as_queued(ui_to_api(saved, registry)) == ours
    assert sorted(ours) == ["4", "60", "83:13", "83:27", "83:3", "83:31", "83:7:8"]
    assert ours["83:3"]["inputs"]["steps"] == 2  # the instance's promoted widget, not the inner 20
    editor.page.screenshot(path=artifacts / "10-subgraph-loaded.png")

    src, width, height = run_and_wait_for_image(editor, 60)
    editor.page.screenshot(path=artifacts / "11-subgraph-done.png")
    assert (width, height) == (64, 64) and "filename=subgraph_" in src
    assert [m["value"] for m in editor.of_type("progress") if m["node"] == "83:3"] == [1, 2]
    (done,) = editor.of_type("execution_success")
    with urllib.request.urlopen(f"{editor.url}/api/history/{done['prompt_id']}") as response:
        entry = json.load(response)[done["prompt_id"]]
    assert sorted(entry["prompt"][2]) == sorted(ours)  # the server ran what the editor sent
    (image,) = entry["outputs"]["60"]["images"]
    assert image["filename"].startswith("subgraph_") and image["filename"] in src

    # The jobs panel: its open state is a stored setting, so an earlier test may have left it open.
    if not editor.page.get_by_text("Job Queue", exact=True).first.is_visible():
        editor.command("Comfy.Queue.ToggleOverlay")
    editor.page.get_by_text("Completed", exact=True).first.click()
    editor.page.locator('img[src*="/api/view"][src*="filename=subgraph_"]').first.wait_for(timeout=30_000)
    editor.page.screenshot(path=artifacts / "12-subgraph-jobs-panel.png")
    assert_clean(editor)


MISSING_MODEL = {
    "name": "v1-5-pruned-emaonly-fp16.safetensors",
    "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
    "v1-5-pruned-emaonly-fp16.safetensors",
    "directory": "checkpoints",
}


def test_a_missing_model_with_a_download_url_is_named_without_reaching_out(editor, artifacts):
    """ComfyUI's templates give each model a download URL (properties.models, the workflow's `models`); when the
    file is missing, 1.58 sends a HEAD request to it for the size, and its details panel asks the Comfy registry
    about the workflow's node packs. The CSP refuses both with a console error; Atelier's offline guard
    (atelier/web/editor/offline.js) refuses them before they are made. The learner still sees which file is
    missing, and in which folder."""
    editor.open()
    workflow = json.loads((TEMPLATES_DIR / "atelier_txt2img.json").read_text(encoding="utf-8"))
    loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["widgets_values"] = [MISSING_MODEL["name"]]
    loader.setdefault("properties", {})["models"] = [MISSING_MODEL]
    workflow["models"] = [MISSING_MODEL]
    infos: list[str] = []
    editor.page.on("console", lambda msg: msg.type == "info" and infos.append(msg.text))
    editor.page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    editor.page.get_by_text(f"{MISSING_MODEL['name']} is missing").first.wait_for(timeout=30_000)
    editor.page.get_by_text("View details").first.click()
    panel = editor.page.get_by_text("Missing Models").first
    panel.wait_for(timeout=30_000)
    editor.page.wait_for_timeout(1_500)  # the size check and the registry look-up run after the panel opens
    editor.page.screenshot(path=artifacts / "13-missing-model.png")
    shown = editor.page.evaluate("() => document.body.innerText")
    assert MISSING_MODEL["name"] in shown and "\ncheckpoints\n" in shown, shown
    assert "[Atelier] The editor works offline: nothing is sent to huggingface.co." in infos, infos
    assert "[Atelier] The editor works offline: nothing is sent to api.comfy.org." in infos, infos
    assert_clean(editor)  # no console error (no CSP refusal), no request to another site


def run_french_template(ed, title: str, name: str, outputs: tuple[int, ...]) -> dict[str, object]:
    """Open the French template `title`, queue it as it opens and return the PNG each of `outputs` saved, as the
    server wrote it: {node id: PIL image}."""
    import io

    from PIL import Image

    ed.open()
    nodes = json.loads((TEMPLATES_DIR / f"{name}.json").read_text())["nodes"]
    open_template(ed, title, len(nodes))
    ed.command("Comfy.QueuePrompt")  # the Run button's command, whatever its French label
    wait_for_prompt(ed, 300_000)
    ed.command("Comfy.Canvas.FitView")  # outputs load when their node is drawn
    saved = {}
    for node in outputs:
        ed.page.wait_for_function(SAVE_IMAGE_SHOWN, arg=node, timeout=30_000)
        src = ed.page.evaluate(SAVE_IMAGE_SHOWN, node)[0]
        with urllib.request.urlopen(urllib.parse.urljoin(ed.url + "/", src)) as answer:
            saved[str(node)] = Image.open(io.BytesIO(answer.read())).convert("RGB")
    return saved


def test_inpaint_template_runs_in_french_and_paints_the_red_circle_into_the_hole(editor_fr, artifacts):
    """Defect 7's first half, in the learner's editor: the French inpainting template's image has its red circle."""
    from tests.server.test_template_effects import HOLE_RED, SUN_CHANGE, inpaint_effect

    saved = run_french_template(editor_fr, "Inpainting (repeindre une zone)", "atelier_inpaint", (9,))
    editor_fr.page.screenshot(path=artifacts / "10-inpaint-fr.png")
    red, sun_change = inpaint_effect(saved["9"])
    assert red > HOLE_RED and sun_change < SUN_CHANGE, (red, sun_change)
    assert_clean(editor_fr)


def test_hires_fix_template_runs_in_french_and_its_second_pass_sharpens_in_place(editor_fr, artifacts):
    """Defect 7's second half, in the learner's editor: the French hires fix template runs as it opens, and of its
    two saved images the second pass is the sharper one with every object where the plain upscale has it."""
    import torch

    from atelier.models.library import EMBEDDED_EXTRAS_PATH
    from atelier.world.eval_run import load_classifier
    from tests.server.test_template_effects import finishes_in_place, hires_effect

    saved = run_french_template(editor_fr, "Hires fix (deux passes)", "atelier_hires_fix", (12, 16))
    editor_fr.page.screenshot(path=artifacts / "11-hires-fix-fr.png")
    assert saved["12"].size == saved["16"].size == (128, 128)
    effect = hires_effect(load_classifier(EMBEDDED_EXTRAS_PATH, torch.device("cpu")), saved)
    assert finishes_in_place(effect), effect
    assert_clean(editor_fr)
