"""What a latent is: not an image but C numbers (4 for SD) per 8x8 block of pixels, shown channel by channel.

Each channel (h, w) becomes a grey picture, in one of two ways:

    shared symmetric   v -> 0.5 + 0.5 v / m, m the largest |v| over all channels: 0 is mid-grey in every picture,
                       white and black the largest positive and negative values, so channels compare (sign, size)
    per channel        each channel stretched from its own min (black) to its own max (white): the most detail of
                       each, their scales hidden

The lab once drew the VAE round trip's channels a third way, scaled latents (RAW x scaling_factor) clipped to
-3..3, while its latent view used "shared symmetric" and its caption ("grey = 0, white/black = the largest
positive/negative value") described that one for both. "shared symmetric" is kept for both faces: the fixed window
assumed the scaled latent has unit variance, which holds only when a model's scaling factor makes it so, and it
clipped (1-2% of the values of a 128x128 red-disc scene through the embedded VAE lie beyond +-3, its factor 0.4896).
Both mappings are unchanged when the latent is multiplied by a constant, so the pictures are the same in RAW VAE
units and in the UNet's scaled units; the statistics are given in RAW units, those of a LATENT and of the VAE.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from atelier.errors import InputError

NORMALIZE = ("shared symmetric", "per channel")


@dataclasses.dataclass(frozen=True)
class ChannelStats:
    mean: float
    std: float  # population standard deviation (divided by n, not n - 1)
    min: float
    max: float


def channel_stats(latent: Tensor) -> list[ChannelStats]:
    """One latent (C, h, w) -> the mean, standard deviation, min and max of each channel."""
    z = latent.float().cpu()
    return [ChannelStats(float(c.mean()), float(c.std(unbiased=False)), float(c.min()), float(c.max())) for c in z]


def channel_greys(latent: Tensor, normalize: str = "shared symmetric") -> Tensor:
    """One latent (C, h, w) -> C grey pictures (C, h, w) in [0, 1], one value per latent pixel (see above)."""
    z = latent.float().cpu()
    if normalize == "shared symmetric":
        m = z.abs().max().clamp_min(1e-8)
        return 0.5 + 0.5 * z / m
    if normalize == "per channel":
        lo = z.amin(dim=(1, 2), keepdim=True)
        hi = z.amax(dim=(1, 2), keepdim=True)
        return torch.where(hi > lo, (z - lo) / (hi - lo).clamp_min(1e-8), torch.full_like(z, 0.5))
    raise InputError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}.")
