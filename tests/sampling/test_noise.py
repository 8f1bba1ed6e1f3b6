"""Seeded noise: ComfyUI's numbers, no global random state, seed bounds."""

import pytest
import torch

from atelier.errors import InputError
from atelier.sampling.noise import RANDOM_SEED_LIMIT, SEED_MAX, initial_noise, resolve_seed, seeded_noise_sampler

# torch.manual_seed(0); torch.randn(1, 4, 2, 2), flattened (torch 2.x CPU generator).
SEED_0_FIRST_VALUES = [-1.1258398, -1.1523602, -0.2505786, -0.4338788, 0.8487104, 0.6920092, -0.3160128, -2.1152194]


def test_seed_0_gives_the_known_numbers_and_matches_manual_seed():
    noise = initial_noise(0, (1, 4, 2, 2))
    assert noise.dtype == torch.float32 and noise.device.type == "cpu" and noise.shape == (1, 4, 2, 2)
    torch.testing.assert_close(noise.flatten()[:8], torch.tensor(SEED_0_FIRST_VALUES), atol=1e-7, rtol=0)
    torch.manual_seed(0)
    assert torch.equal(noise, torch.randn(1, 4, 2, 2))  # exactly ComfyUI's manual_seed + randn


def test_noise_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.randn(5)
    torch.manual_seed(123)
    initial_noise(7, (2, 4, 8, 8))
    assert torch.equal(torch.randn(5), expected)


def test_same_seed_same_noise_and_batch_items_differ():
    a, b = initial_noise(42, (3, 4, 8, 8)), initial_noise(42, (3, 4, 8, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert not torch.equal(a, initial_noise(43, (3, 4, 8, 8)))


def test_batch_index_draws_image_by_image_and_picks():
    full = initial_noise(9, (4, 4, 8, 8))  # 4*8*8 values per image: a multiple of 16, so per-image draws = slices
    picked = initial_noise(9, (3, 4, 8, 8), batch_index=[2, 0, 2])
    assert torch.equal(picked, full[[2, 0, 2]])
    with pytest.raises(InputError, match=r"^Batch index must list one non-negative position per latent image"):
        initial_noise(9, (2, 4, 8, 8), batch_index=[0])


def test_seed_bounds():
    top = initial_noise(SEED_MAX, (1, 4, 2, 2))  # torch takes every unsigned 64-bit seed
    torch.manual_seed(SEED_MAX)
    assert torch.equal(top, torch.randn(1, 4, 2, 2))
    message = r"^Seed must be a whole number from 0 to 18446744073709551615 \(or -1 for random\), got "
    for bad in (SEED_MAX + 1, -2, 1.5, "7", True):
        with pytest.raises(InputError, match=message):
            initial_noise(bad, (1, 4, 2, 2))


def test_resolve_seed_draws_a_reportable_seed_for_minus_one():
    assert resolve_seed(5) == 5 and resolve_seed(SEED_MAX) == SEED_MAX
    drawn = {resolve_seed(-1) for _ in range(4)}
    assert all(isinstance(s, int) and 0 <= s < RANDOM_SEED_LIMIT for s in drawn) and len(drawn) > 1
    with pytest.raises(InputError):
        resolve_seed(-3)


def test_noise_sampler_is_seeded_on_the_cpu_and_follows_x():
    x = torch.zeros(2, 4, 8, 8, dtype=torch.float64)
    sampler = seeded_noise_sampler(x, 11)
    first, second = sampler(torch.tensor(3.0), torch.tensor(2.0)), sampler(torch.tensor(2.0), torch.tensor(1.0))
    assert first.dtype == torch.float64 and first.shape == x.shape
    assert not torch.equal(first, second)
    # As in ComfyUI on the CPU: a generator seeded with the seed, drawing x.shape in float32, step after step.
    g = torch.Generator().manual_seed(11)
    assert torch.equal(first, torch.randn(2, 4, 8, 8, generator=g).double())
    assert torch.equal(second, torch.randn(2, 4, 8, 8, generator=g).double())
    assert torch.equal(seeded_noise_sampler(x, 11)(torch.tensor(3.0), torch.tensor(2.0)), first)  # replayable
    assert torch.equal(first.float(), initial_noise(11, x.shape))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_noise_sampler_gives_cpu_numbers_on_gpu():
    x = torch.zeros(1, 4, 8, 8, device="cuda", dtype=torch.float16)
    noise = seeded_noise_sampler(x, 3)(torch.tensor(1.0), torch.tensor(0.5))
    assert noise.device.type == "cuda" and noise.dtype == torch.float16
    assert torch.equal(noise.cpu(), initial_noise(3, x.shape).half())
