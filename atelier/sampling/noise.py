"""Seeded noise: the same seed gives the same image, on any device, and the same one ComfyUI gives.

ComfyUI draws the starting noise on the CPU from `torch.manual_seed(seed)` followed by `torch.randn(latent shape)`
in float32 (comfy/sample.py, prepare_noise). We draw from a private `torch.Generator` seeded the same way: the
numbers are identical and the global random state is left alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from atelier.errors import InputError

SEED_MAX = 2**64 - 1  # torch generators take any 64-bit unsigned seed; ComfyUI's KSampler allows 0 .. 2^64 - 1
RANDOM_SEED_LIMIT = 2**50  # random seeds stay below this, so they survive a round trip through JavaScript numbers


def check_seed(seed: int) -> int:
    """The seed itself, or InputError if it is not a whole number in 0 .. 2^64 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise InputError(f"Seed must be a whole number from 0 to {SEED_MAX} (or -1 for random), got {seed!r}.")
    return seed


def resolve_seed(seed: int) -> int:
    """-1 means "pick one for me": returns a fresh random seed (so it can be shown and reused); else checks the seed."""
    if seed == -1 and not isinstance(seed, bool):
        return random.SystemRandom().randrange(RANDOM_SEED_LIMIT)
    return check_seed(seed)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(check_seed(seed))


def initial_noise(seed: int, shape: Sequence[int], batch_index: Sequence[int] | None = None) -> Tensor:
    """Standard normal noise of `shape` (B, C, h, w), float32 on the CPU, as ComfyUI's prepare_noise makes it.

    batch_index (ComfyUI's LATENT "batch_index", set by nodes that pick images out of a batch): the noise is drawn
    one image at a time for positions 0 .. max(batch_index), and image i gets the draw at position batch_index[i],
    so an image picked out of a batch gets its noise back. (Torch's CPU randn fills large tensors 16 numbers at a
    time, so image-by-image draws equal slices of one batched draw only when C*h*w is a multiple of 16, as for
    every latent of an image whose sides are multiples of 16 pixels.)
    """
    generator = _generator(seed)
    shape = tuple(int(n) for n in shape)
    if batch_index is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    wanted = [int(i) for i in batch_index]
    if len(wanted) != shape[0] or min(wanted, default=0) < 0:
        raise InputError(f"Batch index must list one non-negative position per latent image, got {wanted}.")
    per_image = [torch.randn((1, *shape[1:]), generator=generator, dtype=torch.float32) for _ in range(max(wanted) + 1)]
    return torch.cat([per_image[i] for i in wanted])  # (B, C, h, w)


def seeded_noise_sampler(x: Tensor, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Fresh noise like x for each step of an ancestral or SDE sampler: `noise_sampler(sigma, sigma_next)`.

    The numbers come from a CPU generator seeded with `seed`, drawn in float32, then moved to x's device and dtype.
    ComfyUI seeds a generator on x's device instead (k_diffusion/sampling.py, default_noise_sampler): on the CPU
    that gives exactly our numbers, but CUDA and MPS generators give other ones, so a ComfyUI image made with an
    ancestral sampler on a GPU cannot be reproduced on a laptop. Drawing on the CPU costs a small copy per step
    and makes the seed mean the same image everywhere.
    As in ComfyUI, the first draw equals `initial_noise(seed, x.shape)` when the same seed is used for both.
    """
    generator = _generator(seed)

    def noise_sampler(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        noise = torch.randn(tuple(x.shape), generator=generator, dtype=torch.float32)
        return noise.to(device=x.device, dtype=x.dtype)

    return noise_sampler
