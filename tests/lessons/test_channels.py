"""lessons/channels.py: a latent's channels as greys, and their statistics."""

import pytest
import torch

from atelier.errors import InputError
from atelier.lessons.channels import NORMALIZE, ChannelStats, channel_greys, channel_stats


@pytest.fixture
def latent() -> torch.Tensor:
    z = torch.zeros(4, 2, 3)
    z[0] = torch.tensor([[-2.0, 0.0, 1.0], [2.0, 0.5, -1.0]])
    z[1] = 3.0  # a flat channel
    z[3] = torch.tensor([[4.0, -4.0, 0.0], [0.0, 0.0, 0.0]])
    return z


def test_shared_symmetric_puts_zero_at_mid_grey_and_the_largest_value_at_white(latent):
    grey = channel_greys(latent)  # the default
    assert grey.shape == (4, 2, 3) and NORMALIZE[0] == "shared symmetric"
    assert grey[0].tolist() == [[0.25, 0.5, 0.625], [0.75, 0.5625, 0.375]]  # m = 4, the largest |v| of all
    assert grey[1].unique().tolist() == [0.875] and grey[2].unique().tolist() == [0.5]
    assert grey[3, 0].tolist() == [1.0, 0.0, 0.5]


def test_per_channel_stretches_each_from_its_min_to_its_max(latent):
    grey = channel_greys(latent, "per channel")
    assert grey[0].tolist() == [[0.0, 0.5, 0.75], [1.0, 0.625, 0.25]]
    assert grey[1].unique().tolist() == [0.5]  # flat: mid-grey, not a division by zero
    with pytest.raises(InputError, match=r"^normalize must be one of shared symmetric, per channel, got 'auto'\.$"):
        channel_greys(latent, "auto")


@pytest.mark.parametrize("normalize", NORMALIZE)
def test_the_pictures_do_not_depend_on_the_latent_units(normalize):
    raw = torch.randn(4, 16, 16) * 2.7  # RAW VAE units; the UNet sees RAW x scaling_factor
    assert torch.allclose(channel_greys(raw, normalize), channel_greys(raw * 0.18215, normalize), atol=1e-6)


def test_stats_of_each_channel(latent):
    stats = channel_stats(latent)
    assert stats[1] == ChannelStats(mean=3.0, std=0.0, min=3.0, max=3.0)
    assert stats[3] == ChannelStats(mean=0.0, std=pytest.approx((32 / 6) ** 0.5), min=-4.0, max=4.0)  # population
    z = torch.randn(4, 8, 8, dtype=torch.float64)
    for c, s in enumerate(channel_stats(z)):
        assert (s.mean, s.std) == pytest.approx((float(z[c].mean()), float(z[c].std(unbiased=False))))
