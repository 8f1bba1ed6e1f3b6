"""graph/nodes/compose.py without a model: each latent and image tool against values worked out by hand from what
ComfyUI's code does (nodes.py: LatentComposite, LatentBlend, LatentCrop, LatentFlip, LatentRotate, ImageInvert,
ImageBatch; comfy_extras/nodes_mask.py: LatentCompositeMasked, ImageCompositeMasked; nodes_images.py: ImageCrop;
nodes_post_processing.py: ImageBlur, ImageSharpen)."""

from __future__ import annotations

import math

import torch

from atelier.graph.nodes.compose import (
    ImageBatch,
    ImageBlur,
    ImageCompositeMasked,
    ImageCrop,
    ImageInvert,
    ImageSharpen,
    LatentBlend,
    LatentComposite,
    LatentCompositeMasked,
    LatentCrop,
    LatentFlip,
    LatentRotate,
)


class QuietContext:
    node_id, prompt, extra_pnginfo = "1", {}, None

    def progress(self, value, total) -> None: ...

    def preview(self, image) -> None: ...

    def check_interrupt(self) -> None: ...


CTX = QuietContext()


def latent(*shape: int, value: float = 0.0) -> dict:
    return {"samples": torch.full(shape, value)}


# ---- latents -----------------------------------------------------------------------------------------------------


def test_latent_composite_pastes_at_pixels_over_8_and_cuts_at_the_edge():
    (out,) = LatentComposite().run(CTX, latent(1, 4, 8, 8), latent(1, 4, 4, 4, value=1.0), 16, 8, 0)
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 1:5, 2:6] = 1.0  # x = 16 px -> column 2, y = 8 px -> row 1
    assert torch.equal(out["samples"], expected)
    (cut,) = LatentComposite().run(CTX, latent(1, 4, 8, 8), latent(1, 4, 4, 4, value=1.0), 48, 0, 0)
    assert cut["samples"][0, 0, :4, 6:].eq(1).all() and cut["samples"].sum() == 4 * 4 * 2  # 2 columns fit


def test_latent_composite_feathers_only_the_inner_edges():
    # feather 16 px = 2 latent pixels: a ramp (t + 1) / 2 = 0.5, 1 from each edge inside the destination,
    # multiplied where two edges meet (corners 0.25). Pasting ones onto zeros shows the mask itself.
    (out,) = LatentComposite().run(CTX, latent(1, 4, 8, 8), latent(1, 4, 4, 4, value=1.0), 16, 16, 16)
    ramp = torch.tensor([0.5, 1.0, 1.0, 0.5])
    assert torch.allclose(out["samples"][0, 0, 2:6, 2:6], ramp[:, None] * ramp[None, :])
    # At the top-left corner of the canvas those two edges stay hard: only the bottom and right ones fade.
    (corner,) = LatentComposite().run(CTX, latent(1, 4, 8, 8), latent(1, 4, 4, 4, value=1.0), 0, 0, 16)
    ramp = torch.tensor([1.0, 1.0, 1.0, 0.5])
    assert torch.allclose(corner["samples"][0, 0, :4, :4], ramp[:, None] * ramp[None, :])


def test_latent_composite_masked_uses_the_mask_at_the_sources_size():
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0  # the left half, in pixels; bilinear to 4x4 latent pixels: columns 0, 1
    (out,) = LatentCompositeMasked().run(CTX, latent(1, 4, 4, 4), latent(1, 4, 4, 4, value=2.0), 0, 0, False, mask)
    expected = torch.zeros(1, 4, 4, 4)
    expected[..., :2] = 2.0
    assert torch.equal(out["samples"], expected)
    # No mask: the whole source; resize_source stretches a 2x2 source over the 4x4 destination.
    (whole,) = LatentCompositeMasked().run(CTX, latent(2, 4, 4, 4), latent(1, 4, 2, 2, value=3.0), 0, 0, True)
    assert torch.equal(whole["samples"], torch.full((2, 4, 4, 4), 3.0))  # repeated to the destination's batch


def test_latent_blend_weights_the_first_by_the_factor():
    a, b = latent(1, 4, 2, 2, value=1.0), latent(1, 4, 2, 2, value=5.0)
    (out,) = LatentBlend().run(CTX, a, b, 0.25)
    assert torch.allclose(out["samples"], torch.full((1, 4, 2, 2), 0.25 * 1 + 0.75 * 5))
    (resized,) = LatentBlend().run(CTX, latent(1, 4, 4, 4, value=1.0), latent(1, 4, 2, 2, value=5.0), 0.5)
    assert resized["samples"].shape == (1, 4, 4, 4) and torch.allclose(
        resized["samples"], torch.full((1, 4, 4, 4), 3.0)
    )


def test_latent_crop_keeps_8_latent_pixels_inside():
    s = torch.arange(16 * 16.0).reshape(1, 1, 16, 16)
    (out,) = LatentCrop().run(CTX, {"samples": s}, 64, 64, 40, 16)
    assert torch.equal(out["samples"], s[:, :, 2:10, 5:13])  # x = 40 px -> 5, y = 16 px -> 2, 8 x 8 kept
    (clamped,) = LatentCrop().run(CTX, {"samples": s}, 512, 512, 120, 0)
    assert torch.equal(clamped["samples"], s[:, :, 0:16, 8:16])  # x 15 > 16 - 8: moved back to 8


def test_latent_flip_and_rotate():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    (v,) = LatentFlip().run(CTX, {"samples": s}, "x-axis: vertically")
    (h,) = LatentFlip().run(CTX, {"samples": s}, "y-axis: horizontally")
    assert v["samples"][0, 0].tolist() == [[3, 4], [1, 2]] and h["samples"][0, 0].tolist() == [[2, 1], [4, 3]]
    turned = {r: LatentRotate().run(CTX, {"samples": s}, r)[0]["samples"][0, 0].tolist()
              for r in ["none", "90 degrees", "180 degrees", "270 degrees"]}  # fmt: skip
    assert turned == {"none": [[1, 2], [3, 4]], "90 degrees": [[3, 1], [4, 2]],  # clockwise
                      "180 degrees": [[4, 3], [2, 1]], "270 degrees": [[2, 4], [1, 3]]}  # fmt: skip
    wide = torch.zeros(1, 4, 2, 6)
    assert LatentRotate().run(CTX, {"samples": wide}, "90 degrees")[0]["samples"].shape == (1, 4, 6, 2)


# ---- images ------------------------------------------------------------------------------------------------------


def test_image_composite_masked_pastes_at_pixels_and_drops_the_sources_alpha():
    dest, src = torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 4)  # an RGBA source onto an RGB destination
    (out,) = ImageCompositeMasked().run(CTX, dest, src, 1, 2, False)
    expected = torch.zeros(1, 4, 4, 3)
    expected[:, 2:4, 1:3] = 1.0
    assert torch.equal(out, expected)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])  # at the source's size: no resampling
    (masked,) = ImageCompositeMasked().run(CTX, dest, torch.ones(1, 2, 2, 3), 0, 0, False, mask)
    assert masked[0, :2, :2, 0].tolist() == [[1.0, 0.0], [0.0, 0.5]]


def test_image_batch_resizes_the_second_to_the_first():
    a, b = torch.rand(1, 8, 8, 3), torch.full((2, 4, 4, 3), 0.25)
    (out,) = ImageBatch().run(CTX, a, b)
    assert out.shape == (3, 8, 8, 3) and torch.equal(out[0], a[0]) and torch.allclose(out[1:], torch.tensor(0.25))
    (same,) = ImageBatch().run(CTX, a, a)
    assert torch.equal(same, torch.cat([a, a]))


def test_image_invert_and_crop():
    img = torch.rand(2, 6, 5, 3)
    assert torch.equal(ImageInvert().run(CTX, img)[0], 1.0 - img)
    assert torch.equal(ImageCrop().run(CTX, img, 2, 3, 1, 2)[0], img[:, 2:5, 1:3])
    assert torch.equal(ImageCrop().run(CTX, img, 512, 512, 99, 99)[0], img[:, 5:, 4:])  # the corner stays inside


def impulse(background: float, bump: float) -> torch.Tensor:
    img = torch.full((1, 5, 5, 3), background)
    img[0, 2, 2] += bump
    return img


# The 3x3 Gaussian of radius 1 and sigma 1 on ComfyUI's grid linspace(-1, 1, 3): weight exp(-d^2 / 2) with d^2 =
# 0 (centre), 1 (edges), 2 (corners), normalised by their sum 1 + 4 e^-0.5 + 4 e^-1.
TOTAL = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
CENTRE, EDGE, CORNER = 1 / TOTAL, math.exp(-0.5) / TOTAL, math.exp(-1) / TOTAL


def test_blur_spreads_an_impulse_by_the_gaussian():
    (out,) = ImageBlur().run(CTX, impulse(0.0, 1.0), 1, 1.0)
    assert torch.allclose(out[0, 1:4, 1:4, 0], torch.tensor([[CORNER, EDGE, CORNER], [EDGE, CENTRE, EDGE],
                                                             [CORNER, EDGE, CORNER]]), atol=1e-6)  # fmt: skip
    flat = torch.full((1, 5, 5, 3), 0.3)
    assert torch.allclose(ImageBlur().run(CTX, flat, 2, 1.0)[0], flat)  # mirrored borders: no dark frame


def test_sharpen_pushes_a_pixel_away_from_its_neighbours():
    # Kernel: -10 alpha times the Gaussian, its centre raised so that the weights sum to 1:
    # centre 1 + 10 - 10 CENTRE, edges -10 EDGE. On 0.5 with a bump of 0.05: 0.5 + 0.05 * weight.
    (out,) = ImageSharpen().run(CTX, impulse(0.5, 0.05), 1, 1.0, 1.0)
    assert math.isclose(float(out[0, 2, 2, 0]), 0.5 + 0.05 * (11 - 10 * CENTRE), rel_tol=1e-5)
    assert math.isclose(float(out[0, 2, 1, 0]), 0.5 - 0.05 * 10 * EDGE, rel_tol=1e-5)
    assert float(ImageSharpen().run(CTX, impulse(0.5, 0.5), 1, 1.0, 1.0)[0].max()) == 1.0  # clipped to [0, 1]
    flat = torch.full((1, 5, 5, 3), 0.3)
    assert torch.allclose(ImageSharpen().run(CTX, flat, 1, 1.0, 2.0)[0], flat, atol=1e-6)
