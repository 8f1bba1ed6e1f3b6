"""ComfyUI's own SDXL workflows run on Atelier's real nodes, on small random SDXL-shaped checkpoints.

The fixtures are the workflows embedded in ComfyUI_examples' SDXL PNGs (tests/fixtures/comfyui_workflows/README.md):
the base + refiner hand-over (two KSamplerAdvanced: the base runs steps 0-20 of 25 and returns its leftover
noise, the refiner finishes without adding noise) and the same with different prompts per model. Each converts
to exactly the prompt ComfyUI queued, validates, and runs with both checkpoints swapped for tiny random files in
the original layouts (tests/models/tiny_families.py). The SDXL default-like graph (the editor's default graph on
an SDXL checkpoint) and a CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner graph run too, and the conditioning
reaching the UNet is checked against ComfyUI's rules (comfy/model_base.py, SDXL.encode_adm and
SDXLRefiner.encode_adm; comfy/samplers.py fills width and height from the latent).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.models.unet import sdxl_vector
from atelier.pipeline import Cond, SizeConditioning, with_vectors
from atelier.server.files import DataDir, OutputFiles
from tests.models.tiny_families import TINY_REFINER, TINY_SDXL, write_tiny_refiner, write_tiny_sdxl

FIXTURES = Path(__file__).parents[1] / "fixtures" / "comfyui_workflows"
BASE, REFINER = "sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors"
STEPS, HANDOVER = 5, 4  # the examples' 25 steps with the hand-over at 20, scaled down


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    write_tiny_sdxl(data.models / "checkpoints" / BASE, seed=1)
    write_tiny_refiner(data.models / "checkpoints" / REFINER, seed=2)
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    return registry, Executor(registry), files


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def small(prompt: dict, side: int = 64) -> dict:
    """The prompt on a small budget: images `side` pixels square, 5 steps with the hand-over at 4."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs["width"] = inputs["height"] = side
        if node["class_type"] in ("KSampler", "KSamplerAdvanced"):
            inputs["steps"] = STEPS
            if inputs.get("end_at_step") == 20:
                inputs["end_at_step"] = HANDOVER
            if inputs.get("start_at_step") == 20:
                inputs["start_at_step"] = HANDOVER
    return prompt


def run(env, prompt: dict) -> tuple[EventLog, dict[str, Image.Image]]:
    registry, executor, files = env
    checked = validate_prompt(prompt, registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    images = {}
    for node_id, ui in log.payloads("executed"):
        for ref in ui.get("images", []):
            with Image.open(files.path(ref)) as image:
                images[node_id] = image.copy()
    return log, images


@pytest.mark.parametrize("name", ["sdxl_base_refiner.json", "sdxl_refiner_prompt.json"])
def test_comfyui_sdxl_example_converts_exactly_and_runs(env, name):
    registry, _, _ = env
    prompt = ui_to_api(load(name), registry)
    queued = load(name.replace(".json", ".api.json"))  # what ComfyUI queued for it (the PNG's prompt chunk)
    assert {k: {"inputs": v["inputs"], "class_type": v["class_type"]} for k, v in prompt.items()} == queued
    assert prompt["4"]["inputs"]["ckpt_name"] == BASE and prompt["12"]["inputs"]["ckpt_name"] == REFINER

    log, images = run(env, small(prompt))
    assert list(images) == ["19"] and images["19"].size == (64, 64)
    pixels = torch.tensor(list(images["19"].getdata()), dtype=torch.float32)
    assert pixels.std() > 0  # the random model made something, not a flat image
    progress = [(node, (value, total)) for node, value, total in log.payloads("progress")]
    assert ("10", (HANDOVER, HANDOVER)) in progress  # the base: steps 0-4 of 5
    assert ("11", (STEPS - HANDOVER, STEPS - HANDOVER)) in progress  # the refiner: the last step


def test_the_handover_is_the_two_halves_of_one_sampling(env):
    """The refiner's KSamplerAdvanced (add_noise disabled, from step 4) continues exactly where the base's
    stopped: with the refiner swapped for the base, the two halves give the image of one 5-step KSampler."""
    registry, _, _ = env
    prompt = small(ui_to_api(load("sdxl_base_refiner.json"), registry))
    for node in ("11", "17"):  # the second sampler and the decoder on the base model
        inputs = prompt[node]["inputs"]
        for key, link in list(inputs.items()):
            if isinstance(link, list) and link[0] == "12":
                inputs[key] = ["4", link[1]]
    prompt["11"]["inputs"]["positive"], prompt["11"]["inputs"]["negative"] = ["6", 0], ["7", 0]
    for unused in ("12", "15", "16"):
        del prompt[unused]
    _, halves = run(env, prompt)
    one = {k: v for k, v in prompt.items() if k not in ("10", "11")}
    one["3"] = {"class_type": "KSampler", "inputs": {
        "seed": prompt["10"]["inputs"]["noise_seed"], "steps": STEPS, "cfg": 8.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}}  # fmt: skip
    one["17"]["inputs"]["samples"] = ["3", 0]
    _, whole = run(env, one)
    a = torch.tensor(list(halves["19"].getdata()), dtype=torch.float32)
    b = torch.tensor(list(whole["19"].getdata()), dtype=torch.float32)
    assert (a - b).abs().max() <= 1  # the same image, to one level of 8-bit rounding


def test_the_default_graph_runs_on_an_sdxl_checkpoint(env):
    """The editor's default graph (CheckpointLoaderSimple, two CLIPTextEncode, KSampler) with an SDXL checkpoint,
    as people first try SDXL in ComfyUI: the size conditioning comes from the latent."""
    registry, _, _ = env
    prompt = ui_to_api(load("default_graph.json"), registry)
    prompt["4"]["inputs"]["ckpt_name"] = BASE
    prompt["3"]["inputs"]["steps"] = 2
    prompt["5"]["inputs"].update(width=64, height=48)
    _, images = run(env, prompt)
    assert images["9"].size == (64, 48)


def test_clip_text_encode_sdxl_and_refiner_nodes_run(env):
    base, refiner = ["1", 1], ["2", 1]
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": BASE}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": REFINER}},
        "3": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": base, "width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0, "target_width": 1024,
            "target_height": 1024, "text_g": "a glass bottle with a galaxy in it", "text_l": "a bottle"}},
        "4": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": base, "width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0, "target_width": 1024,
            "target_height": 1024, "text_g": "text, watermark", "text_l": "text, watermark"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["1", 0], "add_noise": "enable", "noise_seed": 7, "steps": STEPS, "cfg": 7.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["3", 0], "negative": ["4", 0],
            "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": HANDOVER,
            "return_with_leftover_noise": "enable"}},
        "7": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
            "ascore": 6.0, "width": 2048, "height": 2048, "text": "a glass bottle", "clip": refiner}},
        "8": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
            "ascore": 2.5, "width": 2048, "height": 2048, "text": "text, watermark", "clip": refiner}},
        "9": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["2", 0], "add_noise": "disable", "noise_seed": 0, "steps": STEPS, "cfg": 7.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["7", 0], "negative": ["8", 0],
            "latent_image": ["6", 0], "start_at_step": HANDOVER, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["2", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"filename_prefix": "sdxl", "images": ["10", 0]}},
    }  # fmt: skip
    _, images = run(env, prompt)
    assert images["11"].size == (64, 64)


def test_plain_clip_text_encode_on_sdxl_is_both_towers_on_one_text(env):
    """CLIPTextEncode on an SDXL CLIP = CLIPTextEncodeSDXL with text_g = text_l = the text, the sizes left to
    the latent (ComfyUI: SDXLTokenizer tokenizes the text for both towers; the sizes are filled when sampling)."""
    _, executor, _ = env
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": BASE}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red (bottle:1.2)", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
            "target_height": 1024, "text_g": "a red (bottle:1.2)", "text_l": "a red (bottle:1.2)"}},
    }  # fmt: skip
    result = executor.execute(graph, ["2", "3"])
    [[plain]], [[sdxl]] = result.outputs["2"][0], result.outputs["3"][0]  # value lists of CONDITIONING lists
    assert plain.context.shape == (1, 77, 40) and plain.pooled.shape == (1, 16)
    assert torch.equal(plain.context, sdxl.context) and torch.equal(plain.pooled, sdxl.pooled)
    assert plain.sizes == SizeConditioning() and sdxl.sizes == SizeConditioning(1024, 1024, 0, 0, 1024, 1024)


def test_the_vector_y_follows_comfyui_rules():
    pooled = torch.randn(1, 16)
    latent = (1, 4, 96, 128)  # a 1024x768 image
    [base] = with_vectors([Cond(torch.zeros(1, 77, 40), pooled=pooled)], TINY_SDXL, latent)
    expected = sdxl_vector(pooled, torch.tensor([[768.0, 1024, 0, 0, 768, 1024]]))  # h, w, crop, target
    assert torch.equal(base.y, expected) and base.y.shape == (1, TINY_SDXL.adm_in_channels)

    sizes = SizeConditioning(width=2048, height=1536, crop_w=16, crop_h=32, target_width=1024, target_height=512)
    [set_] = with_vectors([Cond(torch.zeros(1, 77, 40), pooled=pooled, sizes=sizes)], TINY_SDXL, latent)
    assert torch.equal(set_.y, sdxl_vector(pooled, torch.tensor([[1536.0, 2048, 32, 16, 512, 1024]])))

    refiner = [Cond(torch.zeros(1, 77, 16), pooled=pooled)]
    [pos] = with_vectors(refiner, TINY_REFINER, latent)
    [neg] = with_vectors(refiner, TINY_REFINER, latent, negative=True)
    assert torch.equal(pos.y, sdxl_vector(pooled, torch.tensor([[768.0, 1024, 0, 0, 6.0]])))
    assert torch.equal(neg.y, sdxl_vector(pooled, torch.tensor([[768.0, 1024, 0, 0, 2.5]])))  # ComfyUI's 2.5
    scored = [Cond(torch.zeros(1, 77, 16), pooled=pooled, sizes=SizeConditioning(aesthetic_score=7.5))]
    assert torch.equal(with_vectors(scored, TINY_REFINER, latent, negative=True)[0].y,
                       sdxl_vector(pooled, torch.tensor([[768.0, 1024, 0, 0, 7.5]])))  # fmt: skip

    from atelier.errors import InputError

    with pytest.raises(InputError, match="no pooled text vector"):
        with_vectors([Cond(torch.zeros(1, 77, 40))], TINY_SDXL, latent)


def test_sdxl_nodes_refuse_other_clips_with_a_sentence():
    from atelier.errors import InputError
    from atelier.graph.kit import ClipModel
    from atelier.graph.nodes.conditioning import CLIPTextEncodeSDXL
    from atelier.models.clip import CLIPTextEncoder
    from atelier.models.config import TextEncoderConfig

    sd1 = ClipModel(CLIPTextEncoder(TextEncoderConfig.tiny()), None)
    with pytest.raises(InputError, match="not an SDXL text encoder"):
        CLIPTextEncodeSDXL().run(None, sd1, 1024, 1024, 0, 0, 1024, 1024, "a", "b")


def test_the_custom_sampling_graph_runs_on_sdxl_and_equals_the_ksampler(env):
    """CFGGuider builds SDXL's vector y for the latent SamplerCustomAdvanced samples: the same image as KSampler
    with the same seed, steps and guidance."""
    prompt = load("custom_sampling.api.json")
    prompt["4"]["inputs"]["ckpt_name"] = BASE
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["13"]["inputs"]["steps"] = 3
    _, custom = run(env, prompt)
    plain = {k: v for k, v in prompt.items() if k not in ("10", "11", "12", "13", "14")}
    plain["3"] = {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": 3, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}  # fmt: skip
    plain["8"]["inputs"]["samples"] = ["3", 0]
    _, ksampler = run(env, plain)
    assert custom["9"].tobytes() == ksampler["9"].tobytes()


def test_lora_loader_on_an_sdxl_checkpoint_patches_and_restores(env):
    """LoraLoader between an SDXL checkpoint and its sampler (a kohya file naming the UNet and both text towers,
    lora_te1_ / lora_te2_): the image changes, and strength 0 afterwards gives the image without it, pixel for
    pixel (the cached checkpoint was restored). Strength on the text towers alone changes the image too."""
    from atelier.models.checkpoint import load_checkpoint
    from tests.models.test_lora_sdxl import kohya_file, random_lora

    registry, _, _ = env
    models = registry.get("LoraLoader").env.models
    folder = models.folders_for("loras")[0]
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(models.folders_for("checkpoints")[0] / BASE, device="cpu")
    kohya_file(folder / "xl_style.safetensors", random_lora(5, ckpt.unet, ckpt.text_encoder))
    prompt = ui_to_api(load("default_graph.json"), registry)
    prompt["4"]["inputs"]["ckpt_name"] = BASE
    prompt["3"]["inputs"]["steps"] = 2
    prompt["5"]["inputs"].update(width=64, height=64)

    def with_lora(strength_model: float, strength_clip: float) -> dict:
        graph = json.loads(json.dumps(prompt))
        graph["10"] = {"class_type": "LoraLoader", "inputs": {
            "model": ["4", 0], "clip": ["4", 1], "lora_name": "xl_style.safetensors",
            "strength_model": strength_model, "strength_clip": strength_clip}}  # fmt: skip
        graph["3"]["inputs"]["model"] = ["10", 0]
        graph["6"]["inputs"]["clip"] = graph["7"]["inputs"]["clip"] = ["10", 1]
        return graph

    def pixels(graph: dict) -> bytes:
        return run(env, graph)[1]["9"].tobytes()

    before = pixels(prompt)
    assert pixels(with_lora(1.0, 1.0)) != before
    assert pixels(with_lora(0.0, 1.0)) != before  # the text towers' part alone
    assert pixels(with_lora(0.0, 0.0)) == before
    assert pixels(prompt) == before
