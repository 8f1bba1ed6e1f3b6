"""Real workflows from outside Atelier convert, validate and (some of them) run (tests/fixtures/real_workflows/).

They come from ComfyUI's template package, the frontend's browser tests and a community collection (README.md of
the folder says which file is which). Each one:
1. converts with ui_to_api and, where the PNG it came from also holds the prompt ComfyUI queued
   (<name>.api.json), gives that prompt;
2. validates against Atelier's registry once its model files exist (empty files under the names it asks for;
   validation only reads the lists) and its input images are there;
3. a few run, as in test_comfyui_workflows.py: the embedded model, sizes / 8, 4 steps (marked slow); the
   String-node one, which needs no model, always.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.models.library import embedded_model_path
from atelier.server.files import DataDir, OutputFiles
from tests.graph.test_comfyui_workflows import example_image, saved_sizes, shrink

FIXTURES = Path(__file__).parents[1] / "fixtures" / "real_workflows"
WORKFLOWS = sorted(p.name for p in FIXTURES.glob("*.json") if not p.name.endswith(".api.json"))

# Inputs that name a model file, and the model folder it is looked up in.
MODEL_KINDS = {
    "ckpt_name": "checkpoints",
    "vae_name": "vae",
    "lora_name": "loras",
    "model_name": "upscale_models",
    "control_net_name": "controlnet",
}

# name -> the output nodes the prompt is queued with
OUTPUTS = {
    "examples_square_area_for_2_subjects.json": ["32", "9"],
    "frontend_every_node_color.json": ["9"],
    "frontend_group_node_v1.3.3.json": ["10:6"],  # the whole default graph as one legacy group node
    "frontend_linear_basic_app_1.json": ["9"],
    "frontend_nested_subgraph.json": ["9"],
    "frontend_partial_execution.json": ["1", "4"],
    "frontend_single_native_reroute_default_workflow.json": ["9"],
    "frontend_string_node_id.json": ["SaveImage.0"],
    "frontend_subgraph_with_preview_node.json": ["5:10"],  # a LoadImage outside, its SaveImage inside a subgraph
    "templates_area_composition_square_area_for_subject.json": ["32", "9"],
    "templates_default.json": ["9"],
    "templates_embedding_example.json": ["9"],
    "templates_esrgan_example.json": ["9"],
    "templates_image_sdxl_simple.json": ["7"],
    "templates_inpaint_model_outpainting.json": ["9"],
    "templates_latent_upscale_different_prompt_model.json": ["10", "12"],
    "templates_lora_multiple.json": ["9"],
    "templates_sdxlturbo_example.json": ["25"],  # its SaveImage is muted
    "wyrde_ComfyUI_00358.json": ["9"],
    "wyrde_basic_wf_vae_lora_latent_upscale_hrf.json": ["9"],
}


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    files = OutputFiles(data)
    return default_registry(data.root, files), files, data


def provide_files(prompt: dict, registry, data: DataDir) -> None:
    """An empty model file for each name the prompt asks for, and a small picture for each image it loads."""
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if name in MODEL_KINDS and isinstance(value, str) and value not in ("", "embedded.safetensors"):
                folder = registry.get(node["class_type"]).env.models.folders_for(MODEL_KINDS[name])[0]
                (folder / value).parent.mkdir(parents=True, exist_ok=True)
                (folder / value).touch()
            elif node["class_type"] == "LoadImage" and name == "image":
                example_image(data.input / value, (64, 48))


def test_every_fixture_is_listed():
    assert sorted(OUTPUTS) == WORKFLOWS


@pytest.mark.parametrize("name", WORKFLOWS)
def test_real_workflow_converts_and_validates(env, name):
    registry, _, data = env
    prompt = ui_to_api(load(name), registry)
    api_file = FIXTURES / name.replace(".json", ".api.json")
    if api_file.exists():  # what ComfyUI queued for it: the same nodes, the same inputs
        queued = load(api_file.name)
        assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == {
            k: (v["class_type"], v["inputs"]) for k, v in queued.items()
        }
    provide_files(prompt, registry, data)
    checked = validate_prompt(prompt, registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    assert sorted(checked.outputs) == OUTPUTS[name]


def test_the_frontends_primitive_string_nodes_run(env):
    """browser_tests/assets/execution/partial_execution.json: a String node (PrimitiveString) into two Preview Any
    nodes; no model, so it runs whole here."""
    registry, _, _ = env
    checked = validate_prompt(ui_to_api(load("frontend_partial_execution.json"), registry), registry)
    log = EventLog()
    Executor(registry).execute(checked.prompt, checked.outputs, listener=log)
    shown = dict(log.payloads("executed"))
    assert shown == {"1": {"text": ["foo"]}, "4": {"text": ["foo"]}}  # one String node feeds both


# name -> {SaveImage node id: (width, height) after shrinking}
RUNS = {
    "templates_default.json": {"9": (64, 64)},
    "frontend_nested_subgraph.json": {"9": (64, 64)},
    "templates_sdxlturbo_example.json": {"25": (64, 64)},  # SamplerCustom with SDTurboScheduler, one step
}


@pytest.mark.slow  # a few seconds each on a quiet CPU, much more on a busy one
@pytest.mark.parametrize("name", list(RUNS))
def test_real_workflow_runs_on_the_embedded_model(env, name):
    registry, files, data = env
    shutil.copyfile(embedded_model_path(), data.models / "vae" / "embedded_vae.safetensors")
    checked = validate_prompt(shrink(ui_to_api(load(name), registry), registry), registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    log = EventLog()
    Executor(registry).execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    sizes = saved_sizes(log, files)
    assert {k: v for k, v in sizes.items() if k in RUNS[name]} == RUNS[name]
