"""ComfyUI's own ControlNet examples (github.com/comfyanonymous/ComfyUI_examples, controlnet/, commit f9431bb):
each PNG's `workflow` chunk converts to exactly its `prompt` chunk, what ComfyUI queued, and the workflows run on
random-weight ControlNet files of the right layout made here, under the file names they ask for.

- controlnet_scribble: `controlnet_example.png`, a scribble into Apply ControlNet (OLD), SD1.5 with a VAELoader;
- controlnet_pose_2pass: `2_pass_pose_worship.png`, an OpenPose ControlNet on both passes of a hires fix, two
  checkpoints, CLIPSetLastLayer -2;
- controlnet_mixing: `mixing_controlnets.png`, scribble and OpenPose ControlNets stacked;
- t2i_adapter_depth: `depth_t2i_adapter.png`, a T2I-Adapter file through ControlNetLoader: it converts exactly,
  and Atelier, which reads ControlNets but not T2I-Adapters, refuses the file in one sentence;
- controlnet_depth_diff: `depth_controlnet.png`, DiffControlNetLoader with a ControlNet stored as its difference
  to the SD1.5 UNet (a `difference` key, control_model.* weights): made whole with the model's UNet weights.

The checkpoints become the embedded model and sizes / SHRINK (as in test_comfyui_workflows.py), with RUN_STEPS
steps: ControlNet doubles the UNet's work, and dpmpp_sde evaluates it twice a step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.unsupported import UNSUPPORTED_NODES
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.models.checkpoint import load_checkpoint
from atelier.models.library import embedded_model_path
from atelier.server.files import DataDir, OutputFiles
from tests.graph.test_comfyui_workflows import example_image, load, saved_sizes, shrink

RUN_STEPS = 2
# name -> {SaveImage node id: (width, height) after shrinking}
RUNS = {
    "controlnet_scribble.json": {"9": (64, 64)},  # 512 / 8
    "controlnet_pose_2pass.json": {"9": (160, 88), "18": (240, 136)},  # 1280 x 704, then 1920 x 1088
    "controlnet_mixing.json": {"9": (96, 96)},  # 768 / 8
    "controlnet_depth_diff.json": {"9": (104, 48)},  # 832 x 384
}
INPUT_IMAGES = {  # what the examples load, drawn small (the originals are 512-768 px line drawings)
    "input_scribble_example.png": (64, 64),
    "pose_worship.png": (80, 48),
    "house_scribble.png": (96, 96),
    "pose_present.png": (96, 96),
    "shark_depthmap.png": (104, 48),
}


def as_queued(prompt: dict) -> dict:
    """class_type and inputs, less the upload button's label ("choose file to upload": "image") that ComfyUI's
    editor of the time also sent for LoadImage; today's editor and ui_to_api leave it out."""
    return {
        node_id: {
            "class_type": node["class_type"],
            "inputs": {k: v for k, v in node["inputs"].items() if k != "choose file to upload"},
        }
        for node_id, node in prompt.items()
    }


def random_controlnet(path: Path, seed: int, original: bool, difference: bool = False) -> dict[str, torch.Tensor]:
    """A random ControlNet for the embedded model's UNet, in the original single-file layout (control_model.*,
    as lllyasviel's control_*.safetensors are) or in diffusers' names; the zero convolutions are random too, so
    the control changes the image. `difference`: stored minus the UNet's weights, with the `difference` key of
    diff ControlNets (original layout). Returns the whole network's state, in diffusers' names."""
    from atelier.models.config import config_to_json
    from atelier.models.controlnet import ControlNet, ControlNetConfig
    from tests.models.test_controlnet import original_layout

    model = load_checkpoint(embedded_model_path(), device="cpu").unet
    config = ControlNetConfig(model.config)
    torch.manual_seed(seed)
    whole = {k: v.contiguous() for k, v in ControlNet(config).state_dict().items()}
    unet = model.state_dict()
    state = {k: v - unet[k] if difference and k in unet else v for k, v in whole.items()}
    if original:
        state = original_layout(state, config, "control_model.")
    if difference:
        state["difference"] = torch.tensor([])
    save_file(state, str(path), metadata={"atelier.unet_config": config_to_json(model.config)})
    return whole


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    for vae in ("vae-ft-mse-840000-ema-pruned.safetensors", "embedded_vae.safetensors"):
        shutil.copyfile(embedded_model_path(), data.models / "vae" / vae)
    files = OutputFiles(data)
    for name, size in INPUT_IMAGES.items():
        example_image(files.input_path(name), size)
    registry = default_registry(data.root, files, extra_nodes=UNSUPPORTED_NODES)
    folder = registry.get("ControlNetLoader").env.models.folders_for("controlnet")[0]
    folder.mkdir(parents=True, exist_ok=True)
    random_controlnet(folder / "control_scribble.safetensors", seed=5, original=True)
    random_controlnet(folder / "control_openpose.safetensors", seed=6, original=False)
    random_controlnet(folder / "diff_control_sd15_depth_fp16.safetensors", seed=8, original=True, difference=True)
    return registry, Executor(registry), files, folder


@pytest.mark.parametrize("name", [*RUNS, "t2i_adapter_depth.json"])
def test_the_workflow_converts_to_exactly_comfyuis_prompt(env, name):
    registry = env[0]
    assert as_queued(ui_to_api(load(name), registry)) == as_queued(load(name.replace(".json", ".api.json")))


@pytest.mark.parametrize(
    "name",
    [  # the two-pass one takes ~50 s on two shared cores
        name if name != "controlnet_pose_2pass.json" else pytest.param(name, marks=pytest.mark.slow) for name in RUNS
    ],
)
def test_the_workflow_runs_on_random_controlnets(env, name):
    registry, executor, files, _ = env
    prompt = shrink(ui_to_api(load(name), registry), registry)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = RUN_STEPS
    checked = validate_prompt(prompt, registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    assert saved_sizes(log, files) == RUNS[name]
    if name != "controlnet_scribble.json":
        return

    # Without the ControlNet (strength 0) the image is another one: the control reached the UNet.
    plain = json.loads(json.dumps(checked.prompt))
    for node in plain.values():
        if node["class_type"] == "ControlNetApply":
            node["inputs"]["strength"] = 0.0
    log_plain = EventLog()
    executor.execute(plain, checked.outputs, listener=log_plain)
    first = sorted(RUNS[name])[0]

    def pixels(events: EventLog) -> bytes:
        ui = dict(events.payloads("executed"))
        with Image.open(files.path(ui[first]["images"][0])) as png:
            return png.tobytes()

    assert pixels(log) != pixels(log_plain)


def test_a_t2i_adapter_file_is_refused_in_one_sentence(env):
    """T2I-Adapter (Mou et al. 2023) is a small separate encoder, not a copy of the UNet's: a file of its layout
    (adapter.body.*, conv_in) given to ControlNetLoader gets one sentence naming the file, and nothing runs."""
    registry, executor, _, folder = env
    torch.manual_seed(7)
    adapter = {  # the first keys of TencentARC's t2iadapter_depth_sd14v1.pth, at a tiny width
        "conv_in.weight": torch.randn(8, 192, 3, 3),
        "conv_in.bias": torch.randn(8),
        "body.0.block1.weight": torch.randn(8, 8, 3, 3),
        "body.0.block1.bias": torch.randn(8),
    }
    torch.save(adapter, folder / "t2iadapter_depth_sd14v1.pth")
    prompt = shrink(ui_to_api(load("t2i_adapter_depth.json"), registry), registry)
    checked = validate_prompt(prompt, registry)
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_error"
    (error,) = log.payloads("execution_error")
    assert error["node_id"] == "31" and error["exception_message"].startswith(
        "t2iadapter_depth_sd14v1.pth is not a ControlNet (found body.0.block1.bias, body.0.block1.weight, conv_in.bias"
    )


def test_a_difference_controlnet_is_made_whole_with_the_models_unet(env, tmp_path):
    """DiffControlNetLoader adds the model's UNet weights to a diff ControlNet: the network equals the random one
    the file was made from; Load ControlNet Model, which has no model, refuses the file in one sentence."""
    from atelier.errors import CheckpointError
    from atelier.models.controlnet import load_controlnet
    from atelier.models.info import describe_model

    path = tmp_path / "diff_control.safetensors"
    whole = random_controlnet(path, seed=9, original=True, difference=True)
    unet = load_checkpoint(embedded_model_path(), device="cpu").unet
    loaded = load_controlnet(path, base=unet).state_dict()
    assert loaded.keys() == whole.keys()
    for key, value in whole.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=1e-6, msg=key)
    with pytest.raises(CheckpointError) as refused:
        load_controlnet(path)
    assert str(refused.value) == (
        "diff_control.safetensors is a difference ControlNet (stored minus an SD1.5 UNet); load it with Load "
        "ControlNet Model (diff), which adds it to a model."
    )
    told = describe_model(path)  # atelier info
    assert "a difference ControlNet (stored minus the weights of an SD1.x UNet" in told
    assert "Load ControlNet Model (diff), given the model to add it to" in told
