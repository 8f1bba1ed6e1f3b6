"""Resampling for the upscale nodes: images and latents to a new size, and bislerp for latents.

Pure tensor functions on (B, C, H, W), shared by the latent and the image upscale nodes. "bislerp" resamples
bilinearly but interpolates each pixel's channel vector by slerp (spherical interpolation), which keeps a
latent's norm where a plain blend of two unrelated latent vectors would shrink it towards zero.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.imaging import uint8_to_unit, unit_to_uint8

UPSCALE_LATENT = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
UPSCALE_IMAGE = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP = ["disabled", "center"]

# The tooltips of the upscale nodes' `upscale_method` and `crop` combos, one text for every node that has them.
_METHODS = (
    "How each new pixel is computed: nearest-exact copies the closest one, bilinear and bicubic blend 4 and 16 "
    "neighbours, area averages the pixels it covers (best for shrinking)"
)
LATENT_METHOD_TOOLTIP = _METHODS + ", bislerp blends channel vectors by slerp, so their length does not shrink."
IMAGE_METHOD_TOOLTIP = _METHODS + ", lanczos filters with a windowed sinc (the sharpest)."
CROP_TOOLTIP = "disabled stretches to the new aspect ratio; center first cuts equal strips off two sides to reach it."


def target_size(h: int, w: int, width: int, height: int) -> tuple[int, int]:
    """(height, width) that `resize` makes of an h x w picture: a width or height of 0 keeps the aspect ratio,
    both 0 keep the size."""
    if width == 0 and height == 0:
        return h, w
    if width == 0:
        width = max(1, round(w * height / h))
    if height == 0:
        height = max(1, round(h * width / w))
    return height, width


def resize(x: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, height, width); width or height 0 keeps the aspect ratio; crop "center" fills.

    "lanczos" goes through 8-bit PIL images, so it takes values in [0, 1] (images) only."""
    h, w = x.shape[-2:]
    if width == 0 and height == 0:
        return x
    height, width = target_size(h, w, width, height)
    if crop == "center":
        old, new = w / h, width / height
        if old > new:
            cut = round(w - w * new / old) // 2
            x = x[..., :, cut : w - cut]
        elif old < new:
            cut = round(h - h * old / new) // 2
            x = x[..., cut : h - cut, :]
    if method == "lanczos":
        pils = [Image.fromarray(unit_to_uint8(c.permute(1, 2, 0)).numpy()) for c in x]
        out = [torch.from_numpy(np.array(p.resize((width, height), Image.Resampling.LANCZOS))) for p in pils]
        return uint8_to_unit(torch.stack(out)).permute(0, 3, 1, 2)
    if method == "bislerp":
        return bislerp(x, width, height)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}[method]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=(height, width), mode=mode, **kwargs)


def resize_image(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """IMAGE (B, H, W, 3) -> IMAGE (B, height, width, 3), clamped to [0, 1], see `resize`."""
    return resize(image.permute(0, 3, 1, 2), width, height, method, crop).permute(0, 2, 3, 1).clamp(0, 1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1): keeps the latent's norm, unlike a plain lerp.

    The direction turns from a's to b's along the great circle (angle omega between them), the length goes
    linearly from |a| to |b|; nearly parallel vectors (sin omega ~ 0) lerp their unit vectors instead."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    dot = (ua * ub).sum(dim=1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(dot)
    so = torch.sin(omega).clamp_min(1e-8)
    direction = torch.sin((1 - t) * omega) / so * ua + torch.sin(t * omega) / so * ub
    direction = torch.where(dot > 1 - 1e-5, (1 - t) * ua + t * ub, direction)
    return direction * ((1 - t) * na + t * nb)


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resampling with slerp instead of lerp, along rows then columns (ComfyUI's "bislerp" idea).

    Output pixel i samples the input at (i + 0.5) * n / size - 0.5 (pixel centres, as align_corners=False),
    clamped to the edges, between its two neighbours lo and hi."""

    def along(v: torch.Tensor, size: int, dim: int) -> torch.Tensor:
        n = v.shape[dim]
        pos = (torch.arange(size, dtype=torch.float32) + 0.5) * n / size - 0.5
        pos = pos.clamp(0, n - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        t = (pos - lo).view(*([1] * dim), size, *([1] * (v.ndim - dim - 1)))
        return slerp(v.index_select(dim, lo), v.index_select(dim, hi), t)

    return along(along(x.float(), height, 2), width, 3)
