"""Inpainting and outpainting: which part of a latent the sampler may change, and images made ready for it."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from atelier.graph.kit import MAX_RESOLUTION, InterruptFlag, Node, vae_pixels
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import check_image_batch
from atelier.pipeline import encode


class SetLatentNoiseMask(Node):
    SCHEMA = NodeSchema(
        name="SetLatentNoiseMask",
        display_name="Set Latent Noise Mask",
        category="latent/inpaint",
        description="Attaches a mask to a latent: the sampler then changes only where the mask is 1 and keeps the "
        "rest as it is (inpainting with an ordinary model).",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to inpaint, e.g. an encoded image."),
            Input("mask", "MASK", tooltip="1 where the sampler may change the latent, 0 where it is kept."),
        ],
        outputs=[Output("LATENT", tooltip="The same latent, carrying the mask as its noise_mask.")],
    )

    def run(self, ctx: NodeContext, samples: dict, mask: torch.Tensor) -> tuple:
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        return (out,)


class VAEEncodeForInpaint(Node):
    SCHEMA = NodeSchema(
        name="VAEEncodeForInpaint",
        display_name="VAE Encode (for Inpainting)",
        category="latent/inpaint",
        description="Encodes an image for inpainting: the masked region is painted neutral grey before encoding, "
        "so nothing of it survives, and the mask travels with the latent.",
        inputs=[
            Input("pixels", "IMAGE", tooltip="The image to inpaint; cropped to multiples of 8."),
            Input("vae", "VAE", tooltip="The VAE model used for encoding the image."),
            Input("mask", "MASK", tooltip="1 where the image is repainted; resized to the image's size."),
            Input(
                "grow_mask_by",
                "INT",
                default=6,
                min=0,
                max=64,
                step=1,
                tooltip="The side of the square the noise mask is dilated with (it grows by about half of it on "
                "each side), so the seam around the region is repainted too.",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The encoded image with the grown mask as its noise_mask.")],
    )

    def run(self, ctx: NodeContext, pixels: torch.Tensor, vae: Any, mask: torch.Tensor, grow_mask_by: int) -> tuple:
        h, w = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
        m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        m = F.interpolate(m, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")[:, :, :h, :w]
        pixels = pixels[:, :h, :w, :3].clone()
        if grow_mask_by > 0:  # dilate the mask so the seam is repainted too
            kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
            grown = F.conv2d(m.round(), kernel, padding=math.ceil((grow_mask_by - 1) / 2)).clamp(0, 1)[:, :, :h, :w]
        else:
            grown = m.round()
        keep = (1.0 - m.round()).permute(0, 2, 3, 1)  # (B, H, W, 1): 1 where the picture is kept
        pixels = (pixels - 0.5) * keep + 0.5  # the region to repaint becomes neutral grey before encoding
        return ({"samples": encode(vae, vae_pixels(pixels), interrupt=InterruptFlag(ctx)), "noise_mask": grown},)


class ImagePadForOutpaint(Node):
    SCHEMA = NodeSchema(
        name="ImagePadForOutpaint",
        display_name="Pad Image for Outpainting",
        category="image",
        description="Adds grey borders to an image and a mask that covers them, so inpainting can extend the "
        "picture beyond its edges (outpainting).",
        inputs=[
            Input("image", "IMAGE", tooltip="The image to extend."),
            Input("left", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels added on the left."),
            Input("top", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels added on top."),
            Input("right", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels added on the right."),
            Input("bottom", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels added at the bottom."),
            Input(
                "feathering",
                "INT",
                default=40,
                min=0,
                max=MAX_RESOLUTION,
                step=1,
                tooltip="How many pixels inside the old edges the mask fades over, from 1 to 0, so the new borders "
                "blend in (0, or half the image's shorter side or more: a hard edge).",
            ),
        ],
        outputs=[
            Output("IMAGE", tooltip="The image on a larger canvas, the new borders mid-grey."),
            Output("MASK", tooltip="1 on the new borders, fading to 0 inside the old image."),
        ],
    )

    def run(
        self, ctx: NodeContext, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
    ) -> tuple:
        b, h, w, c = image.shape
        check_image_batch(b, h + top + bottom, w + left + right)
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5)
        out[:, top : top + h, left : left + w, :] = image
        mask = torch.ones(h + top + bottom, w + left + right)
        inner = torch.zeros(h, w)
        if feathering > 0 and feathering * 2 < min(h, w):
            ys = torch.arange(h, dtype=torch.float32)[:, None]
            xs = torch.arange(w, dtype=torch.float32)[None, :]
            # distance to each padded side; sides without padding do not fade
            dist = torch.full((h, w), float("inf"))
            for pad, d in ((top, ys), (bottom, h - 1 - ys), (left, xs), (right, w - 1 - xs)):
                if pad:
                    dist = torch.minimum(dist, d.expand(h, w))
            fade = ((feathering - dist) / feathering).clamp(0, 1)
            inner = fade * fade
        mask[top : top + h, left : left + w] = inner
        return out, mask[None]
