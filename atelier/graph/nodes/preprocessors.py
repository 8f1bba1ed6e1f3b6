"""Hint images for ControlNets that need no downloaded weights: Canny edges, and scribbles made from them.

Canny (1986, "A Computational Approach to Edge Detection"), in five steps on the image's brightness:

    1. blur         a 5x5 Gaussian (sigma 1) so that pixel noise does not make edges
    2. gradient     Sobel filters give the brightness slope along x and y; its length is the edge strength
    3. thin         non-maximum suppression: a pixel stays only if it is stronger than both neighbours across
                    the edge (along the gradient), so a blurred edge becomes one pixel wide
    4. threshold    strong edges (> high) are kept; weak ones (low .. high) are candidates
    5. hysteresis   a candidate is kept when it touches a kept pixel (8 neighbours), repeated until nothing changes,
                    so edges are followed through faint stretches while isolated weak dots are dropped

ComfyUI's Canny node runs kornia's implementation with the same steps and defaults (5x5 kernel, sigma 1, Sobel
normalised by 8); thresholds are on the gradient of a [0, 1] brightness.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from atelier.graph.kit import Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output

# --------------------------------------------------------------------------------------------------------------
# Canny, on (B, 1, H, W) brightness in [0, 1]
# --------------------------------------------------------------------------------------------------------------


def brightness(image: Tensor) -> Tensor:
    """IMAGE (B, H, W, 3) -> (B, 1, H, W): the ITU-R 601 luma weights, as kornia's rgb_to_grayscale."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
    return (image[..., :3] @ weights)[:, None]


def gaussian_blur(x: Tensor, size: int = 5, sigma: float = 1.0) -> Tensor:
    """A separable Gaussian blur with reflected borders: (B, 1, H, W) -> same."""
    offsets = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    pad = size // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))  # along x
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, size, 1))  # along y


def sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """The brightness slope (gx, gy), each (B, 1, H, W), by the 3x3 Sobel filters divided by 8 (so a step of 1
    across one pixel gives about 0.5), replicated borders."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device) / 8
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, gx.view(1, 1, 3, 3)), F.conv2d(padded, gx.t().reshape(1, 1, 3, 3))


# The neighbour on the positive side of the gradient for each of the 8 directions (45 degree sectors, starting at
# +x and turning towards +y): (dy, dx). The opposite side is the same offset negated.
_DIRECTIONS = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    """x moved so that out[y, x] = x[y + dy, x + dx], zeros from outside the image."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def non_max_suppression(magnitude: Tensor, gx: Tensor, gy: Tensor) -> Tensor:
    """The magnitude where it is a maximum across the edge (against its two neighbours along the gradient's
    direction, rounded to 45 degrees), 0 elsewhere."""
    angle = torch.atan2(gy, gx)  # (-pi, pi], y down
    sector = torch.round(angle / (math.pi / 4)).long() % 8  # 0..7
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for index, (dy, dx) in enumerate(_DIRECTIONS):
        ahead, behind = _shifted(magnitude, dy, dx), _shifted(magnitude, -dy, -dx)
        keep |= (sector == index) & (magnitude > ahead) & (magnitude >= behind)
    return magnitude * keep


def hysteresis(strong: Tensor, weak: Tensor, max_rounds: int = 10_000) -> Tensor:
    """Grow `strong` (bool) into the 8-connected `weak` pixels touching it, until it stops changing."""
    edges = strong.float()
    candidates = (weak | strong).float()
    for _ in range(max_rounds):
        grown = F.max_pool2d(edges, 3, stride=1, padding=1) * candidates  # any kept neighbour -> kept
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges


def canny(image: Tensor, low: float, high: float) -> Tensor:
    """IMAGE (B, H, W, 3) in [0, 1] -> edges (B, 1, H, W), 1 on an edge and 0 elsewhere."""
    x = gaussian_blur(brightness(image.float()))
    gx, gy = sobel(x)
    magnitude = torch.sqrt(gx**2 + gy**2 + 1e-6)  # eps: kornia's, so a flat image has no NaN direction
    thin = non_max_suppression(magnitude, gx, gy)
    return hysteresis(thin > high, thin > low)


# --------------------------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------------------------


def _threshold(name: str, default: float, tooltip: str) -> Input:
    return Input(name, "FLOAT", default=default, min=0.01, max=0.99, step=0.01, tooltip=tooltip)


LOW = _threshold("low_threshold", 0.4, "Edges weaker than this are dropped; between the two they are kept where "
                 "they continue a strong edge.")  # fmt: skip
HIGH = _threshold("high_threshold", 0.8, "Edges stronger than this are always kept.")


def _as_image(mask: Tensor, like: Tensor) -> Tensor:
    """(B, 1, H, W) in [0, 1] -> IMAGE (B, H, W, 3), grey."""
    return mask.movedim(1, -1).repeat(1, 1, 1, 3).to(like.dtype)


class Canny(Node):
    SCHEMA = NodeSchema(
        name="Canny",
        display_name="Canny",
        category="image/preprocessors",
        description="Finds edges with Canny's detector (blur, Sobel gradient, thinning, two thresholds and edge "
        "following): white edges on black, the hint a Canny ControlNet reads.",
        inputs=[Input("image", "IMAGE", tooltip="The picture to take edges from."), LOW, HIGH],
        outputs=[Output("IMAGE", tooltip="White edges, one pixel wide, on black.")],
    )

    def run(self, ctx: NodeContext, image: Tensor, low_threshold: float, high_threshold: float) -> tuple:
        return (_as_image(canny(image, low_threshold, high_threshold), image),)


class ScribbleFromEdges(Node):
    SCHEMA = NodeSchema(
        name="ScribbleFromEdges",
        display_name="Scribble from Edges",
        category="image/preprocessors",
        description="Turns a picture into a scribble, the hint a scribble ControlNet reads: Canny's edges "
        "thickened into strokes (a max filter) and their smallest specks dropped. Needs no downloaded weights.",
        inputs=[
            Input("image", "IMAGE", tooltip="The picture to draw a scribble of."),
            LOW,
            HIGH,
            Input("thickness", "INT", default=3, min=1, max=15, step=2, tooltip="The width of the strokes, pixels."),
        ],
        outputs=[Output("IMAGE", tooltip="White strokes on black.")],
    )

    def run(
        self, ctx: NodeContext, image: Tensor, low_threshold: float, high_threshold: float, thickness: int
    ) -> tuple:
        edges = canny(image, low_threshold, high_threshold)
        # Specks: an edge pixel with fewer than 2 edge neighbours of its 8 is noise, not a stroke.
        neighbours = F.avg_pool2d(edges, 3, stride=1, padding=1, count_include_pad=False) * 9 - edges
        edges = edges * (neighbours >= 2)
        size = thickness if thickness % 2 else thickness + 1
        strokes = F.max_pool2d(edges, size, stride=1, padding=size // 2)
        return (_as_image(strokes, image),)
