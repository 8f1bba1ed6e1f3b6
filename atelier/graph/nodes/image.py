"""Images: loading them and masks from the input folder, scaling them, saving and previewing them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from atelier.errors import AtelierError
from atelier.graph.filename_patterns import server_variables
from atelier.graph.kit import Node, target_size_inputs
from atelier.graph.resize import CROP, CROP_TOOLTIP, IMAGE_METHOD_TOOLTIP, UPSCALE_IMAGE, resize_image, target_size
from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema, Output
from atelier.imaging import bhwc_unit_to_pil, pil_to_bhwc_unit, pil_to_hw_unit
from atelier.limits import check_image_batch

IMAGE_FILE_TOOLTIP = "An image from the input folder; the upload button adds one there."


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class LoadImage(Node):
    SCHEMA = NodeSchema(
        name="LoadImage",
        display_name="Load Image",
        category="image",
        description="Loads an image from the input folder: its colours, and a mask of its transparent parts (to "
        "repaint).",
        inputs=[Input("image", "COMBO", options=(), image_upload=True, tooltip=IMAGE_FILE_TOOLTIP)],
        outputs=[
            Output("IMAGE", tooltip="The picture's RGB, (1, height, width, 3) in [0, 1]."),
            Output("MASK", tooltip="1 where the picture is transparent, 0 elsewhere; 64x64 zeros without alpha."),
        ],
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
        description="Loads one channel of an image from the input folder as a mask: paint it white where the "
        "sampler should repaint.",
        inputs=[
            Input("image", "COMBO", options=(), image_upload=True, tooltip=IMAGE_FILE_TOOLTIP),
            Input(
                "channel",
                "COMBO",
                options=["alpha", "red", "green", "blue"],
                tooltip="The channel that becomes the mask; alpha is inverted, so transparent means 1 (repaint).",
            ),
        ],
        outputs=[Output("MASK", tooltip="The channel in [0, 1]; 64x64 zeros when the image lacks it.")],
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
        description="Resizes images to a width and height in pixels, by resampling (no model adds detail).",
        inputs=[
            Input("image", "IMAGE", tooltip="The images to resize."),
            Input("upscale_method", "COMBO", options=UPSCALE_IMAGE, tooltip=IMAGE_METHOD_TOOLTIP),
            *target_size_inputs(step=1),
            Input("crop", "COMBO", options=CROP, tooltip=CROP_TOOLTIP),
        ],
        outputs=[Output("IMAGE", tooltip="The resized images.")],
    )

    def run(
        self, ctx: NodeContext, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple:
        check_image_batch(image.shape[0], *target_size(image.shape[1], image.shape[2], width, height))
        return (resize_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    SCHEMA = NodeSchema(
        name="ImageScaleBy",
        display_name="Upscale Image By",
        category="image/upscaling",
        description="Resizes images by a factor on both sides, by resampling (no model adds detail).",
        inputs=[
            Input("image", "IMAGE", tooltip="The images to resize."),
            Input("upscale_method", "COMBO", options=UPSCALE_IMAGE, tooltip=IMAGE_METHOD_TOOLTIP),
            Input(
                "scale_by",
                "FLOAT",
                default=1.0,
                min=0.01,
                max=8.0,
                step=0.01,
                tooltip="The factor on width and height, each rounded to whole pixels.",
            ),
        ],
        outputs=[Output("IMAGE", tooltip="The resized images.")],
    )

    def run(self, ctx: NodeContext, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple:
        h, w = image.shape[1:3]
        check_image_batch(image.shape[0], round(h * scale_by), round(w * scale_by))
        return (resize_image(image, round(w * scale_by), round(h * scale_by), upscale_method),)


class ImageScaleToTotalPixels(Node):
    SCHEMA = NodeSchema(
        name="ImageScaleToTotalPixels",
        display_name="Scale Image to Total Pixels",
        category="image/upscaling",
        description="Resizes images to about a given number of pixels, keeping their aspect ratio.",
        inputs=[
            Input("image", "IMAGE", tooltip="The images to resize."),
            Input("upscale_method", "COMBO", options=UPSCALE_IMAGE, tooltip=IMAGE_METHOD_TOOLTIP),
            Input(
                "megapixels",
                "FLOAT",
                default=1.0,
                min=0.01,
                max=16.0,
                step=0.01,
                tooltip="The target area; 1.0 means 1024 x 1024 pixels.",
            ),
        ],
        outputs=[Output("IMAGE", tooltip="The resized images.")],
    )

    def run(self, ctx: NodeContext, image: torch.Tensor, upscale_method: str, megapixels: float) -> tuple:
        h, w = image.shape[1:3]
        scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
        check_image_batch(image.shape[0], round(h * scale), round(w * scale))
        return (resize_image(image, round(w * scale), round(h * scale), upscale_method),)


class SaveImage(Node):
    SCHEMA = NodeSchema(
        name="SaveImage",
        display_name="Save Image",
        category="image",
        description="Saves the images to the output folder, with the graph in the PNG so it can be reopened.",
        inputs=[
            Input("images", "IMAGE", tooltip="The images to save."),
            Input(
                "filename_prefix",
                "STRING",
                default="ComfyUI",
                tooltip=(
                    "The prefix for the file to save; may hold a subfolder (e.g. 'atelier/cat') and ComfyUI's "
                    "%width%, %height%, %year%, %month%, %day%, %hour%, %minute%, %second%."
                ),
            ),
            Input("prompt", "PROMPT", hidden=True),
            Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True),
        ],
        output_node=True,
    )
    kind = "output"

    def run(
        self,
        ctx: NodeContext,
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> NodeOutput:
        text = {}
        if prompt is not None:
            text["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            text[key] = json.dumps(value)
        refs: list[dict] = []
        # As ComfyUI: %width% and %height% are those of the first image, the date is read once for the batch.
        filename_prefix = server_variables(filename_prefix, images.shape[2], images.shape[1], datetime.now())
        try:
            for pil in bhwc_unit_to_pil(images):
                ctx.check_interrupt()
                refs.append(self.env.files.save_image(pil, filename_prefix, self.kind, text, claim=ctx.will_write))
        except BaseException:  # a prompt that fails shows no outputs: leave none of its files behind
            for ref in refs:
                self.env.files.path(ref).unlink(missing_ok=True)
            raise
        return NodeOutput(result=(), ui={"images": refs})

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = "ComfyUI") -> bool | str:
        """Refuse a prefix no file can be written with (NUL, absolute, '..', too long) before the prompt is queued."""
        try:
            cls.env.files.check_prefix(filename_prefix or "", cls.kind)
        except AtelierError as error:  # the file API's UnsafePathError: one sentence
            return str(error)
        return True


class PreviewImage(SaveImage):
    SCHEMA = dataclasses.replace(
        SaveImage.SCHEMA,
        name="PreviewImage",
        display_name="Preview Image",
        description="Shows the images in the editor without keeping them (temporary files).",
        inputs=[
            Input("images", "IMAGE", tooltip="The images to show."),
            Input("prompt", "PROMPT", hidden=True),
            Input("extra_pnginfo", "EXTRA_PNGINFO", hidden=True),
        ],
    )
    kind = "temp"

    @classmethod
    def validate_inputs(cls) -> bool:
        """Nothing to refuse: its prefix is its own ("ComfyUI_temp"), not an input."""
        return True

    def run(self, ctx: NodeContext, images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        return super().run(ctx, images, "ComfyUI_temp", prompt, extra_pnginfo)


class SaveImageWebsocket(Node):
    """ComfyUI's API node for scripts that want the pixels and no file: each image goes to the prompt's client as
    a binary WebSocket frame, the one live previews use, `[u32 1 = PREVIEW_IMAGE][u32 2 = PNG][PNG bytes]` (event 4
    with its JSON metadata for a client that announced supports_preview_metadata: hub.py). The PNG is full size and
    carries no metadata; nothing is written to disk and the node shows nothing in the editor."""

    SCHEMA = NodeSchema(
        name="SaveImageWebsocket",
        display_name="Save Image (Websocket)",
        category="image",
        description="Sends the images to the client through the WebSocket as PNG frames, without saving a file (for "
        "scripts: see ComfyUI's websockets_api_example_ws_images.py).",
        inputs=[Input("images", "IMAGE", tooltip="The images to send, one frame each.")],
        output_node=True,
    )

    def run(self, ctx: NodeContext, images: torch.Tensor) -> tuple:
        pictures = bhwc_unit_to_pil(images)
        for index, picture in enumerate(pictures):
            ctx.check_interrupt()
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", compress_level=4)
            ctx.send_image(buffer.getvalue(), "image/png")
            ctx.progress(index + 1, len(pictures))
        return ()

    @classmethod
    def is_changed(cls) -> float:
        """NaN: always run again, as ComfyUI's node does; a cached run would send the client nothing."""
        return math.nan
