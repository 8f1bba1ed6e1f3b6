"""The fp16-safe SDXL VAE people swap in ("sdxl-vae-fp16-fix": the SDXL VAE fine-tuned so that its activations
stay inside fp16's range; the same key layout), loaded as a standalone file by VAELoader in both layouts it is
shared in (the original SD names, `sdxl_vae.safetensors`, and diffusers' names), and decoding; and the fp16
safety net of pipeline.decode: a VAE that overflows in half precision is decoded again in fp32."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from atelier.graph.catalog import default_registry
from atelier.graph.executor import Executor
from atelier.models import keymap
from atelier.models.config import VAEConfig
from atelier.models.vae import VAE
from atelier.pipeline import decode
from atelier.server.files import DataDir, OutputFiles
from tests.models.tiny_families import write_tiny_sdxl

# Small, with what a VAE file cannot say at the real model's value (32 GroupNorm groups), as the reader assumes.
CONFIG = VAEConfig(block_channels=(32, 32, 64, 64), layers_per_block=1)


def random_vae(seed: int) -> VAE:
    torch.manual_seed(seed)
    vae = VAE(CONFIG).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return vae


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    vae = random_vae(3)
    sd_names = keymap.vae_to_sd(vae.state_dict(), CONFIG)  # encoder.down.0.block.0..., as sdxl_vae.safetensors
    folder = data.models / "vae"
    save_file({k: v.half().contiguous() for k, v in sd_names.items()}, str(folder / "sdxl_vae.safetensors"))
    diffusers_names = {k: v.half().contiguous() for k, v in vae.state_dict().items()}  # our names are diffusers'
    save_file(diffusers_names, str(folder / "diffusion_pytorch_model.safetensors"))
    write_tiny_sdxl(data.models / "checkpoints" / "tiny_sdxl.safetensors", seed=8)
    return data, vae


@pytest.mark.parametrize("name", ["sdxl_vae.safetensors", "diffusion_pytorch_model.safetensors"])
@torch.no_grad()
def test_vae_loader_reads_the_fp16_fix_file_in_both_layouts(data, name):
    data, vae = data
    registry = default_registry(data.root, OutputFiles(data))
    [loaded] = Executor(registry).execute({"1": {"class_type": "VAELoader", "inputs": {"vae_name": name}}}, ["1"]) \
        .outputs["1"][0]  # fmt: skip
    z = torch.randn(1, 4, 6, 5)
    reference = VAE(CONFIG).eval()
    reference.load_state_dict({k: v.half().float() for k, v in vae.state_dict().items()})  # the fp16 file's values
    got = decode(loaded, z)
    assert got.shape == (1, 3, 48, 40) and torch.isfinite(got).all()
    assert torch.allclose(got, decode(reference, z), atol=1e-5)


def test_an_sdxl_graph_decodes_with_the_swapped_in_vae(data):
    """CheckpointLoaderSimple (SDXL) for the model and CLIP, VAELoader for the VAE: the latent scale stays the
    checkpoint's (0.13025, in MODEL), the standalone VAE decodes the raw latent."""
    data, _ = data
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sdxl.safetensors"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl_vae.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["2", 0]}},
    }  # fmt: skip
    result = Executor(registry).execute(prompt, ["7", "1"])
    assert result.status == "success", result.error
    [image] = result.outputs["7"][0]
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    assert result.outputs["1"][0][0].latent_scale == 0.13025


@torch.no_grad()
def test_a_vae_that_overflows_in_fp16_is_decoded_again_in_fp32(caplog):
    vae = random_vae(4)
    # Weights and latent that fp16 holds, activations that it does not: past 65504, fp16's largest number, they
    # become inf, then NaN in the next GroupNorm; as SDXL's own VAE does in its decoder.
    vae.decoder.conv_in.weight.mul_(100.0)
    z = torch.randn(1, 4, 4, 4) * 1000
    expected = decode(vae, z)  # fp32: finite
    half = VAE(CONFIG).eval()
    half.load_state_dict(vae.state_dict())
    half.half()
    assert not torch.isfinite(half.decode(z.half())).all()  # the raw fp16 pass does overflow
    with caplog.at_level(logging.WARNING, logger="atelier.pipeline"):
        got = decode(half, z)
    assert torch.isfinite(got).all() and "overflowed in fp16" in caplog.text
    assert (got - expected).abs().max() < 1e-2  # fp16-rounded weights, decoded in fp32
    assert half.decoder.conv_in.weight.dtype == torch.float16  # the VAE given is left in fp16
