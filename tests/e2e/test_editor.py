"""The official ComfyUI editor, served by `atelier serve`, in headless Chromium: it starts offline and clean, runs
Atelier's templates with live progress, and shows the images it made.

About 30-60 s on a 2-core machine (the editor boots in ~5 s per tab; each 128x128 image takes a few seconds).
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

from atelier.server.frontend import TEMPLATES_DIR, template_manifest

# Console errors the editor prints for requests that ComfyUI answers with 404 as well: optional user files and
# folders that do not exist yet. Each entry is the exact text Chromium logs.
EXPECTED_404S = {
    "Failed to load resource: the server responded with a status of 404 (The user file 'user.css' does not exist.)",
    "Failed to load resource: the server responded with a status of 404 "
    "(The user file 'comfy.templates.json' does not exist.)",
    "Failed to load resource: the server responded with a status of 404 (The user folder 'subgraphs/' does not exist.)",
}

SAVE_IMAGE_SHOWN = """id => {
    const node = window.app.graph.getNodeById(id);
    const img = node && node.imgs && node.imgs[0];
    return img && img.complete && img.naturalWidth > 0 ? [img.src, img.naturalWidth, img.naturalHeight] : null;
}"""


def assert_only_local_requests(editor) -> None:
    host = urlparse(editor.url).netloc
    elsewhere = [
        u
        for u in editor.requests
        if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).netloc != host
    ]
    assert editor.requests and not elsewhere, elsewhere


def open_template(editor, title: str, node_count: int) -> None:
    """Open the template browser (the sidebar's Templates button runs this command) and click a card."""
    editor.command("Comfy.BrowseTemplates")
    editor.page.get_by_text(title, exact=True).first.click()
    editor.page.wait_for_function(f"() => window.app.graph.nodes.length === {node_count}", timeout=30_000)


def run_and_wait_for_image(editor, node_id: int, timeout_ms: int = 120_000) -> list:
    """Press Run, wait for the prompt to finish, bring every node into view and wait for the saved image."""
    editor.page.get_by_role("button", name="Run").first.click()
    deadline_checks = timeout_ms // 250
    for _ in range(deadline_checks):
        if editor.of_type("execution_success") or editor.of_type("execution_error"):
            break
        editor.page.wait_for_timeout(250)
    assert not editor.of_type("execution_error"), editor.of_type("execution_error")
    assert editor.of_type("execution_success"), "the prompt did not finish"
    editor.command("Comfy.Canvas.FitView")  # outputs load when their node is drawn
    editor.page.wait_for_function(SAVE_IMAGE_SHOWN, arg=node_id, timeout=30_000)
    return editor.page.evaluate(SAVE_IMAGE_SHOWN, node_id)


def test_editor_starts_offline_without_errors(editor, artifacts):
    editor.open()
    # First start (no settings yet): the editor opens its template browser, listing Atelier's templates.
    for entry in template_manifest(TEMPLATES_DIR):
        editor.page.get_by_text(entry["title"], exact=True).first.wait_for(timeout=30_000)
    editor.page.wait_for_timeout(1_000)  # late start-up requests (release notes, i18n, workflows)
    editor.page.screenshot(path=artifacts / "01-start-template-browser.png")
    assert_only_local_requests(editor)
    assert editor.page_errors == []
    assert [e for e in editor.console_errors if e not in EXPECTED_404S] == []
    print(f"start-up: {len(editor.requests)} requests, all to {editor.url}; console errors: {editor.console_errors}")


def test_txt2img_template_runs_with_progress_and_shows_its_image(editor, artifacts):
    editor.open()
    open_template(editor, "Text to image", 7)
    widgets = editor.page.evaluate(
        "Object.fromEntries(window.app.graph.nodes.map(n => [n.id, (n.widgets || []).map(w => w.value)]))"
    )
    assert widgets["4"] == ["embedded.safetensors"] and widgets["5"] == [128, 128, 1]
    editor.page.screenshot(path=artifacts / "02-txt2img-loaded.png")

    src, width, height = run_and_wait_for_image(editor, 9)
    editor.page.screenshot(path=artifacts / "03-txt2img-done.png")
    assert "/api/view?" in src and "filename=Atelier_" in src and (width, height) == (128, 128)
    # Per-step progress of the KSampler (node 3) reached the editor: 1, 2, ... 20 of 20.
    steps = [m["value"] for m in editor.of_type("progress") if m["node"] == "3"]
    assert steps == list(range(1, 21)) and {m["max"] for m in editor.of_type("progress")} == {20}
    executed = [m["node"] for m in editor.of_type("executed")]
    assert executed == ["9"]
    assert_only_local_requests(editor)
    assert editor.page_errors == []
    assert [e for e in editor.console_errors if e not in EXPECTED_404S] == []
    print(f"txt2img: {len(steps)} progress messages, image {src}")


def test_puzzle_template_can_be_solved_and_run(editor, artifacts):
    editor.open()
    open_template(editor, "Puzzle: connect the nodes", 8)  # the seven nodes and a note
    assert editor.page.evaluate("window.app.graph.links ? Object.keys(window.app.graph.links).length : -1") in (0, -1)
    assert editor.page.evaluate("window.app.graph.nodes.every(n => (n.inputs || []).every(i => i.link == null))")
    editor.page.screenshot(path=artifacts / "04-puzzle-open.png")

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
    editor.page.screenshot(path=artifacts / "05-puzzle-solved.png")
    assert (width, height) == (128, 128) and "/api/view?" in src
    assert [m["value"] for m in editor.of_type("progress") if m["node"] == "3"][-1] == 20
    assert_only_local_requests(editor)
    assert editor.page_errors == []
