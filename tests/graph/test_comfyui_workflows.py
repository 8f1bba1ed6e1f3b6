"""Workflows that ComfyUI itself ships run unchanged on Atelier's real nodes (tests/fixtures/comfyui_workflows/).

For each saved workflow (UI format, as the editor stores it):
1. ui_to_api gives the prompt ComfyUI queued (the `prompt` text chunk of the same PNG, kept as <name>.api.json);
2. the prompt validates against Atelier's registry (every node type, input name, range and option);
3. it runs through the executor, with the checkpoint swapped for the embedded model, sizes divided by 4 and
   4 sampling steps, and saves images of the expected sizes.
The LoRA example runs on a random LoRA file made for the embedded model, the ESRGAN one on a random RRDBNet file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.registry import NodeRegistry
from atelier.graph.unsupported import UNSUPPORTED_NODES
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.models.checkpoint import load_checkpoint
from atelier.models.library import embedded_model_path
from atelier.server.files import DataDir, OutputFiles

FIXTURES = Path(__file__).parents[1] / "fixtures" / "comfyui_workflows"
SHRINK = 8  # every size in the workflow is divided by this (rounded to a multiple of 8, kept above its min)
STEPS = 4

# Inputs measured in pixels, by node type.
SIZE_INPUTS = {
    "EmptyLatentImage": ("width", "height"),
    "LatentUpscale": ("width", "height"),
    "ConditioningSetArea": ("width", "height", "x", "y"),
    "ImageScale": ("width", "height"),
    "ImagePadForOutpaint": ("left", "top", "right", "bottom"),
}


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def shrink(prompt: dict, registry: NodeRegistry) -> dict:
    """The prompt on a small budget: the embedded model, sizes / SHRINK, STEPS steps."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = "embedded.safetensors"
        elif kind == "VAELoader":
            inputs["vae_name"] = "embedded_vae.safetensors"
        elif kind in ("KSampler", "KSamplerAdvanced"):
            inputs["steps"] = STEPS
        for name in SIZE_INPUTS.get(kind, ()):
            if not isinstance(inputs.get(name), list):  # a constant, not a link
                smallest = registry.schema(kind).input(name).min
                inputs[name] = max(smallest, round(inputs[name] / SHRINK / 8) * 8)
    return prompt


def example_image(path: Path, size: tuple[int, int], hole: tuple[int, int, int, int] | None = None) -> None:
    """A small stand-in for ComfyUI's example inputs: sky, grass, a sun; `hole` is made transparent (the mask)."""
    image = Image.new("RGBA", size, (120, 170, 230, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size[1] * 2 // 3, size[0], size[1]), fill=(70, 150, 60, 255))
    draw.ellipse((size[0] // 2, 8, size[0] // 2 + 32, 40), fill=(250, 210, 40, 255))
    if hole is not None:
        draw.rectangle(hole, fill=(0, 0, 0, 0))
    image.save(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One registry and one executor for the module: the embedded checkpoint is loaded once and cached."""
    data = DataDir(tmp_path_factory.mktemp("data"))
    shutil.copyfile(embedded_model_path(), data.models / "vae" / "embedded_vae.safetensors")  # VAELoader reads it
    example_image(data.input / "example.png", (64, 48))
    example_image(data.input / "yosemite_inpaint_example.png", (64, 48), hole=(8, 8, 40, 32))
    example_image(data.input / "yosemite_outpaint_example.png", (64, 48))
    files = OutputFiles(data)
    registry = default_registry(data.root, files, extra_nodes=UNSUPPORTED_NODES)
    return registry, Executor(registry), files


def saved_sizes(log: EventLog, files: OutputFiles) -> dict[str, tuple[int, int]]:
    sizes = {}
    for node_id, ui in log.payloads("executed"):
        for ref in ui.get("images", []):
            with Image.open(files.path(ref)) as image:
                sizes[node_id] = image.size
    return sizes


# name -> {SaveImage node id: (width, height) after shrinking}
RUNS = {
    "default_graph.json": {"9": (64, 64)},  # 512 / SHRINK
    "img2img.json": {"9": (64, 48)},  # the size of the input image
    "inpaint.json": {"9": (64, 48)},
    "outpaint.json": {"9": (64, 80)},  # 16 px of padding above and below (128 / SHRINK)
    "hiresfix_latent.json": {"9": (96, 96), "12": (144, 144)},  # 768 and 1152 / SHRINK
    "area_composition.json": {"9": (88, 160), "32": (136, 240)},  # 704x1280 and 1088x1920 / SHRINK
}


@pytest.mark.parametrize("name", list(RUNS))
def test_comfyui_workflow_runs(env, name):
    registry, executor, files = env
    prompt = ui_to_api(load(name), registry)
    api_file = FIXTURES / name.replace(".json", ".api.json")
    if api_file.exists():  # what ComfyUI itself queued for this workflow
        queued = load(api_file.name)
        assert sorted(prompt) == sorted(queued)
        for node_id, node in queued.items():
            # Old ComfyUI versions also sent the upload button's label ("choose file to upload": "image"), and
            # widgets added since (VAEEncodeForInpaint's grow_mask_by) are missing there: today's editor queues
            # their defaults, as ui_to_api does.
            expected = {k: v for k, v in node["inputs"].items() if k != "choose file to upload"}
            schema = registry.schema(node["class_type"])
            added = {k: schema.input(k).default for k in prompt[node_id]["inputs"].keys() - expected.keys()}
            assert prompt[node_id]["class_type"] == node["class_type"]
            assert prompt[node_id]["inputs"] == {**expected, **added}, node_id
            assert added in ({}, {"grow_mask_by": 6})

    checked = validate_prompt(shrink(prompt, registry), registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    assert sorted(checked.outputs) == sorted(RUNS[name])

    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    assert saved_sizes(log, files) == RUNS[name]
    steps = [value for node, value, total in log.payloads("progress") if total == STEPS]
    assert steps.count(STEPS) == sum(1 for n in checked.prompt.values() if n["class_type"] == "KSampler")


def test_the_default_graph_is_the_classic_seven_nodes(env):
    registry, _, _ = env
    prompt = ui_to_api(load("default_graph.json"), registry)
    assert sorted(n["class_type"] for n in prompt.values()) == sorted(
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
    assert prompt["4"]["inputs"] == {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}
    assert prompt["3"]["inputs"]["latent_image"] == ["5", 0] and prompt["8"]["inputs"]["vae"] == ["4", 2]


def random_kohya_lora(path: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, rank: int = 2) -> None:
    """A kohya-layout LoRA of random weights for every attention projection of both networks."""
    g = torch.Generator().manual_seed(11)
    tensors = {}
    for prefix, module in (("lora_unet_", unet), ("lora_te_", text_encoder)):
        for name, weight in module.state_dict().items():
            if weight.ndim == 2 and name.endswith(("to_q.weight", "to_v.weight", "q_proj.weight", "v_proj.weight")):
                key = prefix + name.removesuffix(".weight").replace(".", "_")
                tensors[f"{key}.lora_up.weight"] = torch.randn(weight.shape[0], rank, generator=g)
                tensors[f"{key}.lora_down.weight"] = torch.randn(rank, weight.shape[1], generator=g) * 0.3
                tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))


def test_lora_workflow_runs_and_leaves_the_checkpoint_as_it_was(env):
    """ComfyUI's LoRA example on a random LoRA for the embedded model. The graph without the LoRA, then with it,
    then with it at strength 0 (after the patched run, on the same cached checkpoint): the first and last images
    are identical pixel for pixel, so unpatching restored every weight exactly; the LoRA's image differs."""
    registry, executor, files = env
    ckpt = load_checkpoint(embedded_model_path(), device="cpu")
    folder = registry.get("LoraLoader").env.models.folders_for("loras")[0]
    folder.mkdir(parents=True, exist_ok=True)
    random_kohya_lora(folder / "epiNoiseoffset_v2.safetensors", ckpt.unet, ckpt.text_encoder)
    prompt = shrink(ui_to_api(load("lora.json"), registry), registry)
    queued = {k: {**v, "_meta": prompt[k]["_meta"]} for k, v in load("lora.api.json").items()}
    assert prompt == shrink(queued, registry)

    def image(graph: dict) -> bytes:
        checked = validate_prompt(graph, registry)
        assert checked.ok, checked.node_errors
        log = EventLog()
        executor.execute(checked.prompt, checked.outputs, listener=log)
        assert log.names()[-1] == "execution_success", log.payloads("execution_error")
        [(_, ui)] = log.payloads("executed")
        with Image.open(files.path(ui["images"][0])) as png:
            return png.tobytes()

    without = json.loads(json.dumps(prompt))
    del without["10"]
    without["3"]["inputs"]["model"], without["6"]["inputs"]["clip"] = ["4", 0], ["4", 1]
    without["7"]["inputs"]["clip"] = ["4", 1]
    zero = json.loads(json.dumps(prompt))
    zero["10"]["inputs"].update(strength_model=0.0, strength_clip=0.0)
    before, with_lora, after = image(without), image(prompt), image(zero)
    assert before == after
    assert with_lora != before


def test_esrgan_workflow_converts_to_comfyuis_prompt_and_runs(env):
    """ComfyUI's two-pass example with ESRGAN: the UI workflow gives exactly the prompt ComfyUI queued, and it runs
    on a random RRDBNet .pth in Real-ESRGAN's own layout ({"params_ema": ...}) under the file name it asks for:
    the first image 4x larger, scaled to the second pass's size, with per-tile progress from the upscaler."""
    from tests.models.test_upscale import real_esrgan_state

    registry, executor, files = env
    folder = registry.get("UpscaleModelLoader").env.models.folders_for("upscale_models")[0]
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": real_esrgan_state(nb=1)}, folder / "RealESRGAN_x4plus.pth")
    prompt = ui_to_api(load("hiresfix_esrgan.json"), registry)
    queued = load("hiresfix_esrgan.api.json")
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()} == queued
    checked = validate_prompt(shrink(prompt, registry), registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    assert saved_sizes(log, files) == {"9": (96, 96), "12": (192, 192)}  # 768 / SHRINK, then 1536 / SHRINK
    assert [(v, t) for node, v, t in log.payloads("progress") if node == "22"] == [(1.0, 1.0)]  # 96 px: one tile


def test_without_the_placeholders_an_unknown_node_is_named(tmp_path):
    data = DataDir(tmp_path)
    registry = default_registry(data.root, OutputFiles(data))  # core nodes only
    prompt = ui_to_api(load("lora.json"), registry)
    prompt["10"]["class_type"] = "ImpactWildcardEncode"  # a custom node pack's node
    checked = validate_prompt(prompt, registry)
    assert checked.error["type"] == "missing_node_type"
    assert checked.error["message"] == (
        "Node 'Load LoRA' (ImpactWildcardEncode) is not supported by Atelier: it is not one of ComfyUI's own "
        "nodes but comes from a custom node pack, and custom node packs cannot be installed."
    )


def test_embeddings_in_a_prompt_are_read_and_unknown_ones_are_named(env):
    """The default graph with `embedding:name` in its prompt: a random embedding in models/embeddings changes the
    image; an unknown name comes back as a warning in CLIPTextEncode's output (and the image is made without it)."""
    registry, executor, files = env
    width = load_checkpoint(embedded_model_path(), device="cpu").text_encoder_config.width
    folder = registry.get("CLIPTextEncode").env.models.folders_for("embeddings")[0]
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(5)) * 3},
              str(folder / "style.safetensors"))  # fmt: skip
    base = shrink(ui_to_api(load("default_graph.json"), registry), registry)
    text = base["6"]["inputs"]["text"]

    def run(prompt_text: str) -> tuple[bytes, dict]:
        graph = json.loads(json.dumps(base))
        graph["6"]["inputs"]["text"] = prompt_text
        checked = validate_prompt(graph, registry)
        log = EventLog()
        executor.execute(checked.prompt, checked.outputs, listener=log)
        assert log.names()[-1] == "execution_success", log.payloads("execution_error")
        ui = dict(log.payloads("executed"))
        with Image.open(files.path(ui["9"]["images"][0])) as png:
            return png.tobytes(), ui

    plain, _ = run(text)
    styled, _ = run(f"{text}, (embedding:style:1.1)")
    missing, ui = run(f"{text} embedding:nowhere")
    assert styled != plain
    assert ui["6"] == {"warnings": ["embedding:nowhere matched no file in models/embeddings and was left out."]}
    assert missing == run(f"{text} ")[0]  # left out: the same windows as the prompt without it


def random_controlnet_files(folder: Path) -> None:
    """Two random ControlNets for the embedded model's UNet: the canny one in the original single-file layout
    (control_model.*), the scribble one in diffusers' names; both carry the UNet config (heads, norm groups)."""
    from atelier.models.config import config_to_json
    from atelier.models.controlnet import ControlNet, ControlNetConfig
    from tests.models.test_controlnet import original_layout

    unet = load_checkpoint(embedded_model_path(), device="cpu").unet.config
    config = ControlNetConfig(unet)
    meta = {"atelier.unet_config": config_to_json(unet)}
    torch.manual_seed(5)
    canny = {k: v.contiguous() for k, v in ControlNet(config).state_dict().items()}  # zero convs not zero: random
    canny_file = folder / "control_v11p_sd15_canny_fp16.safetensors"
    save_file(original_layout(canny, config, "control_model."), str(canny_file), metadata=meta)
    scribble = {k: v.contiguous() for k, v in ControlNet(config).state_dict().items()}
    save_file(scribble, str(folder / "control_v11p_sd15_scribble_fp16.safetensors"), metadata=meta)


def test_controlnet_workflow_converts_to_the_api_prompt_and_runs(env):
    """A workflow drawn as ComfyUI's ControlNet examples are (Canny edges of a photo into Apply ControlNet with a
    step window, then a scribble ControlNet stacked with Apply ControlNet (OLD)): it converts to the API prompt
    ComfyUI queues for it and runs on random-weight files. With both strengths at 0 the image is the plain
    txt2img one, pixel for pixel; with the ControlNets it differs."""
    registry, executor, files = env
    folder = registry.get("ControlNetLoader").env.models.folders_for("controlnet")[0]
    folder.mkdir(parents=True, exist_ok=True)
    random_controlnet_files(folder)
    example_image(files.input_path("house_photo.png"), (64, 48))
    example_image(files.input_path("input_scribble_example.png"), (96, 96))
    prompt = ui_to_api(load("controlnet_canny_scribble.json"), registry)
    queued = load("controlnet_canny_scribble.api.json")
    assert {k: {"inputs": v["inputs"], "class_type": v["class_type"]} for k, v in prompt.items()} == queued
    prompt = shrink(prompt, registry)

    def run(graph: dict) -> dict[str, bytes]:
        checked = validate_prompt(graph, registry)
        assert checked.ok and checked.node_errors == {}, checked.node_errors
        log = EventLog()
        executor.execute(checked.prompt, checked.outputs, listener=log)
        assert log.names()[-1] == "execution_success", log.payloads("execution_error")
        out = {}
        for node_id, ui in log.payloads("executed"):
            with Image.open(files.path(ui["images"][0])) as png:
                out[node_id] = (png.size, png.tobytes())
        return out

    controlled = run(prompt)
    assert controlled["9"][0] == (64, 64) and controlled["18"][0] == (64, 48)  # the image; the Canny edges
    off = json.loads(json.dumps(prompt))
    off["13"]["inputs"]["strength"] = off["17"]["inputs"]["strength"] = 0.0
    plain = json.loads(json.dumps(prompt))
    plain["3"]["inputs"]["positive"], plain["3"]["inputs"]["negative"] = ["6", 0], ["7", 0]
    assert run(off)["9"] == run(plain)["9"]
    assert controlled["9"] != run(plain)["9"]
