"""graph/resize.py: the sizes `resize` picks, each method against a hand-computed or library case, and slerp and
bislerp against cases worked out on paper (two orthogonal unit vectors, whose in-betweens stay on the circle)."""

import math

import pytest
import torch
import torch.nn.functional as F

from atelier.graph.resize import CROP, UPSCALE_IMAGE, UPSCALE_LATENT, bislerp, resize, resize_image, slerp

METHODS = sorted(set(UPSCALE_LATENT) | set(UPSCALE_IMAGE))


def picture(b: int = 1, c: int = 3, h: int = 6, w: int = 10) -> torch.Tensor:
    """Seeded values in [0, 1], (B, C, H, W), as images are (lanczos takes nothing else)."""
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


# ---- sizes -----------------------------------------------------------------------------------------------------


def test_the_option_lists_match_comfyui():
    assert UPSCALE_LATENT == ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert UPSCALE_IMAGE == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert CROP == ["disabled", "center"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_asked_size(method):
    for width, height in ((20, 12), (5, 3), (10, 6), (7, 13)):
        assert resize(picture(b=2), width, height, method, "disabled").shape == (2, 3, height, width)


def test_a_zero_side_keeps_the_aspect_ratio():
    x = picture(h=6, w=10)
    assert resize(x, 0, 0, "bilinear", "disabled") is x  # nothing asked: the very same tensor
    assert resize(x, 0, 3, "bilinear", "disabled").shape[-2:] == (3, 5)
    assert resize(x, 25, 0, "bilinear", "disabled").shape[-2:] == (15, 25)
    assert resize(x, 0, 1, "bilinear", "disabled").shape[-2:] == (1, 2)  # 10 * 1 / 6 = 1.67, rounded
    assert resize(picture(h=100, w=1), 0, 10, "bilinear", "disabled").shape[-2:] == (10, 1)  # never 0 wide


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"])
def test_the_same_size_is_the_identity(method):
    x = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(1))  # a latent: any sign
    assert torch.allclose(resize(x, 7, 5, method, "disabled"), x, atol=1e-5)


def test_lanczos_at_the_same_size_only_rounds_to_8_bits():
    x = picture()
    y = resize(x, 10, 6, "lanczos", "disabled")
    assert y.dtype == torch.float32 and (y - x).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal((y * 255).round(), y * 255)  # whole steps of 1/255


def test_center_crop_cuts_equal_strips_off_the_long_sides():
    wide = torch.arange(32.0).reshape(1, 1, 4, 8)
    assert torch.equal(resize(wide, 4, 4, "nearest-exact", "center"), wide[..., 2:6])
    tall = torch.arange(32.0).reshape(1, 1, 8, 4)
    assert torch.equal(resize(tall, 4, 4, "nearest-exact", "center"), tall[..., 2:6, :])
    assert torch.equal(resize(wide, 8, 4, "nearest-exact", "center"), wide)  # same aspect ratio: no cut
    # disabled squeezes the whole width in instead: every other column
    assert torch.equal(resize(wide, 4, 4, "nearest-exact", "disabled"), wide[..., 1::2])


# ---- the methods -----------------------------------------------------------------------------------------------


def test_nearest_exact_doubles_each_pixel():
    x = picture(h=3, w=4)
    assert torch.equal(resize(x, 8, 6, "nearest-exact", "disabled"), x.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_area_averages_the_pixels_each_new_one_covers():
    x = picture(h=6, w=10)
    assert torch.allclose(resize(x, 5, 3, "area", "disabled"), F.avg_pool2d(x, 2))


def test_bilinear_samples_between_pixel_centres():
    # Output pixel i of 4 samples input position (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1].
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    assert torch.allclose(resize(x, 4, 1, "bilinear", "disabled").flatten(), torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_resize_image_takes_bhwc_and_clamps_bicubic_overshoot():
    edge = torch.zeros(1, 4, 4, 3)  # IMAGE (B, H, W, C): black left half, white right half
    edge[:, :, 2:] = 1.0
    overshoot = resize(edge.permute(0, 3, 1, 2), 16, 16, "bicubic", "disabled")
    assert overshoot.max() > 1.0 and overshoot.min() < 0.0  # bicubic rings at a sharp edge
    image = resize_image(edge, 16, 8, "bicubic")
    assert image.shape == (1, 8, 16, 3) and image.min() == 0.0 and image.max() == 1.0
    assert torch.equal(image, overshoot.clamp(0, 1).permute(0, 2, 3, 1)[:, ::2])  # every row is alike


# ---- slerp and bislerp -----------------------------------------------------------------------------------------


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def vectors(*rows: list[float]) -> torch.Tensor:
    """Channel vectors (N, C, 1, 1): slerp works along dim 1."""
    return torch.tensor(rows).view(len(rows), -1, 1, 1)


def test_slerp_turns_along_the_circle_and_blends_the_length():
    a, b = vectors([1.0, 0.0]), vectors([0.0, 3.0])  # a quarter turn apart, lengths 1 and 3
    for t in (0.0, 0.25, 0.5, 1.0):
        # the direction turns t of the way (t * 90 degrees); the length goes linearly from 1 to 3
        expected = vectors([(1 + 2 * t) * c for c in unit(t * math.pi / 2)])
        assert torch.allclose(slerp(a, b, torch.tensor(t)), expected, atol=1e-6), t
    lerp = 0.5 * a + 0.5 * b
    assert lerp.norm() < 1.6 < slerp(a, b, torch.tensor(0.5)).norm()  # a plain blend cuts the corner


def test_slerp_of_parallel_vectors_is_a_lerp():
    a, b = vectors([2.0, 0.0]), vectors([4.0, 0.0])  # sin(omega) = 0: the unit vectors are lerped instead
    assert torch.allclose(slerp(a, b, torch.tensor(0.25)), vectors([2.5, 0.0]))


def test_bislerp_by_hand():
    # Two latent pixels, channel vectors (1, 0) and (0, 1); 2 -> 4 wide samples positions 0, 0.25, 0.75, 1
    # (see the bilinear case), so the in-betweens lie at 22.5 and 67.5 degrees, on the unit circle.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # (B, C, H, W): column 0 = (1, 0)
    out = bislerp(x, 4, 1)
    expected = torch.tensor([unit(0.0), unit(math.pi / 8), unit(3 * math.pi / 8), unit(math.pi / 2)]).T
    assert out.shape == (1, 2, 1, 4) and torch.allclose(out[0, :, 0], expected, atol=1e-6)
    assert torch.equal(resize(x, 4, 1, "bislerp", "disabled"), out)


def test_bislerp_keeps_the_length_that_bilinear_loses():
    # Random directions of length 1, as a latent's pixels have similar norms: upscaled 2x, bislerp keeps every
    # pixel on the sphere, bilinear pulls the in-betweens inside it (a blend of unrelated vectors shrinks).
    x = F.normalize(torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2)), dim=1)
    slerped, blended = bislerp(x, 12, 12).norm(dim=1), resize(x, 12, 12, "bilinear", "disabled").norm(dim=1)
    assert torch.allclose(slerped, torch.ones_like(slerped), atol=1e-4)
    assert blended.min() < 0.9 and blended.mean() < slerped.mean() - 0.05


def test_bislerp_keeps_the_corners_and_takes_half_precision():
    x = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(3))
    out = bislerp(x.half(), 10, 9)
    assert out.dtype == torch.float32 and out.shape == (2, 4, 9, 10)
    # positions clamp to the edges, so each output corner is the input corner
    for ys, xs in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert torch.allclose(out[..., ys, xs], x.half().float()[..., ys, xs], atol=1e-5)
