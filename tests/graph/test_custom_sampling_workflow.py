"""A custom-sampling workflow as the editor saves it (UI format, tests/fixtures/comfyui_workflows/
custom_sampling.json, written here: RandomNoise, CFG Guider, KSamplerSelect, BasicScheduler into
SamplerCustomAdvanced) converts to the API prompt the editor queues (custom_sampling.api.json), validates, runs on
the embedded model, and draws exactly the image of the classic KSampler graph with the same settings (the
txt2img template). The lab's template atelier_custom_sampling is the same workflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles
from atelier.server.frontend import TEMPLATES_DIR

FIXTURES = Path(__file__).parents[1] / "fixtures" / "comfyui_workflows"
STEPS, SIZE = 4, 32


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    return registry, Executor(registry), files


def small(prompt: dict) -> dict:
    """The prompt at SIZE x SIZE pixels and STEPS steps."""
    for node in prompt.values():
        if node["class_type"] in ("KSampler", "BasicScheduler"):
            node["inputs"]["steps"] = STEPS
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=SIZE, height=SIZE)
    return prompt


def run(prompt: dict, env) -> tuple[EventLog, Image.Image]:
    registry, executor, files = env
    checked = validate_prompt(prompt, registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    ((_, ui),) = [event for event in log.payloads("executed") if event[1].get("images")]
    with Image.open(files.path(ui["images"][0])) as image:
        return log, image.copy()


def test_the_workflow_converts_to_the_prompt_the_editor_queues(env):
    registry = env[0]
    prompt = ui_to_api(load(FIXTURES / "custom_sampling.json"), registry)
    expected = load(FIXTURES / "custom_sampling.api.json")
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()} == expected
    # the Note is a drawing aid; the seed's "fixed" is the editor's control widget, not an input
    assert "15" not in prompt and prompt["10"]["inputs"] == {"noise_seed": 42}
    assert ui_to_api(load(TEMPLATES_DIR / "atelier_custom_sampling.json"), registry) == prompt


def test_it_runs_and_draws_the_ksamplers_image(env):
    registry = env[0]
    custom = small(ui_to_api(load(FIXTURES / "custom_sampling.json"), registry))
    log, image = run(custom, env)
    assert image.size == (SIZE, SIZE)
    assert [(v, t) for node, v, t in log.payloads("progress") if node == "14"] == [(i, STEPS) for i in range(1, 5)]

    classic = small(ui_to_api(load(TEMPLATES_DIR / "atelier_txt2img.json"), registry))
    _, reference = run(classic, env)
    assert image.tobytes() == reference.tobytes()  # seed 42, euler, normal, cfg 7.5: the same pixels
