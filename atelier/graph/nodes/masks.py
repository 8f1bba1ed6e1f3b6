"""Masks as values of their own: made from images, solid, inverted, cropped, combined, feathered, grown, thresholded.
ComfyUI's core mask nodes (comfy_extras/nodes_mask.py) with the same names, inputs and results.

A MASK is float (B, H, W) in [0, 1], one value per pixel: 1 where something happens (inpainting, pasting), 0
where nothing does. Inpainting workflows shape the mask LoadImage gives before VAEEncodeForInpaint or
SetLatentNoiseMask: grow it so the seam falls outside the object, feather it so the seam fades, invert it to keep
the object and redraw the rest. A 2-D mask (H, W) from an older node is read as a batch of one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from atelier.errors import InputError
from atelier.graph.kit import MAX_RESOLUTION, Node
from atelier.graph.nodes.compose import repeat_to_batch
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import check_image_batch

CHANNELS = ["red", "green", "blue", "alpha"]
OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]

MASK_IN = "The masks, (B, H, W) in [0, 1]."


def as_batch(mask: Tensor) -> Tensor:
    """Any mask as (B, H, W): (H, W) becomes a batch of one."""
    return mask.reshape(-1, *mask.shape[-2:])


def _pixels(name: str, default: int, what: str, least: int = 0) -> Input:
    return Input(name, "INT", default=default, min=least, max=MAX_RESOLUTION, step=1, tooltip=what)


class MaskToImage(Node):
    SCHEMA = NodeSchema(
        name="MaskToImage",
        display_name="Convert Mask to Image",
        category="mask",
        description="A mask as a grey image (the same value in red, green and blue), to preview or to save it.",
        inputs=[Input("mask", "MASK", tooltip=MASK_IN)],
        outputs=[Output("IMAGE", tooltip="(B, H, W, 3): white where the mask is 1.")],
    )

    def run(self, ctx: NodeContext, mask: Tensor) -> tuple:
        return (as_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3),)


class ImageToMask(Node):
    SCHEMA = NodeSchema(
        name="ImageToMask",
        display_name="Convert Image to Mask",
        category="mask",
        description="One channel of an image as a mask: a black-and-white drawing becomes a mask through any of "
        "red, green or blue; a transparent image through its alpha.",
        inputs=[
            Input("image", "IMAGE", tooltip="The images, (B, H, W, 3) or with alpha (B, H, W, 4)."),
            Input("channel", "COMBO", options=CHANNELS, tooltip="The channel whose values become the mask."),
        ],
        outputs=[Output("MASK", tooltip="(B, H, W): the channel's values.")],
    )

    def run(self, ctx: NodeContext, image: Tensor, channel: str) -> tuple:
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise InputError(
                f"ImageToMask: channel 'alpha' was asked for but the image has {image.shape[-1]} channels (RGB, "
                "no transparency); pick red, green or blue, or take LoadImage's MASK output."
            )
        return (image[..., index].clone(),)


class SolidMask(Node):
    SCHEMA = NodeSchema(
        name="SolidMask",
        display_name="SolidMask",
        category="mask",
        description="A mask of one value everywhere: a start to paste other masks onto (MaskComposite).",
        inputs=[
            Input("value", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="The value of every pixel."),
            _pixels("width", 512, "The mask's width in pixels.", least=1),
            _pixels("height", 512, "The mask's height in pixels.", least=1),
        ],
        outputs=[Output("MASK", tooltip="(1, height, width).")],
    )

    def run(self, ctx: NodeContext, value: float, width: int, height: int) -> tuple:
        check_image_batch(1, height, width)
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    SCHEMA = NodeSchema(
        name="InvertMask",
        display_name="InvertMask",
        category="mask",
        description="Every value v becomes 1 - v: what was masked is kept, and the rest is masked.",
        inputs=[Input("mask", "MASK", tooltip=MASK_IN)],
        outputs=[Output("MASK", tooltip="The inverted masks.")],
    )

    def run(self, ctx: NodeContext, mask: Tensor) -> tuple:
        return (1.0 - mask,)


class CropMask(Node):
    SCHEMA = NodeSchema(
        name="CropMask",
        display_name="CropMask",
        category="mask",
        description="The part of a mask inside a rectangle; a rectangle past the edge is cut there.",
        inputs=[
            Input("mask", "MASK", tooltip=MASK_IN),
            _pixels("x", 0, "The rectangle's left edge, in pixels from the left."),
            _pixels("y", 0, "The rectangle's top edge, in pixels from the top."),
            _pixels("width", 512, "The rectangle's width in pixels.", least=1),
            _pixels("height", 512, "The rectangle's height in pixels.", least=1),
        ],
        outputs=[Output("MASK", tooltip="(B, height, width), smaller where the mask ends first.")],
    )

    def run(self, ctx: NodeContext, mask: Tensor, x: int, y: int, width: int, height: int) -> tuple:
        mask = as_batch(mask)
        if x >= mask.shape[2] or y >= mask.shape[1]:
            raise InputError(
                f"CropMask: the rectangle starts at ({x}, {y}), outside the {mask.shape[2]}x{mask.shape[1]} mask; "
                "expected x below the width and y below the height."
            )
        return (mask[:, y : y + height, x : x + width].clone(),)


class MaskComposite(Node):
    SCHEMA = NodeSchema(
        name="MaskComposite",
        display_name="MaskComposite",
        category="mask",
        description="Combines a source mask into a destination mask where it is placed: multiply, add, subtract "
        "(values kept in [0, 1]), or and, or, xor of 'value > 0'.",
        inputs=[
            Input("destination", "MASK", tooltip="The masks combined into; the result has their size and batch."),
            Input("source", "MASK", tooltip="The masks combined in, repeated to the destination's batch."),
            _pixels("x", 0, "Where the source's left edge goes, in pixels from the left."),
            _pixels("y", 0, "Where the source's top edge goes, in pixels from the top."),
            Input("operation", "COMBO", options=OPERATIONS, tooltip="How a source value s meets a destination d."),
        ],
        outputs=[Output("MASK", tooltip="The destination with the source combined in where they overlap.")],
    )

    def run(self, ctx: NodeContext, destination: Tensor, source: Tensor, x: int, y: int, operation: str) -> tuple:
        out = as_batch(destination).clone()
        source = repeat_to_batch(as_batch(source).to(out), out.shape[0])
        h, w = min(source.shape[1], out.shape[1] - y), min(source.shape[2], out.shape[2] - x)
        if h <= 0 or w <= 0:  # placed past the edge: nothing overlaps
            return (out.clamp(0.0, 1.0),)
        d, s = out[:, y : y + h, x : x + w], source[:, :h, :w]
        if operation in ("multiply", "add", "subtract"):
            combined = {"multiply": d * s, "add": d + s, "subtract": d - s}[operation]
        else:
            bits = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
            combined = bits(d > 0, s > 0).to(out.dtype)
        out[:, y : y + h, x : x + w] = combined
        return (out.clamp(0.0, 1.0),)


class FeatherMask(Node):
    SCHEMA = NodeSchema(
        name="FeatherMask",
        display_name="FeatherMask",
        category="mask",
        description="Fades a mask towards its edges: over the given number of pixels from each side the values "
        "are multiplied by a ramp from 1/n at the edge to 1 inside, so a pasted or redrawn part blends in.",
        inputs=[
            Input("mask", "MASK", tooltip=MASK_IN),
            _pixels("left", 0, "How many pixels fade in from the left edge."),
            _pixels("top", 0, "How many pixels fade in from the top edge."),
            _pixels("right", 0, "How many pixels fade in from the right edge."),
            _pixels("bottom", 0, "How many pixels fade in from the bottom edge."),
        ],
        outputs=[Output("MASK", tooltip="The feathered masks.")],
    )

    def run(self, ctx: NodeContext, mask: Tensor, left: int, top: int, right: int, bottom: int) -> tuple:
        out = as_batch(mask).clone()
        height, width = out.shape[1:]

        def ramp(n: int) -> Tensor:  # (n,): 1/n, 2/n, ..., 1, from the edge inwards
            return torch.arange(1, n + 1, dtype=out.dtype) / n

        # ComfyUI's loop writes the right and bottom ramps at index -x, so its first step lands on the left
        # column (or top row) instead of the last one; here each ramp starts at its own edge.
        left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
        if left:
            out[:, :, :left] *= ramp(left)
        if right:
            out[:, :, width - right :] *= ramp(right).flip(0)
        if top:
            out[:, :top, :] *= ramp(top)[:, None]
        if bottom:
            out[:, height - bottom :, :] *= ramp(bottom).flip(0)[:, None]
        return (out,)


GROW_TIP = "Pixels to grow by; negative shrinks."
TAPER_TIP = "Grow through the 4 side neighbours only (rounded corners), else all 8 (square corners)."


class GrowMask(Node):
    SCHEMA = NodeSchema(
        name="GrowMask",
        display_name="GrowMask",
        category="mask",
        description="Grows a mask outwards by some pixels (or shrinks it, with a negative number): each pixel takes "
        "the largest (or smallest) value of its neighbours, once per pixel of growth (grey dilation or erosion).",
        inputs=[
            Input("mask", "MASK", tooltip=MASK_IN),
            Input("expand", "INT", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1, tooltip=GROW_TIP),
            Input("tapered_corners", "BOOLEAN", default=True, tooltip=TAPER_TIP),
        ],
        outputs=[Output("MASK", tooltip="The grown (or shrunk) masks.")],
    )

    def run(self, ctx: NodeContext, mask: Tensor, expand: int, tapered_corners: bool) -> tuple:
        out = as_batch(mask).float()
        # Past H + W steps every pixel has met every other: more steps change nothing.
        steps = min(abs(expand), out.shape[1] + out.shape[2])
        sign = 1.0 if expand > 0 else -1.0  # erosion is dilation of the negated mask
        out = sign * out
        for _ in range(steps):
            out = _dilate(out, tapered_corners)
        return ((sign * out).to(mask.dtype),)


def _dilate(mask: Tensor, cross: bool) -> Tensor:
    """One step of grey dilation of (B, H, W) with a 3x3 window: a plus sign (cross) or the full square. Outside the
    mask counts as -inf, which for a max over a window that holds the pixel itself is the same as scipy's 'reflect'
    border that ComfyUI uses."""
    if not cross:
        return F.max_pool2d(mask.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    padded = F.pad(mask, (1, 1, 1, 1), value=float("-inf"))  # (B, H + 2, W + 2)
    centre, up, down = padded[:, 1:-1, 1:-1], padded[:, :-2, 1:-1], padded[:, 2:, 1:-1]
    left, right = padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]
    return torch.stack((centre, up, down, left, right)).amax(dim=0)


class ThresholdMask(Node):
    SCHEMA = NodeSchema(
        name="ThresholdMask",
        display_name="ThresholdMask",
        category="mask",
        description="A hard mask from a soft one: 1 where the value is above the threshold, 0 elsewhere.",
        inputs=[
            Input("mask", "MASK", tooltip=MASK_IN),
            Input("value", "FLOAT", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="The threshold."),
        ],
        outputs=[Output("MASK", tooltip="0 or 1 per pixel.")],
    )

    def run(self, ctx: NodeContext, mask: Tensor, value: float) -> tuple:
        return ((mask > value).to(mask.dtype),)


MASK_NODES: tuple[type[Node], ...] = (
    MaskToImage,
    ImageToMask,
    SolidMask,
    InvertMask,
    CropMask,
    MaskComposite,
    FeatherMask,
    GrowMask,
    ThresholdMask,
)
