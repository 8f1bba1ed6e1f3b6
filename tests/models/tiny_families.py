"""Small SD 2.x and SDXL (base and refiner) single files of random weights, written in the original layouts with
Atelier's own modules and keymap (no diffusers needed), for the graph, CLI and lab tests.

Shapes are what the loader reads off a file and what it must assume: 64-wide attention heads, 32 GroupNorm
groups, 256 values per size number in SDXL's vector y. The text towers read the real 49408-token vocabulary (the
tokenizer is the real one); everything else is tiny, so an 8x8 latent takes milliseconds per step on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from atelier.models import keymap
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.unet import UNet
from atelier.models.vae import VAE

# The towers: CLIP-L 32 wide + bigG 8 wide = SDXL's 40-wide context; bigG's pooled vector projected to 16.
TINY_L = TextEncoderConfig(width=32, layers=3, heads=1, mlp_width=64)
TINY_G = TextEncoderConfig(width=8, layers=3, heads=1, mlp_width=32, activation="gelu", projection_dim=16)
TINY_REFINER_G = TextEncoderConfig(width=16, layers=2, heads=1, mlp_width=32, activation="gelu", projection_dim=16)
TINY_H = TextEncoderConfig(width=24, layers=3, heads=1, mlp_width=48, activation="gelu")
TINY_VAE = VAEConfig.tiny()  # 8x, as every SD VAE
TINY_SDXL = UNetConfig(
    block_channels=(64, 128, 128),
    cross_attention_levels=(False, True, True),
    attention_head_dim=64,
    transformer_depth=(0, 2, 3),
    linear_projection=True,
    context_dim=40,
    adm_in_channels=16 + 6 * 256,  # pooled (16) + [h, w, crop_h, crop_w, target_h, target_w] x 256
)
TINY_REFINER = UNetConfig(
    block_channels=(64, 128, 128, 128),
    cross_attention_levels=(False, True, True, False),
    attention_head_dim=64,
    transformer_depth=2,
    linear_projection=True,
    context_dim=16,
    adm_in_channels=16 + 5 * 256,  # pooled (16) + [h, w, crop_h, crop_w, aesthetic score] x 256
)
TINY_SD2 = UNetConfig(
    block_channels=(64, 128),
    layers_per_block=1,
    cross_attention_levels=(True, True),
    attention_head_dim=64,
    linear_projection=True,
    context_dim=24,
    prediction="v",
)


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`module` with every tensor moved a little off its init (LayerNorms start at exactly 1 and 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return module


def _tower(config: TextEncoderConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return _perturbed(CLIPTextEncoder(config), seed).state_dict()


def _common(unet_config: UNetConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    unet = _perturbed(UNet(unet_config), seed)
    torch.manual_seed(seed + 1)
    vae = VAE(TINY_VAE)
    return {
        **{keymap.UNET_PREFIX + k: v for k, v in keymap.unet_to_sd(unet.state_dict(), unet_config).items()},
        **{keymap.VAE_PREFIX + k: v for k, v in keymap.vae_to_sd(vae.state_dict(), TINY_VAE).items()},
    }


def _save(path: Path, state: dict[str, torch.Tensor], dtype: torch.dtype) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(dtype).contiguous() for k, v in state.items()}, str(path))
    return path


def write_tiny_sdxl(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """An SDXL base file: UNet, VAE, CLIP-L (transformers names) and bigG (open_clip names), fp16 by default."""
    state = _common(TINY_SDXL, seed)
    state.update({keymap.SDXL_CLIP_L_PREFIX + k: v for k, v in _tower(TINY_L, seed + 2).items()})
    bigg = keymap.text_encoder_to_open_clip(_tower(TINY_G, seed + 3))
    state.update({keymap.SDXL_CLIP_G_PREFIX + k: v for k, v in bigg.items()})
    return _save(path, state, dtype)


def write_tiny_refiner(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """An SDXL refiner file: UNet, VAE and bigG alone (under conditioner.embedders.0)."""
    state = _common(TINY_REFINER, seed)
    bigg = keymap.text_encoder_to_open_clip(_tower(TINY_REFINER_G, seed + 3))
    state.update({keymap.REFINER_CLIP_G_PREFIX + k: v for k, v in bigg.items()})
    return _save(path, state, dtype)


def write_tiny_sd2(path: Path, seed: int = 0, v_prediction: bool = True) -> Path:
    """An SD 2.x file (OpenCLIP ViT-H layout under cond_stage_model.model.), with the .yaml beside it that says
    v-prediction, as the 768-v model ships (A1111 and Atelier read it)."""
    state = _common(TINY_SD2, seed)
    tower = keymap.text_encoder_to_open_clip(_tower(TINY_H, seed + 2))
    state.update({keymap.SD2_TEXT_PREFIX + k: v for k, v in tower.items()})
    _save(path, state, torch.float32)
    if v_prediction:
        path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n", encoding="utf-8")
    return path
