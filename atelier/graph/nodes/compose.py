"""Small tools on latents and images: pasting one onto another, blending, cropping, flipping, rotating, batching,
inverting, blurring and sharpening. ComfyUI's core nodes of the same names, inputs and results.

Latents are (B, 4, h, w) with h = H / 8: positions given in pixels are divided by 8 (rounded down), as ComfyUI
does. Images are (B, H, W, C) in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from atelier.graph.kit import MAX_RESOLUTION, Node
from atelier.graph.resize import resize
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import check_image_batch


def _position(name: str, step: int, what: str) -> Input:
    side = "left" if name == "x" else "top"
    return Input(name, "INT", default=0, min=0, max=MAX_RESOLUTION, step=step,
                 tooltip=f"Where the {what}'s {side} edge goes, in pixels from the {side}.")  # fmt: skip


def repeat_to_batch(x: Tensor, batch: int) -> Tensor:
    """The first `batch` items of x repeated end to end (ComfyUI's repeat_to_batch_size): (b, ...) -> (batch, ...)."""
    if x.shape[0] >= batch:
        return x[:batch]
    return x.repeat(math.ceil(batch / x.shape[0]), *[1] * (x.ndim - 1))[:batch]


def paste(
    destination: Tensor, source: Tensor, x: int, y: int, mask: Tensor | None, per_pixel: int, resize_source: bool
) -> Tensor:
    """`source` pasted onto a copy of `destination`, both (B, C, H, W), its top-left corner at pixel (x, y):
    out = mask * source + (1 - mask) * destination where they overlap (ComfyUI's `composite` of nodes_mask.py).

    per_pixel: pixels per element (8 for latents, 1 for images). resize_source stretches the source to the
    destination's size first (bilinear). mask (b, H', W') in [0, 1] is stretched to the source's size (bilinear);
    None pastes everything. Source and mask are repeated to the destination's batch.
    """
    out = destination.clone()
    if resize_source:
        source = F.interpolate(source, size=out.shape[-2:], mode="bilinear")
    source = repeat_to_batch(source.to(out.device, out.dtype), out.shape[0])
    left, top = min(x, out.shape[-1] * per_pixel) // per_pixel, min(y, out.shape[-2] * per_pixel) // per_pixel
    if mask is None:
        weight = torch.ones_like(source)
    else:
        weight = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=source.shape[-2:], mode="bilinear")
        weight = repeat_to_batch(weight.to(out.device, out.dtype), source.shape[0])  # (B, 1, h, w)
    visible_h, visible_w = out.shape[-2] - top, out.shape[-1] - left  # the source is cut where the canvas ends
    weight = weight[..., :visible_h, :visible_w]
    part = source[..., :visible_h, :visible_w]
    h, w = part.shape[-2:]
    region = out[..., top : top + h, left : left + w]
    out[..., top : top + h, left : left + w] = weight * part + (1 - weight) * region
    return out


# --------------------------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------------------------


class LatentComposite(Node):
    SCHEMA = NodeSchema(
        name="LatentComposite",
        display_name="Latent Composite",
        category="latent",
        description="Pastes one latent onto another at a position; feather fades the pasted edges that lie inside "
        "the destination, over that many pixels.",
        inputs=[
            Input("samples_to", "LATENT", tooltip="The latent pasted onto (the destination)."),
            Input("samples_from", "LATENT", tooltip="The latent pasted (the source)."),
            _position("x", 8, "source"),
            _position("y", 8, "source"),
            Input(
                "feather",
                "INT",
                default=0,
                min=0,
                max=MAX_RESOLUTION,
                step=8,
                tooltip="Pixels over which the source's inner edges fade into the destination (0: a hard edge).",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The destination with the source pasted in.")],
    )

    def run(self, ctx: NodeContext, samples_to: dict, samples_from: dict, x: int, y: int, feather: int) -> tuple:
        to, src = samples_to["samples"], samples_from["samples"]
        x, y, feather = x // 8, y // 8, feather // 8
        src = src[:, :, : to.shape[2] - y, : to.shape[3] - x]  # (b, 4, h, w): what fits on the canvas
        mask = torch.ones_like(src)
        h, w = src.shape[2:]
        # A linear ramp (t + 1) / feather over the first `feather` rows/columns of each edge that is inside the
        # destination (an edge on the canvas border stays hard), as ComfyUI multiplies it in.
        for t in range(feather):
            fade = (t + 1) / feather
            if y != 0:
                mask[:, :, t, :] *= fade
            if y + h < to.shape[2]:
                mask[:, :, h - 1 - t, :] *= fade
            if x != 0:
                mask[:, :, :, t] *= fade
            if x + w < to.shape[3]:
                mask[:, :, :, w - 1 - t] *= fade
        out = to.clone()
        out[:, :, y : y + h, x : x + w] = src * mask + out[:, :, y : y + h, x : x + w] * (1 - mask)
        return (dict(samples_to, samples=out),)


class LatentCompositeMasked(Node):
    SCHEMA = NodeSchema(
        name="LatentCompositeMasked",
        display_name="LatentCompositeMasked",
        category="latent",
        description="Pastes a latent onto another through a mask: where the mask is 1 the source shows, where it is "
        "0 the destination stays.",
        inputs=[
            Input("destination", "LATENT", tooltip="The latent pasted onto."),
            Input("source", "LATENT", tooltip="The latent pasted."),
            _position("x", 8, "source"),
            _position("y", 8, "source"),
            Input("resize_source", "BOOLEAN", default=False, tooltip="Stretch the source to the destination's size."),
            Input("mask", "MASK", optional=True, tooltip="Where the source shows (1) or not (0); none: everywhere."),
        ],
        outputs=[Output("LATENT", tooltip="The destination with the source pasted in.")],
    )

    def run(
        self,
        ctx: NodeContext,
        destination: dict,
        source: dict,
        x: int,
        y: int,
        resize_source: bool,
        mask: Tensor | None = None,
    ) -> tuple:
        out = paste(destination["samples"], source["samples"], x, y, mask, 8, resize_source)
        return (dict(destination, samples=out),)


class LatentBlend(Node):
    SCHEMA = NodeSchema(
        name="LatentBlend",
        display_name="Latent Blend",
        category="latent",
        description="Mixes two latents: blend_factor * samples1 + (1 - blend_factor) * samples2. A second latent of "
        "another size is first resized to the first's (bicubic, centre crop).",
        inputs=[
            Input("samples1", "LATENT", tooltip="The first latent; the result keeps its size."),
            Input("samples2", "LATENT", tooltip="The second latent."),
            Input(
                "blend_factor",
                "FLOAT",
                default=0.5,
                min=0.0,
                max=1.0,
                step=0.01,
                tooltip="The share of samples1: 1 keeps it alone, 0 gives samples2.",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The mixed latent.")],
    )

    def run(self, ctx: NodeContext, samples1: dict, samples2: dict, blend_factor: float) -> tuple:
        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = resize(b, a.shape[3], a.shape[2], "bicubic", "center")
        return (dict(samples1, samples=a * blend_factor + b * (1 - blend_factor)),)


class LatentCrop(Node):
    SCHEMA = NodeSchema(
        name="LatentCrop",
        display_name="Crop Latent",
        category="latent/transform",
        description="Cuts a rectangle out of a latent; the corner is kept at least 64 pixels inside the latent.",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to crop."),
            Input("width", "INT", default=512, min=64, max=MAX_RESOLUTION, step=8, tooltip="Width kept, in pixels."),
            Input("height", "INT", default=512, min=64, max=MAX_RESOLUTION, step=8, tooltip="Height kept, in pixels."),
            _position("x", 8, "crop"),
            _position("y", 8, "crop"),
        ],
        outputs=[Output("LATENT", tooltip="The cropped latent (smaller where the rectangle leaves the latent).")],
    )

    def run(self, ctx: NodeContext, samples: dict, width: int, height: int, x: int, y: int) -> tuple:
        s = samples["samples"]
        x, y = min(x // 8, s.shape[3] - 8), min(y // 8, s.shape[2] - 8)  # ComfyUI keeps 8 latent pixels
        x, y = max(x, 0), max(y, 0)  # a latent under 64 pixels: from its corner (ComfyUI would slice from the end)
        return (dict(samples, samples=s[:, :, y : y + height // 8, x : x + width // 8]),)


class LatentFlip(Node):
    SCHEMA = NodeSchema(
        name="LatentFlip",
        display_name="Flip Latent",
        category="latent/transform",
        description="Mirrors a latent, top to bottom or left to right; the decoded image is mirrored the same way.",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to mirror."),
            Input(
                "flip_method",
                "COMBO",
                options=["x-axis: vertically", "y-axis: horizontally"],
                tooltip="x-axis turns the latent upside down; y-axis swaps left and right.",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The mirrored latent.")],
    )

    def run(self, ctx: NodeContext, samples: dict, flip_method: str) -> tuple:
        dim = 2 if flip_method.startswith("x") else 3  # rows (height) or columns (width) of (B, 4, h, w)
        return (dict(samples, samples=samples["samples"].flip(dim)),)


class LatentRotate(Node):
    SCHEMA = NodeSchema(
        name="LatentRotate",
        display_name="Rotate Latent",
        category="latent/transform",
        description="Turns a latent clockwise by quarter turns; the decoded image turns the same way.",
        inputs=[
            Input("samples", "LATENT", tooltip="The latent to turn."),
            Input(
                "rotation",
                "COMBO",
                options=["none", "90 degrees", "180 degrees", "270 degrees"],
                tooltip="How far to turn, clockwise.",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The turned latent (width and height swap for 90 and 270).")],
    )

    def run(self, ctx: NodeContext, samples: dict, rotation: str) -> tuple:
        quarter_turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        # rot90 from the width axis towards the height axis: clockwise as the image is seen
        return (dict(samples, samples=torch.rot90(samples["samples"], k=quarter_turns, dims=[3, 2])),)


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


class ImageCompositeMasked(Node):
    SCHEMA = NodeSchema(
        name="ImageCompositeMasked",
        display_name="ImageCompositeMasked",
        category="image",
        description="Pastes an image onto another through a mask: where the mask is 1 the source shows, where it is "
        "0 the destination stays.",
        inputs=[
            Input("destination", "IMAGE", tooltip="The image pasted onto."),
            Input("source", "IMAGE", tooltip="The image pasted."),
            _position("x", 1, "source"),
            _position("y", 1, "source"),
            Input("resize_source", "BOOLEAN", default=False, tooltip="Stretch the source to the destination's size."),
            Input("mask", "MASK", optional=True, tooltip="Where the source shows (1) or not (0); none: everywhere."),
        ],
        outputs=[Output("IMAGE", tooltip="The destination with the source pasted in.")],
    )

    def run(
        self,
        ctx: NodeContext,
        destination: Tensor,
        source: Tensor,
        x: int,
        y: int,
        resize_source: bool,
        mask: Tensor | None = None,
    ) -> tuple:
        channels = destination.shape[-1]
        if source.shape[-1] > channels:  # RGBA onto RGB: the alpha is dropped
            source = source[..., :channels]
        elif source.shape[-1] < channels:  # RGB onto RGBA: opaque
            source = F.pad(source, (0, channels - source.shape[-1]), value=1.0)
        out = paste(destination.movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)


class ImageBatch(Node):
    SCHEMA = NodeSchema(
        name="ImageBatch",
        display_name="Batch Images",
        category="image/batch",
        description="Puts two images (or batches) in one batch; the second is resized to the first's size "
        "(bilinear, centre crop) when they differ.",
        inputs=[
            Input("image1", "IMAGE", tooltip="The first images; the batch keeps their size."),
            Input("image2", "IMAGE", tooltip="The images appended after them."),
        ],
        outputs=[Output("IMAGE", tooltip="image1 then image2, (b1 + b2, H, W, C).")],
    )

    def run(self, ctx: NodeContext, image1: Tensor, image2: Tensor) -> tuple:
        if image1.shape[-1] != image2.shape[-1]:  # RGB with RGBA: the RGB one gets an opaque alpha
            if image1.shape[-1] > image2.shape[-1]:
                image2 = F.pad(image2, (0, 1), value=1.0)
            else:
                image1 = F.pad(image1, (0, 1), value=1.0)
        check_image_batch(image1.shape[0] + image2.shape[0], image1.shape[1], image1.shape[2])
        if image1.shape[1:] != image2.shape[1:]:
            image2 = resize(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear", "center").movedim(
                1, -1
            )
        return (torch.cat([image1, image2], dim=0),)


class ImageInvert(Node):
    SCHEMA = NodeSchema(
        name="ImageInvert",
        display_name="Invert Image",
        category="image",
        description="The negative of an image: every value v becomes 1 - v.",
        inputs=[Input("image", "IMAGE", tooltip="The images to invert.")],
        outputs=[Output("IMAGE", tooltip="The inverted images.")],
    )

    def run(self, ctx: NodeContext, image: Tensor) -> tuple:
        return (1.0 - image,)


class ImageCrop(Node):
    SCHEMA = NodeSchema(
        name="ImageCrop",
        display_name="ImageCrop",
        category="image/transform",
        description="Cuts a rectangle out of images; the corner is kept inside the image.",
        inputs=[
            Input("image", "IMAGE", tooltip="The images to crop."),
            Input("width", "INT", default=512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Width kept, in pixels."),
            Input("height", "INT", default=512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Height kept, in pixels."),
            _position("x", 1, "crop"),
            _position("y", 1, "crop"),
        ],
        outputs=[Output("IMAGE", tooltip="The cropped images (smaller where the rectangle leaves the image).")],
    )

    def run(self, ctx: NodeContext, image: Tensor, width: int, height: int, x: int, y: int) -> tuple:
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y : y + height, x : x + width, :],)


def gaussian_kernel(radius: int, sigma: float) -> Tensor:
    """(2r + 1, 2r + 1) weights summing to 1: exp(-d^2 / (2 sigma^2)) with d measured so that the kernel's edge
    is at distance 1 (ComfyUI's convention: sigma is a fraction of the radius, not pixels)."""
    ramp = torch.linspace(-1, 1, 2 * radius + 1)
    d2 = ramp[:, None] ** 2 + ramp[None, :] ** 2
    g = torch.exp(-d2 / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter(image: Tensor, kernel: Tensor) -> Tensor:
    """Each channel of (B, H, W, C) convolved with `kernel` (k, k), the borders mirrored (reflect padding)."""
    r = kernel.shape[-1] // 2
    x = F.pad(image.movedim(-1, 1), (r, r, r, r), mode="reflect")  # (B, C, H + 2r, W + 2r)
    c = x.shape[1]
    out = F.conv2d(x, kernel.to(x.dtype).expand(c, 1, -1, -1), groups=c)  # (B, C, H, W)
    return out.movedim(1, -1)


def _radius_input(name: str) -> Input:
    return Input(name, "INT", default=1, min=1, max=31, step=1,
                 tooltip="The kernel reaches this many pixels on each side (a square of 2r + 1).")  # fmt: skip


class ImageBlur(Node):
    SCHEMA = NodeSchema(
        name="ImageBlur",
        display_name="Image Blur",
        category="image/postprocessing",
        description="A Gaussian blur: each pixel becomes a weighted average of its neighbours.",
        inputs=[
            Input("image", "IMAGE", tooltip="The images to blur."),
            _radius_input("blur_radius"),
            Input(
                "sigma",
                "FLOAT",
                default=1.0,
                min=0.1,
                max=10.0,
                step=0.1,
                tooltip="The Gaussian's width, relative to the radius: larger is flatter, a stronger blur.",
            ),
        ],
        outputs=[Output("IMAGE", tooltip="The blurred images.")],
    )

    def run(self, ctx: NodeContext, image: Tensor, blur_radius: int, sigma: float) -> tuple:
        return (_filter(image, gaussian_kernel(blur_radius, sigma)),)


class ImageSharpen(Node):
    SCHEMA = NodeSchema(
        name="ImageSharpen",
        display_name="Image Sharpen",
        category="image/postprocessing",
        description="Unsharp masking: each pixel pushed away from the Gaussian average of its neighbours, then "
        "clipped to [0, 1].",
        inputs=[
            Input("image", "IMAGE", tooltip="The images to sharpen."),
            _radius_input("sharpen_radius"),
            Input(
                "sigma",
                "FLOAT",
                default=1.0,
                min=0.1,
                max=10.0,
                step=0.01,
                tooltip="The Gaussian's width, relative to the radius.",
            ),
            Input(
                "alpha",
                "FLOAT",
                default=1.0,
                min=0.0,
                max=5.0,
                step=0.01,
                tooltip="The strength: the neighbours' weights are -10 alpha times the Gaussian's.",
            ),
        ],
        outputs=[Output("IMAGE", tooltip="The sharpened images.")],
    )

    def run(self, ctx: NodeContext, image: Tensor, sharpen_radius: int, sigma: float, alpha: float) -> tuple:
        kernel = gaussian_kernel(sharpen_radius, sigma) * -(alpha * 10)
        centre = sharpen_radius
        kernel[centre, centre] += 1.0 - kernel.sum()  # the weights sum to 1: flat areas keep their value
        return (_filter(image, kernel).clamp(0, 1),)


COMPOSE_NODES: tuple[type[Node], ...] = (
    LatentComposite,
    LatentCompositeMasked,
    LatentBlend,
    LatentCrop,
    LatentFlip,
    LatentRotate,
    ImageCompositeMasked,
    ImageBatch,
    ImageInvert,
    ImageCrop,
    ImageBlur,
    ImageSharpen,
)
