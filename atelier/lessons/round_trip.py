"""What the VAE keeps of an image: encode it to a latent, decode it back, and measure what was lost.

The encoder halves the image's side three times and keeps 4 channels: 4 numbers per 8x8 block of pixels where the
image has 3 x 64, 48 times fewer numbers (Rombach et al. 2022, f = 8). The latent is the posterior's mean, so the
round trip is deterministic; the loss is measured on the 8-bit pixels, as PSNR = 10 log10(255^2 / MSE).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageOps
from torch import Tensor

from atelier.imaging import bchw_signed_to_pil, pil_to_bchw_signed
from atelier.models.vae import VAE
from atelier.pipeline import decode, encode

FACTOR = 8  # pixels per latent pixel, along each side


@dataclasses.dataclass(frozen=True)
class RoundTrip:
    original: Image.Image  # the input as encoded: RGB, sides multiples of 8
    reconstruction: Image.Image  # decoded from `latent`, the same size
    latent: Tensor  # (4, H/8, W/8), RAW VAE units
    mean_abs_error: float  # mean |reconstruction - original| over the 8-bit RGB values
    psnr_db: float  # inf when the two are identical

    @property
    def pixel_values(self) -> int:
        return 3 * self.original.width * self.original.height

    @property
    def latent_values(self) -> int:
        return self.latent.numel()

    @property
    def ratio_values(self) -> float:
        """How many times fewer numbers the latent holds (48 for SD's VAE)."""
        return self.pixel_values / self.latent_values

    @property
    def ratio_bytes_fp16(self) -> float:
        """The same in bytes, 8-bit pixels against 16-bit latent numbers (24 for SD's VAE)."""
        return self.pixel_values / (2 * self.latent_values)


def fit_for_vae(image: Image.Image, max_side: int) -> Image.Image:
    """`image` in RGB, shrunk so its longer side is at most `max_side`, then cropped to multiples of 8 (at least 8)."""
    scale = min(1.0, max_side / max(image.size))
    width = max(FACTOR, int(image.width * scale) // FACTOR * FACTOR)
    height = max(FACTOR, int(image.height * scale) // FACTOR * FACTOR)
    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)


def round_trip(vae: VAE, image: Image.Image, max_side: int = 512) -> RoundTrip:
    """Encode `image` (fitted by `fit_for_vae`) to its latent, decode it back, and compare the two."""
    original = fit_for_vae(image, max_side)
    latent = encode(vae, pil_to_bchw_signed(original))  # (1, 4, H/8, W/8), RAW
    reconstruction = bchw_signed_to_pil(decode(vae, latent))[0]  # (1, 3, H, W) in [-1, 1] -> 8-bit RGB
    error = np.asarray(reconstruction, dtype=np.float64) - np.asarray(original, dtype=np.float64)  # (H, W, 3)
    mse = float((error**2).mean())
    psnr = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
    return RoundTrip(original, reconstruction, latent[0], float(np.abs(error).mean()), psnr)
