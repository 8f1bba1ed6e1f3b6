"""lessons/round_trip.py: an image through the embedded model's VAE and back."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.imaging import pil_to_bchw_signed
from atelier.lessons.round_trip import fit_for_vae, round_trip
from atelier.pipeline import encode
from tests.lessons.scenes import scene


def test_the_latent_holds_48_times_fewer_numbers(embedded):
    trip = round_trip(embedded.vae, scene((220, 30, 30), 136))
    assert trip.original.size == trip.reconstruction.size == (136, 136) and trip.latent.shape == (4, 17, 17)
    assert (trip.pixel_values, trip.latent_values, trip.ratio_values, trip.ratio_bytes_fp16) == (
        55488,
        1156,
        48.0,
        24.0,
    )
    # The latent is the posterior's mean of the fitted picture, in RAW units: the same call img2img makes.
    assert torch.equal(trip.latent, encode(embedded.vae, pil_to_bchw_signed(trip.original))[0])


def test_the_loss_is_measured_on_the_8_bit_pixels(embedded):
    trip = round_trip(embedded.vae, scene((220, 30, 30), 136))
    error = np.asarray(trip.reconstruction, np.float64) - np.asarray(trip.original, np.float64)
    assert trip.mean_abs_error == pytest.approx(np.abs(error).mean())
    assert trip.psnr_db == pytest.approx(10 * math.log10(255**2 / (error**2).mean()))
    # The embedded VAE keeps a red disc on grass well (27.2 dB, 9.6/255 on average): the shapes, not every pixel.
    assert 25 < trip.psnr_db < 40 and 3 < trip.mean_abs_error < 15
    again = round_trip(embedded.vae, scene((220, 30, 30), 136))
    assert again.reconstruction.tobytes() == trip.reconstruction.tobytes()  # deterministic: no sampling


@pytest.mark.parametrize(
    ("size", "max_side", "fitted"),
    [((136, 136), 512, (136, 136)), ((600, 300), 512, (512, 256)), ((100, 30), 512, (96, 24)), ((5, 5), 512, (8, 8))],
)
def test_fit_for_vae_shrinks_and_crops_to_multiples_of_8(size, max_side, fitted):
    image = fit_for_vae(Image.new("RGBA", size, (10, 20, 30, 40)), max_side)
    assert image.size == fitted and image.mode == "RGB"
