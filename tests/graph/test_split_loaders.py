"""Split loaders: UNETLoader, CLIPLoader and VAELoader on files that each hold one network, as ComfyUI's newer
templates ship models (models/diffusion_models, models/text_encoders, models/vae; the legacy unet/ and clip/ too).

The files are cut out of the embedded checkpoint in the layouts ComfyUI's split files use: the UNet's SD names
without `model.diffusion_model.`, the CLIP text encoder's transformers names (`text_model.*`, plus CLIP's
`logit_scale`, unused), the VAE's SD names without `first_stage_model.`. The same weights through the three loaders
must give the very image the checkpoint loader gives. Files of other families are refused in one sentence.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from atelier.errors import CheckpointError
from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.models import keymap
from atelier.models.checkpoint import load_diffusion_model, load_text_encoder
from atelier.models.config import UNetConfig
from atelier.models.library import embedded_model_path
from atelier.models.unet import UNet
from atelier.models.weights import WeightsFile
from atelier.server.files import DataDir, OutputFiles


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    source = embedded_model_path()
    state, meta = load_file(source), WeightsFile(source).index.metadata
    parts = keymap.split_checkpoint(state)
    unet_meta = {
        k: v for k, v in meta.items() if k in ("atelier.unet_config", "atelier.vae_config", "atelier.latent_rgb")
    }
    save_file(parts["unet"], data.models / "diffusion_models" / "unet.safetensors", unet_meta)
    text = {**parts["text_encoder"], "logit_scale": torch.tensor(4.6052)}
    (data.root / "models" / "clip").mkdir()  # the legacy folder of text encoders
    save_file(
        text,
        data.root / "models" / "clip" / "clip_l.safetensors",
        {"atelier.text_encoder_config": meta["atelier.text_encoder_config"]},
    )
    save_file(parts["vae"], data.models / "vae" / "vae.safetensors", {"atelier.vae_config": meta["atelier.vae_config"]})
    registry = default_registry(data.root, OutputFiles(data))
    return registry, Executor(registry), data


def prompt(split: bool) -> dict:
    """txt2img, 32 x 32, 3 steps: from the checkpoint, or from the three split files."""
    if split:
        loaders = {
            "u": {"class_type": "UNETLoader", "inputs": {"unet_name": "unet.safetensors", "weight_dtype": "default"}},
            "c": {
                "class_type": "CLIPLoader",
                "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"},
            },
            "v": {"class_type": "VAELoader", "inputs": {"vae_name": "vae.safetensors"}},
        }
        model, clip, vae = ["u", 0], ["c", 0], ["v", 0]
    else:
        loaders = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "embedded.safetensors"}}}
        model, clip, vae = ["4", 0], ["4", 1], ["4", 2]
    return {
        **loaders,
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "un soleil jaune", "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 3,
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
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": "split" if split else "ckpt"},
        },
    }


def test_split_files_make_the_image_the_checkpoint_makes(env):
    registry, executor, data = env
    info = registry.object_info()
    assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == ["unet.safetensors"]
    assert info["CLIPLoader"]["input"]["required"]["clip_name"][0] == ["clip_l.safetensors"]  # found in clip/
    images = {}
    for split in (False, True):
        checked = validate_prompt(prompt(split), registry)
        assert checked.ok, checked.node_errors
        result = executor.execute(prompt(split), ["9"], EventLog())
        assert result.status == "success", result.error
        (ref,) = result.ui["9"]["images"]
        images[split] = (data.output / ref["filename"]).read_bytes()
    ckpt, split = (Image.open(io.BytesIO(images[s])).convert("RGB") for s in (False, True))
    assert ckpt.size == split.size == (32, 32) and list(ckpt.getdata()) == list(split.getdata())


def test_a_sd15_shaped_unet_file_without_metadata_is_read_off_its_shapes(tmp_path):
    """ComfyUI's split SD1.5 files carry no config: 768-wide cross-attention says SD1.x, the shapes say the rest."""
    # SD1.x's 8 heads and 32 norm groups: what the shapes cannot say, and what every SD1.x file shares.
    config = dataclasses.replace(UNetConfig.tiny(), context_dim=768, attention_heads=8, norm_groups=32)
    unet = UNet(config)
    save_file(keymap.unet_to_sd(unet.state_dict(), config), tmp_path / "sd15_unet.safetensors")
    loaded, inferred, family = load_diffusion_model(tmp_path / "sd15_unet.safetensors", device="cpu", dtype="fp32")
    assert family == "sd1" and inferred.context_dim == 768 and inferred.block_channels == (32, 64)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 3, 768)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx), unet.eval()(x, t, ctx))


def test_other_families_are_refused_in_one_sentence(tmp_path, env):
    registry, _, _ = env
    sdxl_clip = {"text_model.embeddings.token_embedding.weight": torch.zeros(10, 1280)}
    save_file(sdxl_clip, tmp_path / "clip_g.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_text_encoder(tmp_path / "clip_g.safetensors", device="cpu")
    assert str(error.value) == (  # SD 2.x and SDXL towers: tests/graph/test_split_families.py
        "clip_g.safetensors is not a Stable Diffusion 1.x text encoder: it looks like an SDXL checkpoint (found an "
        "OpenCLIP ViT-bigG/14 text encoder (1280 wide)); load it with CLIPLoader's type sd2 (ViT-H) or "
        "DualCLIPLoader's type sdxl (bigG)."
    )
    save_file({"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4)}, tmp_path / "t5.safetensors")
    with pytest.raises(CheckpointError, match=r"it looks like a T5 text encoder \(Stable Diffusion 3, Flux\)"):
        load_text_encoder(tmp_path / "t5.safetensors", device="cpu")
    # The node types of other families are refused when the prompt is validated, before anything loads.
    refused = {
        "c": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "lumina2"}},
        "d": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "clip_l.safetensors", "clip_name2": "clip_l.safetensors", "type": "flux"},
        },
    }
    errors = {}
    for node_id, node in refused.items():
        full = {**prompt(True), node_id: node}
        full["6"]["inputs"]["clip"] = [node_id, 0]
        checked = validate_prompt(full, registry)
        errors[node_id] = checked.node_errors[node_id]["errors"][0]["details"].removeprefix("type - ")
    supported = (
        "Atelier runs Stable Diffusion 1.x, 2.x and SDXL (CLIPLoader's types 'stable_diffusion' and 'sd2', "
        "DualCLIPLoader's type 'sdxl')."
    )
    assert errors["c"] == f"CLIPLoader's type 'lumina2' builds the text encoder of lumina2; {supported}"
    assert errors["d"] == f"DualCLIPLoader's type 'flux' builds the text encoder of a Flux checkpoint; {supported}"
    assert json.dumps(errors)  # plain sentences, as the editor shows them
