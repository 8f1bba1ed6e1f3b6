"""Image tensor conversions: known values, exact 8-bit round trips, layouts, and PIL on both sides."""

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.imaging import (
    bchw_signed_to_bhwc_unit,
    bchw_signed_to_pil,
    bhwc_uint8_to_bchw_signed,
    bhwc_uint8_to_pil,
    bhwc_unit_to_bchw_signed,
    bhwc_unit_to_pil,
    pil_to_bchw_signed,
    pil_to_bhwc_uint8,
    pil_to_bhwc_unit,
    pil_to_hw_unit,
    signed_to_uint8,
    signed_to_unit,
    uint8_to_signed,
    uint8_to_unit,
    unit_to_signed,
    unit_to_uint8,
)

EVERY_BYTE = torch.arange(256, dtype=torch.uint8)


def test_known_values_of_each_range():
    ends = torch.tensor([0, 255], dtype=torch.uint8)
    assert uint8_to_signed(ends).tolist() == [-1.0, 1.0]
    assert uint8_to_unit(ends).tolist() == [0.0, 1.0]
    assert unit_to_signed(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]
    assert signed_to_unit(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]
    # 0 in [-1, 1] is 127.5 in 8 bits: rounded half to even, 128; 0.5 in [0, 1] likewise.
    assert signed_to_uint8(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert unit_to_uint8(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]


def test_going_to_8_bits_clamps_first():
    assert signed_to_uint8(torch.tensor([-3.0, 2.0])).tolist() == [0, 255]
    assert unit_to_uint8(torch.tensor([-0.5, 1.5])).tolist() == [0, 255]
    assert signed_to_unit(torch.tensor([-1.2, 1.2])).tolist() == [0.0, 1.0]
    assert signed_to_uint8(torch.zeros(1)).dtype == unit_to_uint8(torch.zeros(1)).dtype == torch.uint8


def test_every_8_bit_value_survives_both_round_trips():
    assert torch.equal(signed_to_uint8(uint8_to_signed(EVERY_BYTE)), EVERY_BYTE)
    assert torch.equal(unit_to_uint8(uint8_to_unit(EVERY_BYTE)), EVERY_BYTE)
    assert torch.equal(signed_to_uint8(unit_to_signed(uint8_to_unit(EVERY_BYTE))), EVERY_BYTE)


def test_the_ranges_agree_with_the_formulas_they_replace():
    """Bit for bit what numpy gave (float32 / 127.5 - 1 and / 255), so images do not shift by one level."""
    as_numpy = np.arange(256, dtype=np.float32)
    assert np.array_equal(uint8_to_signed(EVERY_BYTE).numpy(), as_numpy / 127.5 - 1.0)
    assert np.array_equal(uint8_to_unit(EVERY_BYTE).numpy(), as_numpy / 255.0)
    assert uint8_to_signed(EVERY_BYTE).dtype == uint8_to_unit(EVERY_BYTE).dtype == torch.float32


def test_image_to_vae_and_back_moves_channels_and_range():
    image = torch.rand(2, 5, 7, 3)  # (B, H, W, C) in [0, 1]
    vae = bhwc_unit_to_bchw_signed(image)
    assert vae.shape == (2, 3, 5, 7)
    assert vae[1, 2, 4, 6] == image[1, 4, 6, 2] * 2 - 1  # channel c of pixel (y, x) lands at [c, y, x]
    assert vae.min() >= -1 and vae.max() <= 1
    back = bchw_signed_to_bhwc_unit(vae)
    assert back.shape == image.shape and torch.allclose(back, image, atol=1e-6)


def test_rendered_uint8_images_to_vae_input_from_numpy_or_torch():
    rendered = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)  # (B, H, W, C), as renders
    for images in (rendered, torch.from_numpy(rendered)):
        vae = bhwc_uint8_to_bchw_signed(images)
        assert vae.shape == (2, 3, 5, 7) and vae.dtype == torch.float32
        assert vae[1, 2, 4, 6] == uint8_to_signed(torch.tensor(rendered[1, 4, 6, 2]))  # channel c of (y, x): [c, y, x]
        # bit for bit, strides included, the formula the world's training and evaluation wrote inline
        inline = torch.from_numpy(rendered).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        assert torch.equal(vae, inline) and vae.stride() == inline.stride()
    assert np.array_equal(signed_to_uint8(bhwc_uint8_to_bchw_signed(rendered)).permute(0, 2, 3, 1).numpy(), rendered)


def pattern(height: int = 4, width: int = 6) -> Image.Image:
    """An RGB picture whose three channels all differ, so a swapped axis shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 40, y * 60, (x + y) * 20 + 5], axis=-1).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(rgb)


def test_pil_to_tensors_in_each_layout():
    picture = pattern()
    array = np.asarray(picture)  # (4, 6, 3) uint8
    as_bytes = pil_to_bhwc_uint8(picture)
    assert as_bytes.shape == (1, 4, 6, 3) and as_bytes.dtype == torch.uint8
    assert np.array_equal(as_bytes[0].numpy(), array)
    unit = pil_to_bhwc_unit(picture)
    assert unit.shape == (1, 4, 6, 3) and torch.equal(unit, uint8_to_unit(as_bytes))
    signed = pil_to_bchw_signed(picture)
    assert signed.shape == (1, 3, 4, 6) and signed.is_contiguous()
    red, green = signed[0, 0, 0, 1].item(), signed[0, 1, 2, 0].item()  # red = 40 x, green = 60 y
    assert red == pytest.approx(40 / 127.5 - 1) and green == pytest.approx(120 / 127.5 - 1)


def test_tensors_to_pil_give_back_the_picture():
    picture = pattern()
    for back in (
        bhwc_uint8_to_pil(pil_to_bhwc_uint8(picture)),
        bhwc_unit_to_pil(pil_to_bhwc_unit(picture)),
        bchw_signed_to_pil(pil_to_bchw_signed(picture)),
    ):
        assert len(back) == 1 and back[0].mode == "RGB" and back[0].size == (6, 4)
        assert np.array_equal(np.asarray(back[0]), np.asarray(picture))


def test_a_batch_gives_one_pil_image_each_and_alpha_is_dropped():
    rgba = torch.zeros(3, 2, 2, 4)
    rgba[1, ..., 0] = 1.0  # the second image is red
    rgba[..., 3] = 0.25
    images = bhwc_unit_to_pil(rgba)
    assert [im.mode for im in images] == ["RGB"] * 3
    assert np.asarray(images[1])[0, 0].tolist() == [255, 0, 0]
    assert pil_to_bhwc_uint8(Image.new("RGBA", (2, 2), (9, 8, 7, 0))).flatten().tolist() == [9, 8, 7] * 4


def test_vae_output_to_pil_clamps_a_tensor_that_needs_grad():
    decoded = torch.tensor([-1.5, 0.0, 1.5]).view(1, 3, 1, 1).requires_grad_()
    [image] = bchw_signed_to_pil(decoded)
    assert np.asarray(image)[0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_one_channel_pictures_become_masks(mode):
    band = Image.fromarray(np.array([[0, 51], [255, 102]], dtype=np.uint8)).convert(mode)
    mask = pil_to_hw_unit(band)
    assert mask.shape == (2, 2) and mask.dtype == torch.float32
    assert torch.allclose(mask, torch.tensor([[0.0, 0.2], [1.0, 0.4]]))
