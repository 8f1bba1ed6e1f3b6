"""The denoising UNet of Stable Diffusion 1.x, 2.x and SDXL (one module; `UNetConfig` says which).

Given a noisy latent x_t, its timestep t and the prompt's text features, the UNet predicts the noise in x_t
(eps, Ho et al. 2020, "Denoising Diffusion Probabilistic Models") or the velocity v (Salimans & Ho 2022); the
sampling code turns either into a denoised latent. The shape is the UNet of Ronneberger et al. 2015 ("U-Net:
Convolutional Networks for Biomedical Image Segmentation"): a down path that halves the resolution level by
level, a middle, and an up path that doubles it again while concatenating the down path's feature maps (skip
connections). Latent diffusion (Rombach et al. 2022) adds timestep-conditioned ResNet blocks and, at some
levels, spatial transformers whose cross-attention reads the text (see attention.py). SDXL (Podell et al. 2023)
keeps the same blocks, with more transformer blocks per level, and adds one more input: a vector y made of the
pooled text embedding and embeddings of the image's sizes (`sdxl_vector`), added to the time embedding.

Module and parameter names match diffusers' UNet2DConditionModel, so its state_dict loads without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atelier.errors import AtelierError, InputError
from atelier.models.attention import SpatialTransformer
from atelier.models.config import UNetConfig

# --------------------------------------------------------------------------------------------------------------
# Timestep embedding
# --------------------------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the timestep (Vaswani et al. 2017 positions; Ho et al. 2020 use them for t).

    t: (B,) float timesteps (fractional ones are fine) -> (B, dim) as [cos(t*f_0..f_{d/2-1}), sin(...)], with
    frequencies f_i = max_period^(-i / (dim/2)) from 1 down to ~1/max_period. SD1.x puts cos first.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, dim)


class TimestepMLP(nn.Module):
    """Two linear layers with a SiLU between: the sinusoidal features -> the time embedding every block reads."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def sdxl_vector(pooled: torch.Tensor, numbers: torch.Tensor, size_embed_dim: int = 256) -> torch.Tensor:
    """SDXL's conditioning vector y: the pooled text embedding, then each size number's sinusoidal embedding.

    Podell et al. 2023 (section 2.2, "micro-conditioning") condition on the image's original size, the crop's top-left
    corner and the target size, each number embedded like a timestep: pooled (B, P) and numbers (B, K) =
    [orig_h, orig_w, crop_top, crop_left, target_h, target_w] (base, K = 6) or [orig_h, orig_w, crop_top,
    crop_left, aesthetic_score] (refiner, K = 5) -> (B, P + K * size_embed_dim): 1280 + 6*256 = 2816 for the base.
    """
    B, K = numbers.shape
    sizes = timestep_embedding(numbers.reshape(-1), size_embed_dim).reshape(B, K * size_embed_dim)  # (B, K*256)
    return torch.cat([pooled, sizes.to(pooled.dtype)], dim=-1)


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """A ResNet block (He et al. 2016) that also hears the timestep: norm, SiLU, conv, + time, norm, SiLU, conv.

    The time embedding is projected to one bias per channel and added between the two convolutions; a 1x1 conv
    matches the channels of the residual when they change.
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, h, w)
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # (B or 1, C_out) broadcast over pixels
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv: (B, C, h, w) -> (B, C, ceil(h/2), ceil(w/2))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to `size` (twice the resolution, or the skip's odd size), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


def _transformer(cfg: UNetConfig, channels: int, depth: int) -> SpatialTransformer:
    """The spatial transformer of a level `channels` wide with `depth` blocks, as the config shapes it."""
    return SpatialTransformer(
        channels, cfg.heads_at(channels), cfg.context_dim, depth, cfg.norm_groups, linear=cfg.linear_projection
    )


class DownBlock(nn.Module):
    """One level of the down path: `layers` ResBlocks (each followed by a transformer if `attention`), then a
    downsampler unless this is the last level. Every intermediate result is kept as a skip for the up path."""

    def __init__(
        self, cfg: UNetConfig, in_channels: int, out_channels: int, attention: bool, downsample: bool, depth: int = 1
    ):
        super().__init__()
        t, g, e = cfg.time_embed_dim, cfg.norm_groups, cfg.norm_eps
        self.resnets = nn.ModuleList(
            [
                ResBlock(in_channels if j == 0 else out_channels, out_channels, t, g, e)
                for j in range(cfg.layers_per_block)
            ]
        )
        self.attentions = nn.ModuleList(
            [_transformer(cfg, out_channels, depth) for _ in range(cfg.layers_per_block if attention else 0)]
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)] if downsample else [])

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[j](x, context)
            skips.append(x)
        for downsampler in self.downsamplers:
            x = downsampler(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """The bottom of the U, at the lowest resolution: ResBlock, transformer, ResBlock."""

    def __init__(self, cfg: UNetConfig, channels: int):
        super().__init__()
        t, g, e = cfg.time_embed_dim, cfg.norm_groups, cfg.norm_eps
        self.resnets = nn.ModuleList([ResBlock(channels, channels, t, g, e), ResBlock(channels, channels, t, g, e)])
        self.attentions = nn.ModuleList([_transformer(cfg, channels, cfg.mid_depth)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class UpBlock(nn.Module):
    """One level of the up path: `layers + 1` ResBlocks, each first concatenating one skip along the channels
    (and followed by a transformer if `attention`), then an upsampler unless this is the last level.

    skip_channels[j] is the channel count of the j-th skip this block consumes (the last stored is used first).
    """

    def __init__(
        self,
        cfg: UNetConfig,
        in_channels: int,
        out_channels: int,
        skip_channels: list[int],
        attention: bool,
        upsample: bool,
        depth: int = 1,
    ):
        super().__init__()
        t, g, e = cfg.time_embed_dim, cfg.norm_groups, cfg.norm_eps
        self.resnets = nn.ModuleList(
            [
                ResBlock((in_channels if j == 0 else out_channels) + skip, out_channels, t, g, e)
                for j, skip in enumerate(skip_channels)
            ]
        )
        self.attentions = nn.ModuleList(
            [_transformer(cfg, out_channels, depth) for _ in range(len(skip_channels) if attention else 0)]
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        context: torch.Tensor,
        upsample_size: tuple[int, int] | None,
    ) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)  # (B, C + C_skip, h, w)
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[j](x, context)
        for upsampler in self.upsamplers:
            x = upsampler(x, upsample_size)
        return x


# --------------------------------------------------------------------------------------------------------------
# The UNet
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ControlResiduals:
    """What a ControlNet (controlnet.py) adds to the UNet: one map per skip of the down path, in storage order
    (conv_in's output first; SD1.x: 12 maps), and one for the middle block's output. diffusers calls them
    down_block_additional_residuals and mid_block_additional_residual."""

    down: list[torch.Tensor]
    mid: torch.Tensor

    def __add__(self, other: ControlResiduals) -> ControlResiduals:  # stacked ControlNets sum their residuals
        return ControlResiduals([a + b for a, b in zip(self.down, other.down, strict=True)], self.mid + other.mid)


class UNet(nn.Module):
    """The SD1.x UNet: forward(x (B, C_in, h, w), timestep (B,) or scalar, context (B, T, D)) -> (B, C_out, h, w).

    The output is the raw network prediction, noise or velocity as `config.prediction` says; the sampling
    wrappers turn it into a denoised latent.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        cfg = self.config = config
        channels, levels = list(cfg.block_channels), len(cfg.block_channels)
        if len(cfg.cross_attention_levels) != levels:
            raise AtelierError(
                f"The UNet config has {len(cfg.cross_attention_levels)} cross_attention_levels for {levels} "
                "block_channels; expected one entry per level."
            )

        self.time_embedding = TimestepMLP(channels[0], cfg.time_embed_dim)
        # SDXL: the vector y (pooled text + size embeddings) gets an MLP of its own, added to the time embedding.
        self.add_embedding = (
            TimestepMLP(cfg.adm_in_channels, cfg.time_embed_dim) if cfg.adm_in_channels is not None else None
        )
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], kernel_size=3, padding=1)

        # Down path. Track the channels of every skip in storage order: conv_in's output, then each ResBlock's
        # and each downsampler's.
        skip_channels = [channels[0]]
        self.down_blocks = nn.ModuleList()
        for i, out_ch in enumerate(channels):
            in_ch = channels[max(i - 1, 0)]
            last = i == levels - 1
            attention, depth = cfg.cross_attention_levels[i], cfg.depth_at(i)
            self.down_blocks.append(DownBlock(cfg, in_ch, out_ch, attention, not last, depth))
            skip_channels += [out_ch] * (cfg.layers_per_block + (0 if last else 1))

        self.mid_block = MidBlock(cfg, channels[-1])

        # Up path: the levels in reverse, each consuming layers_per_block + 1 skips (the latest stored first).
        self.up_blocks = nn.ModuleList()
        for i, out_ch in enumerate(reversed(channels)):
            level = levels - 1 - i
            in_ch = channels[min(level + 1, levels - 1)]  # what comes up from the level below
            consumed = [skip_channels.pop() for _ in range(cfg.layers_per_block + 1)]
            attention = cfg.cross_attention_levels[level]
            depth = cfg.depth_at(level)
            self.up_blocks.append(UpBlock(cfg, in_ch, out_ch, consumed, attention, upsample=level > 0, depth=depth))

        self.conv_norm_out = nn.GroupNorm(cfg.norm_groups, channels[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], cfg.out_channels, kernel_size=3, padding=1)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        control: ControlResiduals | None = None,
    ) -> torch.Tensor:
        """x (B, C_in, h, w), timestep scalar or (B,), context (B, T, context_dim), and for SDXL y (B or 1,
        adm_in_channels), the vector `sdxl_vector` builds -> the prediction (B, C_out, h, w). `control`: the
        ControlNets' residuals (models/controlnet.py), added to the skips and the middle block's output."""
        B = x.shape[0]
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim != 0 and t.shape != (B,):
            raise InputError(
                f"The timestep has shape {tuple(t.shape)}; expected a scalar or one value per image ({B})."
            )
        if context.ndim != 3 or context.shape[-1] != self.config.context_dim:
            raise InputError(
                f"The text conditioning has shape {tuple(context.shape)}; expected (batch, tokens, "
                f"{self.config.context_dim}) from a matching text encoder."
            )
        adm = self.config.adm_in_channels
        if (y is None) != (adm is None) or (y is not None and (y.ndim != 2 or y.shape[-1] != adm)):
            got = "none" if y is None else f"shape {tuple(y.shape)}"
            want = "none (this UNet has no size conditioning)" if adm is None else f"(batch, {adm})"
            raise InputError(f"The pooled/size conditioning vector y has {got}; expected {want}.")

        # --- Time embedding: t -> sinusoidal features (B, C0) -> MLP -> (B, 4*C0), read by every ResBlock.
        # A scalar t (one noise level for the whole batch, as in sampling) is embedded once, (1, 4*C0), and the
        # ResBlocks broadcast it: less work, and an image's numbers no longer depend on how many images share its
        # batch (a product of B rows by a matrix rounds each row differently for different B; atelier/batching.py
        # relies on a batched image being computed exactly as alone).
        temb = timestep_embedding(t.reshape(-1), self.config.block_channels[0]).to(x.dtype)
        temb = self.time_embedding(temb)  # (B or 1, 1280) for SD1.x
        if self.add_embedding is not None:
            # SDXL: what the image is (pooled text) and how it was framed (sizes, crop) join the noise level.
            temb = temb + self.add_embedding(y.to(x.dtype))  # (B, 1280)

        # --- Down path: each level refines, then halves the resolution; every intermediate map is kept.
        x = self.conv_in(x)  # (B, 320, h, w)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context)  # SD1.x at 64x64: 320@32, 640@16, 1280@8, 1280@8
            skips += block_skips

        # --- Middle: the coarsest features (SD1.x: (B, 1280, h/8, w/8)) mix globally through attention.
        x = self.mid_block(x, temb, context)

        # --- ControlNet (Zhang et al. 2023): its residuals are added to every skip and to the middle's output.
        if control is not None:
            if len(control.down) != len(skips):
                raise InputError(f"The ControlNet gives {len(control.down)} residuals for {len(skips)} skips of the "
                                 "UNet; it was made for another model shape.")  # fmt: skip
            skips = [skip + residual.to(skip.dtype) for skip, residual in zip(skips, control.down, strict=True)]
            x = x + control.mid.to(x.dtype)

        # --- Up path: each level concatenates its skips back in, then doubles the resolution. The upsampler
        # resizes to the size of the next skip it will meet, which is 2x except for odd sizes (9 -> 5 -> 9).
        for block in self.up_blocks:
            consumed = len(block.resnets)
            block_skips, skips = skips[-consumed:], skips[:-consumed]
            upsample_size = tuple(skips[-1].shape[-2:]) if skips else None
            x = block(x, block_skips, temb, context, upsample_size)  # back to (B, 320, h, w) at the end

        # --- Output: normalise, SiLU, and a conv down to the latent channels: the eps (or v) prediction.
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 4, h, w)
