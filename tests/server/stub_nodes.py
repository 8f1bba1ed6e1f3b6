"""Stub nodes for the server tests: tiny PIL images instead of latents, so a prompt runs in milliseconds.

    MakeImage ──► SlowImage (progress + a preview per step, interruptible) ──► SaveStub (writes a PNG)
                  Fail (raises)

`stub_registry(files)` binds the file API the server gives nodes (OutputFiles) into SaveStub, the way the real
registry binds it into SaveImage.
"""

from __future__ import annotations

import time

from PIL import Image

from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema, Output
from atelier.server.files import OutputFiles

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class MakeImage:
    SCHEMA = NodeSchema(
        name="MakeImage",
        category="stub",
        inputs=[
            Input("width", "INT", default=16, min=8, max=64),
            Input("height", "INT", default=16, min=8, max=64),
            Input("colour", "COMBO", options=list(COLOURS)),
        ],
        outputs=[Output("IMAGE")],
    )

    def run(self, ctx: NodeContext, width: int, height: int, colour: str) -> tuple:
        return (Image.new("RGB", (width, height), COLOURS[colour]),)


class SlowImage:
    """Like a sampler: one progress report and one preview per step, and a check for Cancel at each step."""

    SCHEMA = NodeSchema(
        name="SlowImage",
        category="stub",
        inputs=[
            Input("image", "IMAGE"),
            Input("steps", "INT", default=2, min=1, max=1000),
            Input("delay", "FLOAT", default=0.0, min=0.0, max=1.0),
        ],
        outputs=[Output("IMAGE")],
    )

    def run(self, ctx: NodeContext, image: Image.Image, steps: int, delay: float) -> tuple:
        for step in range(steps):
            ctx.check_interrupt()
            time.sleep(delay)
            ctx.preview(image)
            ctx.progress(step + 1, steps)
        return (image,)


class Fail:
    SCHEMA = NodeSchema(
        name="Fail",
        category="stub",
        inputs=[Input("image", "IMAGE"), Input("message", "STRING", default="boom")],
        outputs=[Output("IMAGE")],
    )

    def run(self, ctx: NodeContext, image: Image.Image, message: str) -> tuple:
        raise RuntimeError(message)


def stub_registry(files: OutputFiles) -> NodeRegistry:
    class SaveStub:
        SCHEMA = NodeSchema(
            name="SaveStub",
            category="stub",
            output_node=True,
            inputs=[Input("images", "IMAGE"), Input("filename_prefix", "STRING", default="stub")],
        )

        def run(self, ctx: NodeContext, images: Image.Image, filename_prefix: str) -> NodeOutput:
            ref = files.save_image(images, filename_prefix, text={"node": ctx.node_id})
            return NodeOutput(result=(), ui={"images": [ref]})

    return NodeRegistry([MakeImage, SlowImage, Fail, SaveStub])


def graph(colour: str = "red", steps: int = 2, delay: float = 0.0, fail: bool = False, prefix: str = "stub") -> dict:
    """An API prompt: MakeImage(1) -> SlowImage(2) [-> Fail(4)] -> SaveStub(3)."""
    prompt = {
        "1": {"class_type": "MakeImage", "inputs": {"width": 16, "height": 8, "colour": colour}},
        "2": {"class_type": "SlowImage", "inputs": {"image": ["1", 0], "steps": steps, "delay": delay}},
        "3": {"class_type": "SaveStub", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
    if fail:
        prompt["4"] = {"class_type": "Fail", "inputs": {"image": ["2", 0], "message": "boom"}}
        prompt["3"]["inputs"]["images"] = ["4", 0]
    return prompt
