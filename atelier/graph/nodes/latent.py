"""Latents: empty ones for txt2img, batches, upscaling, and the VAE between latents and images."""

from __future__ import annotations

from typing import Any

import torch

from atelier.errors import InputError
from atelier.graph.kit import MAX_RESOLUTION, InterruptFlag, Node, out_of_range, target_size_inputs, vae_pixels
from atelier.graph.resize import CROP, CROP_TOOLTIP, LATENT_METHOD_TOOLTIP, UPSCALE_LATENT, resize, target_size
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.imaging import bchw_signed_to_bhwc_unit
from atelier.limits import check_image_batch
from atelier.pipeline import decode, encode


class EmptyLatentImage(Node):
    SCHEMA = NodeSchema(
        name="EmptyLatentImage",
        display_name="Empty Latent Image",
        category="latent",
        description="A batch of all-zero latents: txt2img starts here and the sampler adds all the noise.",
        inputs=[
            Input("width", "INT", default=512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels."),
            Input("height", "INT", default=512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels."),
            Input("batch_size", "INT", default=1, min=1, max=4096, tooltip="Images made at once."),
        ],
        outputs=[Output("LATENT", tooltip="Zeros of shape (batch, 4, height/8, width/8).")],
    )

    def run(self, ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> tuple:
        check_image_batch(batch_size, height, width)  # sizes that came through a link were not validated
        return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)

    @classmethod
    def validate_inputs(cls, width: int | None, height: int | None, batch_size: int | None = 1) -> bool | str:
        """Refuse a batch too large to make (limits.py) before the prompt is queued."""
        problem = out_of_range(cls.SCHEMA, width=width, height=height, batch_size=batch_size)
        if problem is None and None not in (width, height, batch_size):
            try:
                check_image_batch(batch_size, height, width)
            except InputError as error:
                problem = str(error)
        return problem or True


class RepeatLatentBatch(Node):
    SCHEMA = NodeSchema(
        name="RepeatLatentBatch",
        display_name="Repeat Latent Batch",
        category="latent/batch",
        description="Repeats a latent batch end to end; each copy gets its own noise, so one image becomes variations.",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent batch to repeat."),
            Input("amount", "INT", default=1, min=1, max=64, tooltip="How many copies of the batch."),
        ],
        outputs=[Output("LATENT", tooltip="The batch repeated amount times.")],
    )

    def run(self, ctx: NodeContext, samples: dict, amount: int) -> tuple:
        b, _, h, w = samples["samples"].shape
        check_image_batch(b * amount, h * 8, w * 8)
        out = dict(samples)
        out["samples"] = samples["samples"].repeat(amount, 1, 1, 1)
        if "noise_mask" in samples and samples["noise_mask"].shape[0] > 1:
            out["noise_mask"] = samples["noise_mask"].repeat(amount, 1, 1, 1)
        if "batch_index" in samples:
            n, top = len(samples["batch_index"]), max(samples["batch_index"]) + 1
            out["batch_index"] = [i + top * k for k in range(amount) for i in samples["batch_index"][:n]]
        return (out,)


class LatentUpscale(Node):
    SCHEMA = NodeSchema(
        name="LatentUpscale",
        display_name="Upscale Latent",
        category="latent",
        description="Resizes a latent to a size in pixels (1/8 of it in latent pixels), for a second pass at a "
        "higher resolution (hires fix). Drops the noise mask.",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to resize."),
            Input("upscale_method", "COMBO", options=UPSCALE_LATENT, tooltip=LATENT_METHOD_TOOLTIP),
            *target_size_inputs(step=8),
            Input("crop", "COMBO", options=CROP, tooltip=CROP_TOOLTIP),
        ],
        outputs=[Output("LATENT", tooltip="The resized latent, (batch, 4, height/8, width/8).")],
    )

    def run(self, ctx: NodeContext, samples: dict, upscale_method: str, width: int, height: int, crop: str) -> tuple:
        b, _, h, w = samples["samples"].shape
        check_image_batch(b, *(8 * side for side in target_size(h, w, width // 8, height // 8)))
        out = dict(samples)
        out["samples"] = resize(samples["samples"], width // 8, height // 8, upscale_method, crop)
        out.pop("noise_mask", None)
        return (out,)


class LatentUpscaleBy(Node):
    SCHEMA = NodeSchema(
        name="LatentUpscaleBy",
        display_name="Upscale Latent By",
        category="latent",
        description="Resizes a latent by a factor, for a second pass at a higher resolution (hires fix). Drops the "
        "noise mask.",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to resize."),
            Input("upscale_method", "COMBO", options=UPSCALE_LATENT, tooltip=LATENT_METHOD_TOOLTIP),
            Input(
                "scale_by",
                "FLOAT",
                default=1.5,
                min=0.01,
                max=8.0,
                step=0.01,
                tooltip="The factor on width and height, each rounded to whole latent pixels.",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The resized latent.")],
    )

    def run(self, ctx: NodeContext, samples: dict, upscale_method: str, scale_by: float) -> tuple:
        b, _, h, w = samples["samples"].shape
        check_image_batch(b, round(h * scale_by) * 8, round(w * scale_by) * 8)
        out = dict(samples)
        out["samples"] = resize(
            samples["samples"], round(w * scale_by), round(h * scale_by), upscale_method, "disabled"
        )
        out.pop("noise_mask", None)
        return (out,)


class VAEDecode(Node):
    SCHEMA = NodeSchema(
        name="VAEDecode",
        display_name="VAE Decode",
        category="latent",
        description="Decodes latents into images with the VAE decoder (8x larger).",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to be decoded."),
            Input("vae", "VAE", tooltip="The VAE model used for decoding the latent."),
        ],
        outputs=[Output("IMAGE", tooltip="The decoded image.")],
    )

    def run(self, ctx: NodeContext, samples: dict, vae: Any) -> tuple:
        return (bchw_signed_to_bhwc_unit(decode(vae, samples["samples"], interrupt=InterruptFlag(ctx))),)


class VAEEncode(Node):
    SCHEMA = NodeSchema(
        name="VAEEncode",
        display_name="VAE Encode",
        category="latent",
        description="Encodes images into latents with the VAE encoder (8x smaller per side): img2img starts here.",
        inputs=[
            Input("pixels", "IMAGE", tooltip="The images to encode; cropped to multiples of 8, alpha dropped."),
            Input("vae", "VAE", tooltip="The VAE model used for encoding the image."),
        ],
        outputs=[Output("LATENT", tooltip="The posterior's mean, (batch, 4, height/8, width/8).")],
    )

    def run(self, ctx: NodeContext, pixels: torch.Tensor, vae: Any) -> tuple:
        return ({"samples": encode(vae, vae_pixels(pixels), interrupt=InterruptFlag(ctx))},)
