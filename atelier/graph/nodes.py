"""The core Stable Diffusion nodes, with ComfyUI's class names, input names, defaults and ranges.

Each node is a thin, readable wrapper around atelier/pipeline.py: the graph is the same engine as the CLI and the
lab. Value types follow ComfyUI so saved workflows run unchanged:

    MODEL         pipeline.DiffusionModel (UNet + schedule + latent scale)
    CLIP          ClipModel (text encoder + tokenizer + which layer to stop at)
    VAE           models.vae.VAE
    CONDITIONING  list[pipeline.Cond]
    LATENT        {"samples": RAW latents (B, 4, h, w), "noise_mask"?: (B, 1, H, W), "batch_index"?: [int]}
    IMAGE         float (B, H, W, 3) in [0, 1]
    MASK          float (B, H, W) in [0, 1]

The node classes need files and models: graph/catalog.py binds them to an environment and registers them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from atelier.graph.kit import (
    KSAMPLER_INPUTS,
    MAX_RESOLUTION,
    SAMPLER_INPUTS,
    SEED_MAX,
    ClipModel,
    Node,
    run_sampler,
    vae_pixels,
)
from atelier.graph.resize import UPSCALE_IMAGE, UPSCALE_LATENT, resize, resize_image
from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema, Output
from atelier.imaging import (
    bchw_signed_to_bhwc_unit,
    bhwc_unit_to_pil,
    pil_to_bhwc_unit,
    pil_to_hw_unit,
)
from atelier.models.library import latent_rgb
from atelier.pipeline import (
    Cond,
    DiffusionModel,
    SamplerSettings,
    decode,
    encode,
    encode_prompt,
    fit_latent_to_rgb,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# Tensor conventions
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------------------


class CheckpointLoaderSimple(Node):
    SCHEMA = NodeSchema(
        name="CheckpointLoaderSimple",
        display_name="Load Checkpoint",
        category="loaders",
        description="Loads a diffusion model checkpoint: the UNet (MODEL), the text encoder (CLIP) and the VAE.",
        inputs=[Input("ckpt_name", "COMBO", options=(), tooltip="The checkpoint to load.")],
        outputs=[
            Output("MODEL", tooltip="The denoising UNet."),
            Output("CLIP", tooltip="The text encoder that turns prompts into conditioning."),
            Output("VAE", tooltip="The autoencoder between images and latents."),
        ],
    )

    def run(self, ctx: NodeContext, ckpt_name: str) -> tuple:
        from atelier.models.checkpoint import load_checkpoint

        path = self.env.checkpoint_path(ckpt_name)
        ckpt = load_checkpoint(path, device=self.env.device, dtype=self.env.dtype)
        if self.env.fast is not False and ckpt.device.type == "cuda":  # imported here: torch.compile costs ~1 s
            from atelier.models.fast import accelerate

            ckpt = accelerate(ckpt, enabled=self.env.fast)
            log.info("%s: fast path on; its first image compiles for a while (--no-fast: readable modules)", ckpt_name)
        stored = latent_rgb(path)
        preview = torch.tensor(stored) if stored is not None else fit_latent_to_rgb(ckpt.vae, size=32)
        model = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor, preview=preview)
        return model, ClipModel(ckpt.text_encoder, ckpt.tokenizer), ckpt.vae


class VAELoader(Node):
    SCHEMA = NodeSchema(
        name="VAELoader",
        display_name="Load VAE",
        category="loaders",
        inputs=[Input("vae_name", "COMBO", options=())],
        outputs=[Output("VAE")],
    )

    def run(self, ctx: NodeContext, vae_name: str) -> tuple:
        from atelier.models.checkpoint import load_vae

        return (load_vae(self.env.models.resolve("vae", vae_name), device=self.env.device, dtype=self.env.dtype),)


# --------------------------------------------------------------------------------------------------------------
# Conditioning
# --------------------------------------------------------------------------------------------------------------


class CLIPTextEncode(Node):
    SCHEMA = NodeSchema(
        name="CLIPTextEncode",
        display_name="CLIP Text Encode (Prompt)",
        category="conditioning",
        description="Encodes a prompt with the text encoder into the conditioning the UNet attends to.",
        inputs=[
            Input("text", "STRING", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
            Input("clip", "CLIP", tooltip="The CLIP model used for encoding the text."),
        ],
        outputs=[Output("CONDITIONING", tooltip="The prompt's token vectors, (1, 77 x chunks, width).")],
    )

    def run(self, ctx: NodeContext, text: str, clip: ClipModel) -> tuple:
        context = encode_prompt(clip.text_encoder, clip.tokenizer, text, clip.clip_skip)
        return ([Cond(context)],)


class CLIPSetLastLayer(Node):
    SCHEMA = NodeSchema(
        name="CLIPSetLastLayer",
        display_name="CLIP Set Last Layer",
        category="conditioning",
        inputs=[
            Input("clip", "CLIP"),
            Input("stop_at_clip_layer", "INT", default=-1, min=-24, max=-1, step=1),
        ],
        outputs=[Output("CLIP")],
    )

    def run(self, ctx: NodeContext, clip: ClipModel, stop_at_clip_layer: int) -> tuple:
        layers = clip.text_encoder.config.layers
        skip = min(-stop_at_clip_layer, layers)  # -1 = the last layer = clip skip 1
        return (dataclasses.replace(clip, clip_skip=skip),)


class ConditioningCombine(Node):
    SCHEMA = NodeSchema(
        name="ConditioningCombine",
        display_name="Conditioning (Combine)",
        category="conditioning",
        inputs=[Input("conditioning_1", "CONDITIONING"), Input("conditioning_2", "CONDITIONING")],
        outputs=[Output("CONDITIONING")],
    )

    def run(self, ctx: NodeContext, conditioning_1: list[Cond], conditioning_2: list[Cond]) -> tuple:
        return (conditioning_1 + conditioning_2,)


class ConditioningSetArea(Node):
    SCHEMA = NodeSchema(
        name="ConditioningSetArea",
        display_name="Conditioning (Set Area)",
        category="conditioning",
        inputs=[
            Input("conditioning", "CONDITIONING"),
            Input("width", "INT", default=64, min=64, max=MAX_RESOLUTION, step=8),
            Input("height", "INT", default=64, min=64, max=MAX_RESOLUTION, step=8),
            Input("x", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8),
            Input("y", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8),
            Input("strength", "FLOAT", default=1.0, min=0.0, max=10.0, step=0.01),
        ],
        outputs=[Output("CONDITIONING")],
    )

    def run(self, ctx: NodeContext, conditioning: list[Cond], width: int, height: int, x: int, y: int,
            strength: float) -> tuple:
        area = (height // 8, width // 8, y // 8, x // 8)
        return ([dataclasses.replace(c, area=area, strength=strength) for c in conditioning],)


# --------------------------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------------------------


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
        return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)


class RepeatLatentBatch(Node):
    SCHEMA = NodeSchema(
        name="RepeatLatentBatch",
        display_name="Repeat Latent Batch",
        category="latent/batch",
        inputs=[Input("samples", "LATENT"), Input("amount", "INT", default=1, min=1, max=64)],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, samples: dict, amount: int) -> tuple:
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
        inputs=[
            Input("samples", "LATENT"),
            Input("upscale_method", "COMBO", options=UPSCALE_LATENT),
            Input("width", "INT", default=512, min=0, max=MAX_RESOLUTION, step=8),
            Input("height", "INT", default=512, min=0, max=MAX_RESOLUTION, step=8),
            Input("crop", "COMBO", options=["disabled", "center"]),
        ],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, samples: dict, upscale_method: str, width: int, height: int, crop: str) -> tuple:
        out = dict(samples)
        out["samples"] = resize(samples["samples"], width // 8, height // 8, upscale_method, crop)
        out.pop("noise_mask", None)
        return (out,)


class LatentUpscaleBy(Node):
    SCHEMA = NodeSchema(
        name="LatentUpscaleBy",
        display_name="Upscale Latent By",
        category="latent",
        inputs=[
            Input("samples", "LATENT"),
            Input("upscale_method", "COMBO", options=UPSCALE_LATENT),
            Input("scale_by", "FLOAT", default=1.5, min=0.01, max=8.0, step=0.01),
        ],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, samples: dict, upscale_method: str, scale_by: float) -> tuple:
        h, w = samples["samples"].shape[-2:]
        out = dict(samples)
        out["samples"] = resize(samples["samples"], round(w * scale_by), round(h * scale_by), upscale_method,
                                 "disabled")
        out.pop("noise_mask", None)
        return (out,)


class SetLatentNoiseMask(Node):
    SCHEMA = NodeSchema(
        name="SetLatentNoiseMask",
        display_name="Set Latent Noise Mask",
        category="latent/inpaint",
        inputs=[Input("samples", "LATENT"), Input("mask", "MASK")],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, samples: dict, mask: torch.Tensor) -> tuple:
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        return (out,)


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------

class KSampler(Node):
    SCHEMA = NodeSchema(
        name="KSampler",
        display_name="KSampler",
        category="sampling",
        description="Denoises a latent step by step, guided by the positive and negative conditioning.",
        inputs=KSAMPLER_INPUTS,
        outputs=[Output("LATENT", tooltip="The denoised latent.")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, seed: int, steps: int, cfg: float, sampler_name: str,
            scheduler: str, positive: list[Cond], negative: list[Cond], latent_image: dict,
            denoise: float = 1.0) -> tuple:
        settings = SamplerSettings(seed, steps, cfg, sampler_name, scheduler, denoise)
        return (run_sampler(ctx, model, latent_image, positive, negative, settings),)


class KSamplerAdvanced(Node):
    SCHEMA = NodeSchema(
        name="KSamplerAdvanced",
        display_name="KSampler (Advanced)",
        category="sampling",
        inputs=[
            Input("model", "MODEL"),
            Input("add_noise", "COMBO", options=["enable", "disable"]),
            Input("noise_seed", "INT", default=0, min=0, max=SEED_MAX, control_after_generate=True),
            *SAMPLER_INPUTS,
            Input("start_at_step", "INT", default=0, min=0, max=10000),
            Input("end_at_step", "INT", default=10000, min=0, max=10000),
            Input("return_with_leftover_noise", "COMBO", options=["disable", "enable"]),
        ],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, add_noise: str, noise_seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, positive: list[Cond], negative: list[Cond], latent_image: dict,
            start_at_step: int, end_at_step: int, return_with_leftover_noise: str) -> tuple:
        settings = SamplerSettings(noise_seed, steps, cfg, sampler_name, scheduler, 1.0)
        out = run_sampler(ctx, model, latent_image, positive, negative, settings,
                           add_noise=add_noise == "enable", start_step=start_at_step, end_step=end_at_step,
                           force_full_denoise=return_with_leftover_noise != "enable")
        return (out,)


# --------------------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------------------


class VAEDecode(Node):
    SCHEMA = NodeSchema(
        name="VAEDecode",
        display_name="VAE Decode",
        category="latent",
        description="Decodes latents into images with the VAE decoder (8x larger).",
        inputs=[Input("samples", "LATENT", tooltip="The latent to be decoded."),
                Input("vae", "VAE", tooltip="The VAE model used for decoding the latent.")],
        outputs=[Output("IMAGE", tooltip="The decoded image.")],
    )

    def run(self, ctx: NodeContext, samples: dict, vae: Any) -> tuple:
        return (bchw_signed_to_bhwc_unit(decode(vae, samples["samples"])),)


class VAEEncode(Node):
    SCHEMA = NodeSchema(
        name="VAEEncode",
        display_name="VAE Encode",
        category="latent",
        inputs=[Input("pixels", "IMAGE"), Input("vae", "VAE")],
        outputs=[Output("LATENT")],
    )

    def run(self, ctx: NodeContext, pixels: torch.Tensor, vae: Any) -> tuple:
        return ({"samples": encode(vae, vae_pixels(pixels))},)


class VAEEncodeForInpaint(Node):
    SCHEMA = NodeSchema(
        name="VAEEncodeForInpaint",
        display_name="VAE Encode (for Inpainting)",
        category="latent/inpaint",
        inputs=[
            Input("pixels", "IMAGE"),
            Input("vae", "VAE"),
            Input("mask", "MASK"),
            Input("grow_mask_by", "INT", default=6, min=0, max=64, step=1),
        ],
        outputs=[Output("LATENT")],
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
        return ({"samples": encode(vae, vae_pixels(pixels)), "noise_mask": grown},)


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class LoadImage(Node):
    SCHEMA = NodeSchema(
        name="LoadImage",
        display_name="Load Image",
        category="image",
        inputs=[Input("image", "COMBO", options=(), image_upload=True)],
        outputs=[Output("IMAGE"), Output("MASK")],
    )

    def run(self, ctx: NodeContext, image: str) -> tuple:
        with Image.open(self.env.files.input_path(image)) as img:
            img = ImageOps.exif_transpose(img)
            rgb = pil_to_bhwc_unit(img)
            # transparent = to be repainted; no alpha: a 64x64 mask of zeros, as ComfyUI
            mask = 1.0 - pil_to_hw_unit(img.getchannel("A"))[None] if "A" in img.getbands() else torch.zeros(1, 64, 64)
        return rgb, mask

    @classmethod
    def is_changed(cls, image: str) -> str:
        return _file_hash(cls.env.files.input_path(image))

    @classmethod
    def validate_inputs(cls, image: str) -> bool | str:
        try:
            path = cls.env.files.input_path(image)
        except Exception as error:  # an unsafe name: the file API says why
            return str(error)
        return True if path.is_file() else f"Invalid image file: {image}"


class LoadImageMask(Node):
    SCHEMA = NodeSchema(
        name="LoadImageMask",
        display_name="Load Image (as Mask)",
        category="mask",
        inputs=[
            Input("image", "COMBO", options=(), image_upload=True),
            Input("channel", "COMBO", options=["alpha", "red", "green", "blue"]),
        ],
        outputs=[Output("MASK")],
    )

    def run(self, ctx: NodeContext, image: str, channel: str) -> tuple:
        band = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}[channel]
        with Image.open(self.env.files.input_path(image)) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode not in ("RGBA", "RGB"):
                img = img.convert("RGBA")
            if band not in img.getbands():
                return (torch.zeros(1, 64, 64),)
            values = pil_to_hw_unit(img.getchannel(band))[None]
        return (1.0 - values if band == "A" else values,)

    is_changed = LoadImage.is_changed
    validate_inputs = LoadImage.validate_inputs


class ImageScale(Node):
    SCHEMA = NodeSchema(
        name="ImageScale",
        display_name="Upscale Image",
        category="image/upscaling",
        inputs=[
            Input("image", "IMAGE"),
            Input("upscale_method", "COMBO", options=UPSCALE_IMAGE),
            Input("width", "INT", default=512, min=0, max=MAX_RESOLUTION, step=1),
            Input("height", "INT", default=512, min=0, max=MAX_RESOLUTION, step=1),
            Input("crop", "COMBO", options=["disabled", "center"]),
        ],
        outputs=[Output("IMAGE")],
    )

    def run(self, ctx: NodeContext, image: torch.Tensor, upscale_method: str, width: int, height: int,
            crop: str) -> tuple:
        return (resize_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    SCHEMA = NodeSchema(
        name="ImageScaleBy",
        display_name="Upscale Image By",
        category="image/upscaling",
        inputs=[
            Input("image", "IMAGE"),
            Input("upscale_method", "COMBO", options=UPSCALE_IMAGE),
            Input("scale_by", "FLOAT", default=1.0, min=0.01, max=8.0, step=0.01),
        ],
        outputs=[Output("IMAGE")],
    )

    def run(self, ctx: NodeContext, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple:
        h, w = image.shape[1:3]
        return (resize_image(image, round(w * scale_by), round(h * scale_by), upscale_method),)


class ImageScaleToTotalPixels(Node):
    SCHEMA = NodeSchema(
        name="ImageScaleToTotalPixels",
        display_name="Scale Image to Total Pixels",
        category="image/upscaling",
        inputs=[
            Input("image", "IMAGE"),
            Input("upscale_method", "COMBO", options=UPSCALE_IMAGE),
            Input("megapixels", "FLOAT", default=1.0, min=0.01, max=16.0, step=0.01),
        ],
        outputs=[Output("IMAGE")],
    )

    def run(self, ctx: NodeContext, image: torch.Tensor, upscale_method: str, megapixels: float) -> tuple:
        h, w = image.shape[1:3]
        scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
        return (resize_image(image, round(w * scale), round(h * scale), upscale_method),)


class ImagePadForOutpaint(Node):
    SCHEMA = NodeSchema(
        name="ImagePadForOutpaint",
        display_name="Pad Image for Outpainting",
        category="image",
        inputs=[
            Input("image", "IMAGE"),
            Input("left", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8),
            Input("top", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8),
            Input("right", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8),
            Input("bottom", "INT", default=0, min=0, max=MAX_RESOLUTION, step=8),
            Input("feathering", "INT", default=40, min=0, max=MAX_RESOLUTION, step=1),
        ],
        outputs=[Output("IMAGE"), Output("MASK")],
    )

    def run(self, ctx: NodeContext, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
            feathering: int) -> tuple:
        b, h, w, c = image.shape
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


class SaveImage(Node):
    SCHEMA = NodeSchema(
        name="SaveImage",
        display_name="Save Image",
        category="image",
        description="Saves the images to the output folder, with the graph in the PNG so it can be reopened.",
        inputs=[
            Input("images", "IMAGE", tooltip="The images to save."),
            Input("filename_prefix", "STRING", default="ComfyUI",
                  tooltip="The prefix for the file to save; may hold a subfolder (e.g. 'atelier/cat')."),
            Input("prompt", "PROMPT", hidden=True),
            Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True),
        ],
        output_node=True,
    )
    kind = "output"

    def run(self, ctx: NodeContext, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None,
            extra_pnginfo: Any = None) -> NodeOutput:
        text = {}
        if prompt is not None:
            text["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            text[key] = json.dumps(value)
        refs = [self.env.files.save_image(pil, filename_prefix, self.kind, text) for pil in bhwc_unit_to_pil(images)]
        return NodeOutput(result=(), ui={"images": refs})


class PreviewImage(SaveImage):
    SCHEMA = dataclasses.replace(
        SaveImage.SCHEMA,
        name="PreviewImage",
        display_name="Preview Image",
        description="Shows the images in the editor without keeping them (temporary files).",
        inputs=[Input("images", "IMAGE"), Input("prompt", "PROMPT", hidden=True),
                Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True)],
    )
    kind = "temp"

    def run(self, ctx: NodeContext, images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        return super().run(ctx, images, "ComfyUI_temp", prompt, extra_pnginfo)
