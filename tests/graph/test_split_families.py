"""Split loaders on SD 2.x and SDXL: UNETLoader, CLIPLoader, DualCLIPLoader and VAELoader on files cut out of a
whole checkpoint, in the layouts people have, must give the very image CheckpointLoaderSimple gives on the file.

Layouts: the UNet in LDM names without `model.diffusion_model.` (ComfyUI's diffusion_models files), with it, and
in diffusers' names (diffusion_pytorch_model.safetensors); CLIP-L in transformers' names (ComfyUI's clip_l);
bigG and ViT-H in open_clip's names (cut out of a checkpoint) and transformers' (CLIPTextModelWithProjection /
CLIPTextModel, as ComfyUI's clip_g and diffusers' text_encoder ship). The models are the tiny random ones of
tests/models/tiny_families.py.
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from atelier.errors import CheckpointError
from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.models import keymap
from atelier.models.checkpoint import load_diffusion_model, load_family_text_encoder
from atelier.models.config import TextEncoderConfig
from atelier.server.files import DataDir, OutputFiles
from tests.models.tiny_families import (
    TINY_REFINER,
    TINY_SD2,
    TINY_SDXL,
    write_tiny_refiner,
    write_tiny_sd2,
    write_tiny_sdxl,
)

# The last transformer of the tiny SD 2.x UNet's up path, where ComfyUI's v-prediction guess looks (the real
# model's output_blocks.11.1): its LayerNorm bias is spread wide in the 768-v model.
NORM_PROBE = "output_blocks.3.1.transformer_blocks.0.norm1.bias"


def _prefixed(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    ckpts, unets, clips = data.models / "checkpoints", data.models / "diffusion_models", data.models / "text_encoders"
    # SDXL: the whole file, then its parts.
    whole = load_file(write_tiny_sdxl(ckpts / "xl.safetensors", seed=4))
    unet = _prefixed(whole, keymap.UNET_PREFIX)
    save_file(unet, unets / "xl_unet.safetensors")  # ComfyUI's layout: LDM names, no prefix
    save_file({keymap.UNET_PREFIX + k: v for k, v in unet.items()}, unets / "xl_prefixed.safetensors")
    ours = keymap.unet_from_sd({k: v.float() for k, v in unet.items()}, TINY_SDXL)  # diffusers' names are ours
    save_file({k: v.half() for k, v in ours.items()}, unets / "diffusion_pytorch_model.safetensors")
    clip_l = _prefixed(whole, keymap.SDXL_CLIP_L_PREFIX)
    save_file({**clip_l, "logit_scale": torch.tensor(4.6052)}, clips / "clip_l.safetensors")
    big_g = _prefixed(whole, keymap.SDXL_CLIP_G_PREFIX)
    save_file(big_g, clips / "clip_g_open_clip.safetensors")
    save_file(keymap.text_encoder_from_open_clip(big_g, projection=True), clips / "clip_g.safetensors")
    save_file(_prefixed(whole, keymap.VAE_PREFIX), data.models / "vae" / "xl_vae.safetensors")

    # The SDXL refiner: its UNet, and bigG alone in open_clip's names (CLIPLoader's stable_diffusion reads it).
    refiner = load_file(write_tiny_refiner(ckpts / "refiner.safetensors", seed=6))
    save_file(_prefixed(refiner, keymap.UNET_PREFIX), unets / "refiner_unet.safetensors")
    save_file(_prefixed(refiner, keymap.REFINER_CLIP_G_PREFIX), clips / "refiner_g.safetensors")
    save_file(_prefixed(refiner, keymap.VAE_PREFIX), data.models / "vae" / "refiner_vae.safetensors")

    # SD 2.x 768-v with no .yaml: its last transformer's norm bias spread wide, as the real v model's is.
    sd2 = load_file(write_tiny_sd2(ckpts / "sd2_tmp.safetensors", seed=5, v_prediction=False))
    (ckpts / "sd2_tmp.safetensors").unlink()
    g = torch.Generator().manual_seed(0)
    sd2[keymap.UNET_PREFIX + NORM_PROBE] = 0.3 * torch.randn(sd2[keymap.UNET_PREFIX + NORM_PROBE].shape, generator=g)
    save_file(sd2, ckpts / "sd2.safetensors")
    save_file(_prefixed(sd2, keymap.UNET_PREFIX), unets / "sd2_unet.safetensors")
    vit_h = _prefixed(sd2, keymap.SD2_TEXT_PREFIX)
    save_file(vit_h, clips / "vit_h_open_clip.safetensors")
    save_file(keymap.text_encoder_from_open_clip(vit_h, projection=False), clips / "vit_h.safetensors")
    save_file(_prefixed(sd2, keymap.VAE_PREFIX), data.models / "vae" / "sd2_vae.safetensors")
    registry = default_registry(data.root, OutputFiles(data))
    return registry, Executor(registry), data


def graph(loaders: dict, model: list, clip: list, vae: list, sdxl: bool) -> dict:
    """txt2img, 32 x 32, 3 steps; SDXL's positive prompt through CLIPTextEncodeSDXL, the negative CLIPTextEncode."""
    positive = (
        {
            "class_type": "CLIPTextEncodeSDXL",
            "inputs": {
                "clip": clip,
                "width": 64,
                "height": 64,
                "crop_w": 0,
                "crop_h": 0,
                "target_width": 64,
                "target_height": 64,
                "text_g": "un phare",
                "text_l": "un phare la nuit",
            },
        }
        if sdxl
        else {"class_type": "CLIPTextEncode", "inputs": {"text": "un phare", "clip": clip}}
    )
    return {
        **loaders,
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "6": positive,
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "flou", "clip": clip}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 7,
                "steps": 3,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": model,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": vae}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "split"}},
    }


def whole(ckpt: str, sdxl: bool) -> dict:
    loaders = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}
    return graph(loaders, ["4", 0], ["4", 1], ["4", 2], sdxl)


def split(unet: str, clip: dict, vae: str, sdxl: bool) -> dict:
    loaders = {
        "u": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "c": clip,
        "v": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
    }
    return graph(loaders, ["u", 0], ["c", 0], ["v", 0], sdxl)


def image(env, prompt: dict) -> list:
    registry, executor, data = env
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = executor.execute(prompt, ["9"], EventLog())
    assert result.status == "success", result.error
    (ref,) = result.ui["9"]["images"]
    return list(Image.open(io.BytesIO((data.output / ref["filename"]).read_bytes())).convert("RGB").getdata())


def dual(name1: str, name2: str) -> dict:
    inputs = {"clip_name1": name1, "clip_name2": name2, "type": "sdxl"}
    return {"class_type": "DualCLIPLoader", "inputs": inputs}


def test_sdxl_split_files_make_the_image_the_whole_checkpoint_makes(env):
    reference = image(env, whole("xl.safetensors", sdxl=True))
    assert len(set(reference)) > 1  # a real picture, not a flat colour that any CLIP would give
    cases = [
        ("xl_unet.safetensors", dual("clip_l.safetensors", "clip_g.safetensors")),
        ("xl_prefixed.safetensors", dual("clip_g_open_clip.safetensors", "clip_l.safetensors")),  # either order
        ("diffusion_pytorch_model.safetensors", dual("clip_l.safetensors", "clip_g_open_clip.safetensors")),
    ]
    for unet, clip in cases:
        assert image(env, split(unet, clip, "xl_vae.safetensors", sdxl=True)) == reference, (unet, clip)


def test_sd2_split_files_make_the_image_the_whole_checkpoint_makes(env):
    reference = image(env, whole("sd2.safetensors", sdxl=False))
    assert len(set(reference)) > 1
    for clip_name in ("vit_h.safetensors", "vit_h_open_clip.safetensors"):
        clip = {"class_type": "CLIPLoader", "inputs": {"clip_name": clip_name, "type": "sd2"}}
        assert image(env, split("sd2_unet.safetensors", clip, "sd2_vae.safetensors", sdxl=False)) == reference


def test_the_refiner_split_files_make_the_image_the_whole_checkpoint_makes(env):
    """CLIPLoader's stable_diffusion type reads bigG alone as the refiner's CLIP, as ComfyUI's does."""
    reference = image(env, whole("refiner.safetensors", sdxl=False))
    clip = {"class_type": "CLIPLoader", "inputs": {"clip_name": "refiner_g.safetensors", "type": "stable_diffusion"}}
    assert image(env, split("refiner_unet.safetensors", clip, "refiner_vae.safetensors", sdxl=False)) == reference
    _, _, data = env
    _, config, family = load_diffusion_model(data.models / "diffusion_models" / "refiner_unet.safetensors")
    assert family == "sdxl" and config == TINY_REFINER


def test_sd2_unet_prediction_follows_comfyuis_guess(env, tmp_path):
    """A UNet-only SD 2.x file says nothing of its target; like ComfyUI, a wide LayerNorm bias spread says v."""
    _, _, data = env
    path = data.models / "diffusion_models" / "sd2_unet.safetensors"
    _, config, family = load_diffusion_model(path, device="cpu", dtype="fp32")
    assert family == "sd2" and config.prediction == "v" and config == TINY_SD2
    state = load_file(path)
    state[NORM_PROBE] = 0.01 * torch.ones_like(state[NORM_PROBE])  # the 512-base model's tight spread
    save_file(state, tmp_path / "base.safetensors")
    assert load_diffusion_model(tmp_path / "base.safetensors", device="cpu", dtype="fp32")[1].prediction == "eps"
    (tmp_path / "base.yaml").write_text("model:\n  params:\n    parameterization: v\n", encoding="utf-8")
    assert load_diffusion_model(tmp_path / "base.safetensors", device="cpu", dtype="fp32")[1].prediction == "v"


def test_sdxl_unet_layouts_read_back_as_the_same_config(env):
    _, _, data = env
    for name in ("xl_unet.safetensors", "xl_prefixed.safetensors", "diffusion_pytorch_model.safetensors"):
        _, config, family = load_diffusion_model(data.models / "diffusion_models" / name, device="cpu")
        assert family == "sdxl" and config == TINY_SDXL, name


def test_mismatched_towers_and_other_families_are_refused_in_one_sentence(env, tmp_path):
    registry, _, _ = env
    # The tiny CLIP-L is 32 wide (no published width), so a real 768-wide one is made to be refused.
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 768)}, tmp_path / "l.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_family_text_encoder({"clip_h": tmp_path / "l.safetensors"}, device="cpu")
    assert str(error.value) == (
        "l.safetensors is not the OpenCLIP ViT-H/14 text encoder of SD 2.x: it looks like a CLIP ViT-L/14 text "
        "encoder (768 wide)."
    )
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4)}, tmp_path / "t5.safetensors")
    with pytest.raises(CheckpointError, match=r"it looks like a T5 text encoder \(Stable Diffusion 3, Flux\)"):
        load_family_text_encoder({"clip_g": tmp_path / "t5.safetensors"}, device="cpu")
    # Two towers of one kind: a sentence, not a shape error deep in the build.
    pair = dual("clip_g_open_clip.safetensors", "clip_g_open_clip.safetensors")
    result = Executor(registry).execute(
        split("xl_unet.safetensors", pair, "xl_vae.safetensors", True), ["9"], EventLog()
    )
    assert result.status == "error"
    assert "DualCLIPLoader got two OpenCLIP ViT-bigG text encoders" in str(result.error)
    # Families Atelier does not run are refused when the prompt is validated.
    for node in (
        {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "lumina2"}},
        {"class_type": "DualCLIPLoader", "inputs": {**dual("a", "b")["inputs"], "type": "flux"}},
    ):
        prompt = split("xl_unet.safetensors", node, "xl_vae.safetensors", sdxl=False)
        if node["class_type"] == "DualCLIPLoader":
            prompt["c"]["inputs"].update(clip_name1="clip_l.safetensors", clip_name2="clip_g.safetensors")
        details = validate_prompt(prompt, registry).node_errors["c"]["errors"][0]["details"]
        kind = node["inputs"]["type"]
        assert details.removeprefix("type - ") == (
            f"{node['class_type']}'s type {kind!r} builds the text encoder of "
            f"{'a Flux checkpoint' if kind == 'flux' else 'lumina2'}; Atelier runs Stable Diffusion 1.x, 2.x and "
            "SDXL (CLIPLoader's types 'stable_diffusion' and 'sd2', DualCLIPLoader's type 'sdxl')."
        )


def test_the_tower_configs_match_the_whole_checkpoint(env):
    _, _, data = env
    clips = data.models / "text_encoders"
    module, tokenizers, config = load_family_text_encoder(
        {"clip_l": clips / "clip_l.safetensors", "clip_g": clips / "clip_g.safetensors"}, device="cpu"
    )
    assert isinstance(config, TextEncoderConfig) and config.activation == "gelu" and config.projection_dim == 16
    assert module.clip_l.config.activation == "quick_gelu" and module.context_dim == TINY_SDXL.context_dim
    assert [t.pad_id for t in tokenizers] == [49407, 0]  # CLIP-L pads with its end token, bigG with 0 (open_clip)


def test_towers_are_told_apart_as_comfyui_tells_them():
    """The published towers by their shapes alone (no weights): ComfyUI's detect_te_model reads a 23rd layer as
    ViT-H and a 31st as bigG; widths 768, 1024 and 1280 and open_clip's names say the same."""
    from atelier.models.single_file import is_big_g, is_vit_h

    def hf(width: int, layers: int) -> dict[str, tuple[int, ...]]:
        shapes = {"text_model.embeddings.token_embedding.weight": (49408, width)}
        shapes.update({f"text_model.encoder.layers.{i}.mlp.fc1.weight": (4 * width, width) for i in range(layers)})
        return shapes

    clip_l, vit_h, big_g = hf(768, 12), hf(1024, 24), hf(1280, 32)
    assert [is_big_g(s) for s in (clip_l, vit_h, big_g)] == [False, None, True]
    assert [is_vit_h(s) for s in (clip_l, vit_h, big_g)] == [False, True, False]
    assert is_big_g({"transformer.resblocks.0.attn.in_proj_weight": (24, 8)}) is True
    assert is_big_g(hf(32, 3)) is None  # a test-sized tower: DualCLIPLoader falls back on ComfyUI's order
