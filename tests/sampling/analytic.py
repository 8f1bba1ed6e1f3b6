"""Test helpers: a data distribution whose exact denoiser is known in closed form, and seeded noise.

Data: a 1-D Gaussian mixture p(x0) = sum_k w_k N(m_k, s_k^2). Noised to level sigma (x = x0 + sigma * noise) it
is still a mixture, sum_k w_k N(m_k, s_k^2 + sigma^2), and the ideal denoiser E[x0 | x] is the responsibility-
weighted sum of each component's Gaussian posterior mean m_k + s_k^2 / (s_k^2 + sigma^2) * (x - m_k). A sampler
driven by this denoiser should reproduce the mixture: its mean, its standard deviation and its weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GaussianMixture:
    weights: tuple[float, ...] = (0.3, 0.7)
    means: tuple[float, ...] = (-1.0, 1.5)
    stds: tuple[float, ...] = (0.3, 0.5)

    @property
    def mean(self) -> float:
        return sum(w * m for w, m in zip(self.weights, self.means, strict=True))

    @property
    def std(self) -> float:
        second = sum(w * (s**2 + m**2) for w, m, s in zip(self.weights, self.means, self.stds, strict=True))
        return math.sqrt(second - self.mean**2)

    def split(self) -> float:
        """A point between the first two components: the fraction of samples below it estimates weights[0]."""
        (m0, m1), (s0, s1) = self.means[:2], self.stds[:2]
        return (m0 * s1 + m1 * s0) / (s0 + s1)  # equal z-scores on both sides

    def mass_below(self, value: float) -> float:
        """P(x0 < value) under the mixture."""
        return sum(
            w * 0.5 * (1 + math.erf((value - m) / (s * math.sqrt(2))))
            for w, m, s in zip(self.weights, self.means, self.stds, strict=True)
        )

    def denoiser(self, x: Tensor, sigma: Tensor, **extra_args: object) -> Tensor:
        """The exact E[x0 | x] at noise level sigma. x: (B, 1), sigma: (B,)."""
        w = torch.tensor(self.weights, dtype=torch.float64)
        m = torch.tensor(self.means, dtype=torch.float64)
        s2 = torch.tensor(self.stds, dtype=torch.float64) ** 2
        xd = x.double()  # (B, 1)
        var = s2 + sigma.double().view(-1, 1) ** 2  # (B, K): variance of each component at this noise level
        log_p = w.log() - 0.5 * (var.log() + (xd - m) ** 2 / var)  # (B, K), up to a constant
        resp = torch.softmax(log_p, dim=1)
        post_mean = m + s2 / var * (xd - m)  # (B, K)
        return (resp * post_mean).sum(dim=1, keepdim=True).to(x.dtype)

    def sample_noised(self, n: int, sigma: float, generator: torch.Generator) -> Tensor:
        """n exact draws of x0 + sigma * noise, as (n, 1) float64."""
        k = torch.multinomial(torch.tensor(self.weights), n, replacement=True, generator=generator)
        m = torch.tensor(self.means, dtype=torch.float64)[k]
        s = torch.tensor(self.stds, dtype=torch.float64)[k]
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        return (m + (s**2 + sigma**2) ** 0.5 * z).view(n, 1)


def seeded_noise(x: Tensor, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
    """A noise_sampler(sigma, sigma_next) drawing N(0, I) like x from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=x.dtype)


def karras_sigmas(steps: int, sigma_min: float = 0.0292, sigma_max: float = 14.6146, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 eq. 5 schedule with a final 0, in float64 (SD's sigma range by default)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])
