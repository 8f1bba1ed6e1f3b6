"""Pieces shared by every sampler (samplers.py, samplers_multistep.py): the ODE slope, the ancestral split, types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Model = Callable[..., Tensor]  # model(x, sigma, **extra_args) -> denoised, same shape as x; sigma: (B,)
Callback = Callable[[dict[str, Any]], None]  # callback({"i", "sigma", "sigma_hat", "x", "denoised"})
NoiseSampler = Callable[[Tensor, Tensor], Tensor]  # noise_sampler(sigma, sigma_next) -> N(0, I) noise like x
Sampler = Callable[..., Tensor]  # sample_NAME(model, x, sigmas, extra_args, callback, disable, noise_sampler, **opts)


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE (Karras et al. 2022, eq. 3): (x - denoised) / sigma.

    It is also the noise the denoiser believes is in x, so x = denoised + sigma * d.
    """
    return (x - denoised) / sigma


def get_ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step sigma -> sigma_next into a deterministic part down to `sigma_down` and fresh noise `sigma_up`.

    sigma_down^2 + sigma_up^2 = sigma_next^2, so the noise level after the step is sigma_next either way. With eta = 1
    sigma_up is the standard deviation of the DDPM posterior (Ho et al. 2020, eq. 7, written with sigmas); eta = 0
    is a plain ODE step.
    """
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def default_noise_sampler(x: Tensor) -> NoiseSampler:
    """Unseeded N(0, I) noise like x, used when no noise_sampler is given (the pipeline always passes a seeded one)."""
    return lambda sigma, sigma_next: torch.randn_like(x)


def report(callback: Callback | None, i: int, sigma: Tensor, sigma_hat: Tensor, x: Tensor, denoised: Tensor) -> None:
    """Send one step's state to the callback, if any (previews, film strips, progress, interruption)."""
    if callback is not None:
        callback({"i": i, "sigma": sigma, "sigma_hat": sigma_hat, "x": x, "denoised": denoised})
