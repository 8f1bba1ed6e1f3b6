"""Upscale models: a super-resolution network file -> UPSCALE_MODEL; an IMAGE enlarged by it, tile by tile."""

from __future__ import annotations

import torch

from atelier import device as devices
from atelier.graph.kit import Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import check_image_batch
from atelier.models.upscale import OVERLAP, TILE, UpscaleModel, load_upscale_model, upscale_image


class UpscaleModelLoader(Node):
    SCHEMA = NodeSchema(
        name="UpscaleModelLoader",
        display_name="Load Upscale Model",
        category="loaders",
        description="Loads a super-resolution network from models/upscale_models: ESRGAN and Real-ESRGAN RRDBNet "
        "files (x1, x2, x4, in any of their key layouts) and Real-ESRGAN compact networks. Pickled .pth files are "
        "opened with torch.load(weights_only=True), which never runs code from the file.",
        inputs=[Input("model_name", "COMBO", options=(), tooltip="The upscale model, from models/upscale_models.")],
        outputs=[Output("UPSCALE_MODEL", tooltip="The network and its factor (x2, x4, ...).")],
    )

    def run(self, ctx: NodeContext, model_name: str) -> tuple:
        path = self.env.models.resolve("upscale_models", model_name)
        return (load_upscale_model(path, device=devices.pick_device(self.env.device)),)


class ImageUpscaleWithModel(Node):
    SCHEMA = NodeSchema(
        name="ImageUpscaleWithModel",
        display_name="Upscale Image (using Model)",
        category="image/upscaling",
        description=f"Enlarges an image with a super-resolution network, in tiles of {TILE} pixels with 32 pixels "
        "of context around each (halved while the GPU runs out of memory), so large results fit in modest memory.",
        inputs=[
            Input("upscale_model", "UPSCALE_MODEL", tooltip="The network from Load Upscale Model."),
            Input("image", "IMAGE", tooltip="The image to enlarge."),
        ],
        outputs=[Output("IMAGE", tooltip="The image, the network's factor larger per side.")],
    )

    def run(self, ctx: NodeContext, upscale_model: UpscaleModel, image: torch.Tensor) -> tuple:
        b, h, w = image.shape[:3]
        check_image_batch(b, h * upscale_model.scale, w * upscale_model.scale)

        def on_tile(done: int, total: int) -> None:
            ctx.progress(done, total)
            ctx.check_interrupt()  # raises the executor's Interrupted between tiles

        ctx.check_interrupt()
        return (upscale_image(upscale_model, image, TILE, OVERLAP, on_tile).to(image.dtype).cpu(),)
