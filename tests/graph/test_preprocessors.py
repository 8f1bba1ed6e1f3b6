"""The offline ControlNet preprocessors (graph/nodes/preprocessors.py): Canny against a loop-by-loop reference
built on scipy.ndimage, and its textbook behaviour on drawn shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atelier.graph.nodes.preprocessors import Canny, ScribbleFromEdges, canny, hysteresis

ndimage = pytest.importorskip("scipy.ndimage")


def reference_canny(rgb: np.ndarray, low: float, high: float) -> np.ndarray:
    """Canny written out pixel by pixel: scipy's Gaussian (5 taps, mirrored borders) and Sobel (replicated
    borders), a loop for non-maximum suppression, connected components (8-neighbours) for hysteresis."""
    gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    blurred = ndimage.gaussian_filter(gray, sigma=1.0, truncate=2.0, mode="mirror")  # radius 2: 5x5
    gx = ndimage.sobel(blurred, axis=1, mode="nearest") / 8
    gy = ndimage.sobel(blurred, axis=0, mode="nearest") / 8
    magnitude = np.sqrt(gx**2 + gy**2 + 1e-6)
    h, w = gray.shape
    thin = np.zeros_like(magnitude)
    steps = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]
    for y in range(h):
        for x in range(w):
            dy, dx = steps[round(math.atan2(gy[y, x], gx[y, x]) / (math.pi / 4)) % 8]

            def at(yy, xx):
                return magnitude[yy, xx] if 0 <= yy < h and 0 <= xx < w else 0.0

            m = magnitude[y, x]
            if m > at(y + dy, x + dx) and m >= at(y - dy, x - dx):
                thin[y, x] = m
    labels, _ = ndimage.label(thin > low, structure=np.ones((3, 3)))
    keep = set(np.unique(labels[thin > high])) - {0}
    return np.isin(labels, list(keep)).astype(np.float32)


def drawn_image(h: int = 40, w: int = 52) -> torch.Tensor:
    """A bright square, a faint diagonal band and a little noise: IMAGE (1, H, W, 3)."""
    g = torch.Generator().manual_seed(0)
    img = torch.full((h, w, 3), 0.2)
    img[8:28, 10:30] = torch.tensor([0.9, 0.8, 0.7])
    for y in range(h):
        img[y, max(0, 36 + y // 3 - 3) : 36 + y // 3 + 3] += 0.25
    return (img + 0.02 * torch.randn(h, w, 3, generator=g)).clamp(0, 1)[None]


@pytest.mark.parametrize(("low", "high"), [(0.4, 0.8), (0.05, 0.2), (0.01, 0.1)])
def test_canny_equals_the_reference(low, high):
    image = drawn_image()
    edges = canny(image.double(), low, high)[0, 0].numpy()
    expected = reference_canny(image[0].double().numpy(), low, high)
    assert (edges != expected).sum() <= 2, np.argwhere(edges != expected)  # ties in float rounding only
    if low < 0.4:
        assert edges.sum() > 40  # the thresholds of the test find edges


def test_canny_outlines_a_square_one_pixel_wide():
    image = torch.zeros(1, 32, 32, 3)
    image[:, 8:24, 8:24] = 1.0
    edges = canny(image, 0.05, 0.15)[0, 0]
    assert edges[16, :].nonzero().flatten().tolist() in ([7, 23], [8, 24], [7, 24], [8, 23])  # left and right sides
    assert edges[0:4].sum() == 0 and edges[:, 0:4].sum() == 0  # nothing far from the square
    assert canny(torch.full((1, 16, 16, 3), 0.5), 0.01, 0.02).sum() == 0  # a flat image has no edges


def test_hysteresis_follows_weak_pixels_only_from_a_strong_one():
    strong = torch.zeros(1, 1, 8, 12, dtype=torch.bool)
    weak = torch.zeros_like(strong)
    strong[0, 0, 2, 1] = True
    weak[0, 0, 2, 1:7] = True  # a chain from the strong pixel, with a diagonal step
    weak[0, 0, 3, 7] = True
    weak[0, 0, 6, 3:10] = True  # a weak chain touching nothing strong
    edges = hysteresis(strong, weak)[0, 0]
    assert edges[2, 1:7].tolist() == [1.0] * 6 and edges[3, 7] == 1.0
    assert edges[6].sum() == 0 and edges.sum() == 7
    # on an image: a faint edge alone is weak everywhere, so it is dropped; a strong one is kept
    faint = torch.zeros(1, 24, 48, 3)
    faint[:, :12] = 0.35  # gradient ~0.11 across the step
    assert canny(faint, 0.05, 0.3).sum() == 0 and canny(faint, 0.05, 0.1)[0, 0, 11:13].sum() == 48  # one row


def test_nodes_give_grey_images_of_the_input_size():
    image = drawn_image()
    (edges,) = Canny().run(None, image, 0.05, 0.2)
    assert edges.shape == (1, 40, 52, 3) and set(edges.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(edges[..., 0], edges[..., 2])
    (scribble,) = ScribbleFromEdges().run(None, image, 0.05, 0.2, 5)
    assert scribble.shape == (1, 40, 52, 3)
    assert scribble.sum() > 2 * edges.sum()  # strokes are thicker than edges
    assert (scribble[..., 0] >= edges[..., 0]).float().mean() > 0.95  # strokes cover the edges (minus specks)
