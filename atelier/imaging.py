"""Image tensors: the one place that converts between the layouts and ranges Atelier uses.

Every name says the layout and the range on each side, `<layout>_<range>_to_<layout>_<range>`:

    layout  bchw    (B, C, H, W)  torch's order: the VAE's input and output
            bhwc    (B, H, W, C)  ComfyUI's IMAGE; PIL and numpy arrays, with a batch dimension
            hw      (H, W)        one channel: a mask or a PIL band
            pil     PIL images (8-bit RGB, or "L" for one channel)
    range   signed  float in [-1, 1]  what the VAE encodes and decodes
            unit    float in [0, 1]   ComfyUI's IMAGE and MASK
            uint8   integers 0..255   files, PIL, numpy

The range-only functions (`uint8_to_signed`, `signed_to_unit`, ...) keep whatever layout they are given, so a
(B, C, H, W) batch and one (H, W, 3) picture convert alike. Float results are float32. Going to uint8 clamps to
the range first and rounds to the nearest 8-bit value (ties to even), so `uint8 -> signed -> uint8` and
`uint8 -> unit -> uint8` give back the same integers.

    images = bchw_signed_to_pil(decode(vae, latent))              # the VAE's output, as files are written
    latent = encode(vae, pil_to_bchw_signed(picture))              # img2img: a picture for the VAE encoder
    pixels = bhwc_unit_to_bchw_signed(image)                       # VAEEncode: ComfyUI IMAGE -> VAE input
    pixels = bhwc_uint8_to_bchw_signed(rendered)                   # the procedural world's renders -> VAE input
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

# ---- ranges (any layout) ----------------------------------------------------------------------------------------


def uint8_to_signed(x: Tensor) -> Tensor:
    """0..255 -> [-1, 1]: v / 127.5 - 1."""
    return x.float() / 127.5 - 1.0


def signed_to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] -> uint8 0..255: clamped, then (v + 1) * 127.5 rounded."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def uint8_to_unit(x: Tensor) -> Tensor:
    """0..255 -> [0, 1]: v / 255."""
    return x.float() / 255.0


def unit_to_uint8(x: Tensor) -> Tensor:
    """[0, 1] -> uint8 0..255: clamped, then v * 255 rounded."""
    return (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8)


def unit_to_signed(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]: 2v - 1."""
    return x.float() * 2.0 - 1.0


def signed_to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]: (v + 1) / 2, clamped (a decoder's output may overshoot a little)."""
    return ((x.float() + 1.0) / 2.0).clamp(0, 1)


# ---- layout and range: ComfyUI's IMAGE <-> the VAE ----------------------------------------------------------------


def bhwc_unit_to_bchw_signed(images: Tensor) -> Tensor:
    """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> VAE input (B, C, H, W) in [-1, 1]."""
    return unit_to_signed(images.permute(0, 3, 1, 2))


def bchw_signed_to_bhwc_unit(images: Tensor) -> Tensor:
    """VAE output (B, C, H, W) in [-1, 1] -> ComfyUI IMAGE (B, H, W, C) in [0, 1], on the CPU."""
    return signed_to_unit(images).permute(0, 2, 3, 1).cpu()


def bhwc_uint8_to_bchw_signed(images: Tensor | np.ndarray) -> Tensor:
    """Rendered images (B, H, W, C) uint8, a tensor or a numpy array (shared, not copied) -> VAE and classifier input
    (B, C, H, W) in [-1, 1]. The channels are moved before the conversion, so the result keeps channels-last
    strides, as the world's training and evaluation code always had them."""
    return uint8_to_signed(torch.as_tensor(images).permute(0, 3, 1, 2))


# ---- PIL ----------------------------------------------------------------------------------------------------------


def pil_to_bhwc_uint8(image: Image.Image) -> Tensor:
    """A PIL image -> (1, H, W, 3) uint8, converted to RGB (alpha dropped, greys repeated)."""
    return torch.from_numpy(np.array(image.convert("RGB")))[None]


def bhwc_uint8_to_pil(images: Tensor) -> list[Image.Image]:
    """(B, H, W, C) uint8 -> B RGB PIL images; channels past the third (alpha) are dropped."""
    return [Image.fromarray(a[..., :3]) for a in images.cpu().numpy()]


def pil_to_hw_unit(image: Image.Image) -> Tensor:
    """A one-channel PIL image (a mask, a band from `getchannel`) -> (H, W) in [0, 1]; others are made "L"."""
    return uint8_to_unit(torch.from_numpy(np.array(image.convert("L"))))


def pil_to_bhwc_unit(image: Image.Image) -> Tensor:
    """A PIL image -> ComfyUI IMAGE (1, H, W, 3) in [0, 1] (what LoadImage gives)."""
    return uint8_to_unit(pil_to_bhwc_uint8(image))


def bhwc_unit_to_pil(images: Tensor) -> list[Image.Image]:
    """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> B RGB PIL images (what SaveImage writes)."""
    return bhwc_uint8_to_pil(unit_to_uint8(images))


def pil_to_bchw_signed(image: Image.Image) -> Tensor:
    """A PIL image -> VAE input (1, 3, H, W) in [-1, 1], contiguous."""
    return uint8_to_signed(pil_to_bhwc_uint8(image)).permute(0, 3, 1, 2).contiguous()


def bchw_signed_to_pil(images: Tensor) -> list[Image.Image]:
    """VAE output (B, 3, H, W) in [-1, 1] -> B RGB PIL images."""
    return bhwc_uint8_to_pil(signed_to_uint8(images).permute(0, 2, 3, 1))
