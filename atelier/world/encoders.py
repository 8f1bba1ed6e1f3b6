"""Small image networks for the procedural world: the CLIP-style image encoder and the attribute classifier.

Both share one backbone, a small ResNet (He et al. 2016) that turns a 128x128 scene into a feature vector:
- `ImageEncoder` projects it into the text encoder's embedding space; trained contrastively against the text
  encoder (CLIP, Radford et al. 2021), it places images and captions on one map (the lab's concept map).
- `AttributeClassifier` reads, from the same kind of features, what is in each cell of the 3x3 grid (object kind,
  colour, size) and the background (the second world's judge also the time of day and the weather); `atelier eval`
  uses it to score generated images.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    channels: tuple[int, ...] = (32, 64, 128, 256)  # one stage per entry, each halves the resolution
    norm_groups: int = 8


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + self.skip(x))


class Backbone(nn.Module):
    """(B, 3, 128, 128) in [-1, 1] -> feature map (B, C, 8, 8)."""

    def __init__(self, config: BackboneConfig = BackboneConfig()):
        super().__init__()
        c0 = config.channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, 1, 1), nn.GroupNorm(config.norm_groups, c0), nn.SiLU())
        stages, c_prev = [], c0
        for c in config.channels:
            stages.append(_ResBlock(c_prev, c, 2, config.norm_groups))
            c_prev = c
        self.stages = nn.Sequential(*stages)
        self.out_channels = c_prev

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(images))


class ImageEncoder(nn.Module):
    """Backbone + attention-free pooling + linear projection into the shared text-image space."""

    def __init__(self, embed_dim: int, config: BackboneConfig = BackboneConfig()):
        super().__init__()
        self.backbone = Backbone(config)
        c = self.backbone.out_channels
        # Keep the spatial layout (where things are matters in this world): flatten the 8x8 map after a 1x1
        # reduction instead of averaging it away.
        self.reduce = nn.Conv2d(c, 32, 1)
        self.proj = nn.Linear(32 * 8 * 8, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.backbone(images)  # (B, C, 8, 8) for 128x128 input
        h = F.adaptive_avg_pool2d(self.reduce(h), 8).flatten(1)  # (B, 32*64)
        return self.proj(h)  # (B, embed_dim), not normalised


class AttributeClassifier(nn.Module):
    """Per grid cell: object kind (or empty), colour, size; per image: background, and time of day and weather when
    `n_times` and `n_weathers` are not 0 (the second world's judge; the first world's has no such heads, so its
    weights keep their keys).

    The 8x8 feature map is pooled to the 3x3 grid of the world; each cell's features go through small heads.
    """

    def __init__(
        self,
        n_kinds: int,
        n_colours: int,
        n_sizes: int,
        n_backgrounds: int,
        config: BackboneConfig = BackboneConfig(),
        n_times: int = 0,
        n_weathers: int = 0,
    ):
        super().__init__()
        self.backbone = Backbone(config)
        c = self.backbone.out_channels
        self.cell = nn.Sequential(nn.Linear(c + c, 256), nn.SiLU())
        self.kind = nn.Linear(256, n_kinds + 1)  # +1: the cell is empty
        self.colour = nn.Linear(256, n_colours)
        self.size = nn.Linear(256, n_sizes)
        self.background = nn.Linear(c, n_backgrounds)
        # Image-level like the background: the sky's tint and the rain or snow cover the whole picture.
        self.time = nn.Linear(c, n_times) if n_times else None
        self.weather = nn.Linear(c, n_weathers) if n_weathers else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.backbone(images)  # (B, C, 8, 8)
        pooled = h.mean(dim=(2, 3))  # (B, C): global context (the background, neighbours)
        cells = F.adaptive_avg_pool2d(h, 3).flatten(2).transpose(1, 2)  # (B, 9, C), row-major cells
        g = pooled[:, None, :].expand(-1, 9, -1)
        f = self.cell(torch.cat([cells, g], dim=-1))  # (B, 9, 256)
        out = {
            "kind": self.kind(f),  # (B, 9, n_kinds + 1)
            "colour": self.colour(f),  # (B, 9, n_colours)
            "size": self.size(f),  # (B, 9, n_sizes)
            "background": self.background(pooled),  # (B, n_backgrounds)
        }
        if self.time is not None:
            out["time"] = self.time(pooled)  # (B, n_times)
        if self.weather is not None:
            out["weather"] = self.weather(pooled)  # (B, n_weathers)
        return out
