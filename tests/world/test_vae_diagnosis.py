"""The VAE diagnosis's pure pieces: damage that keeps what it should, PSNR, object masks, the metric per group."""

from __future__ import annotations

import math

import numpy as np
import torch

from atelier.world.v2.scene import Scene, SceneObject, render
from atelier.world.vae_diagnosis import (
    accuracy_by,
    down_up,
    gaussian_blur,
    gaussian_kernel,
    gaussian_noise,
    jpeg,
    keep_objects,
    misreadings_of,
    nearest_in_psnr,
    object_crop,
    object_masks,
    on_8_bits,
    optimised_latents,
    pooled_psnr,
    psnr_of_mse,
    sheet,
    squared_errors,
)


def _scene() -> Scene:
    """A cat top left and two stars in the middle row, on white: three objects in cells apart."""
    return Scene(
        (
            SceneObject("cat", "orange", "big", (0, 0)),
            SceneObject("star", "yellow", "small", (1, 1)),
            SceneObject("star", "yellow", "small", (1, 2)),
        ),
        "white",
    )


def test_the_gaussian_kernel_sums_to_one_is_symmetric_and_has_its_standard_deviation():
    k = gaussian_kernel(1.0)
    x = torch.arange(len(k)) - len(k) // 2
    assert len(k) == 7 and torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.equal(k, k.flip(0))
    assert abs(math.sqrt((k * x**2).sum().item()) - 1.0) < 0.02  # radius 3 sigma keeps 99.7% of the mass


def test_damage_keeps_a_flat_image_and_lands_on_the_8_bit_grid():
    flat = torch.full((2, 3, 16, 16), 0.2)
    on_grid = on_8_bits(flat)
    for damaged in (gaussian_blur(flat, 1.5), down_up(flat), jpeg(flat, 50)):
        assert damaged.shape == flat.shape
        assert (damaged - on_grid).abs().max() <= 2 / 127.5  # JPEG may move a level or two; the others none
        assert torch.equal(on_8_bits(damaged), damaged)


def test_blur_softens_an_edge_and_keeps_its_mean():
    step = torch.zeros(1, 3, 8, 16) - 1
    step[..., 8:] = 1  # black left half, white right half
    soft = gaussian_blur(step, 1.0)
    assert soft[0, 0, 4, 7] > -1 and soft[0, 0, 4, 8] < 1  # both sides of the edge now grey
    assert torch.equal(soft[..., 0], step[..., 0])  # far from the edge nothing moves
    assert abs(soft.mean().item()) < 1e-2


def test_noise_is_seeded_and_of_its_size():
    grey = torch.zeros(1, 3, 64, 64)
    a, b = gaussian_noise(grey, 4.0, seed=1), gaussian_noise(grey, 4.0, seed=1)
    assert torch.equal(a, b)
    assert abs((a * 127.5).std().item() - 4.0) < 0.2


def test_psnr_of_the_8_bit_scale():
    assert psnr_of_mse(0.0) == math.inf
    assert psnr_of_mse(255.0**2) == 0.0
    assert abs(psnr_of_mse(1.0) - 48.13) < 0.01
    a, b = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    b[0, :, 0, 0] = 2 / 127.5  # two levels off on one pixel of four
    assert torch.allclose(squared_errors(a, b)[0], torch.tensor([[4.0, 0.0], [0.0, 0.0]]))


def test_each_object_mask_is_its_own_pixels():
    scene = _scene()
    masks = object_masks(scene, render, 64)
    assert len(masks) == 3 and all(m.any() for m in masks)
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()
    ys, xs = np.nonzero(masks[0])
    assert ys.max() < 64 // 3 + 4 and xs.max() < 64 // 3 + 4  # the cat stays in the top left cell
    rest = ~(masks[0] | masks[1] | masks[2])
    assert (render(scene, 64)[rest] == render(Scene((), "white"), 64)[rest]).all()  # the rest is the backdrop


def test_the_metric_per_group_counts_only_that_groups_objects():
    scene = _scene()
    read = Scene((SceneObject("cat", "orange", "big", (0, 0)), SceneObject("sun", "yellow", "small", (1, 1))), "white")
    by_kind = accuracy_by([read], [scene], lambda s, o: o.kind)
    assert by_kind == {"cat": (1.0, 1), "star": (0.0, 2)}  # one star read as a sun, the other not seen
    assert accuracy_by([read], [scene], lambda s, o: o.size) == {"big": (1.0, 1), "small": (0.0, 2)}
    assert keep_objects([scene], lambda s, o: o.kind == "cat")[0].objects == scene.objects[:1]
    assert sorted(misreadings_of([read], [scene], "star")) == [("empty", 1), ("sun", 1)]


def test_the_sheet_has_a_cell_per_crop():
    picture = render(_scene(), 64)
    crop = object_crop(picture, _scene().objects[0], side=16)
    assert crop.shape == (16, 16, 3)
    image = sheet([("cat", [crop, crop]), ("star", [crop, crop])], ["a", "b"], zoom=2)
    assert image.size == (150 + 2 * 32, 16 + 2 * 32)


def test_psnr_is_pooled_over_a_groups_objects_and_the_nearest_blur_is_found():
    scene = _scene()
    triples = [(scene, scene.objects[0], 1.0), (scene, scene.objects[1], 4.0), (scene, scene.objects[2], 2.0)]
    pooled = pooled_psnr(triples, lambda s, o: o.kind)
    assert abs(pooled["cat"] - psnr_of_mse(1.0)) < 1e-9 and abs(pooled["star"] - psnr_of_mse(3.0)) < 1e-9
    report = {"conditions": {"round trip": {"psnr": 27.5}, "blur 1 px": {"psnr": 28.6}, "blur 1.25 px": {"psnr": 27.2}}}
    assert nearest_in_psnr(report, "round trip") == "blur 1.25 px"
    assert nearest_in_psnr(report, "round trip", prefix="jpeg") is None


def test_optimised_latents_lower_the_vae_loss_and_leave_the_decoder_alone():
    from atelier.models.vae import VAE
    from atelier.world.train.shapes import EmbeddedShapes

    torch.manual_seed(0)
    vae = VAE(EmbeddedShapes.tiny().vae).eval()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    z, losses = optimised_latents(vae, images, steps=5)
    assert z.shape == (2, 4, 4, 4) and losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert all(p.requires_grad for p in vae.parameters())
