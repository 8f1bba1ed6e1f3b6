"""Schedulers: which noise levels a sampler visits, from high to low, ending at 0.

Each function returns a 1-D float32 tensor of sigmas [sigma_0 > sigma_1 > ... > 0], normally steps + 1 long: the
sampler takes one step from each sigma to the next. Names and numbers follow ComfyUI's schedulers (comfy/samplers.py),
so a workflow saved there gives the same sigmas here. Samplers and schedulers are independent: any pair works.

Some schedulers pick among the trained noise levels of a `DiscreteSchedule` (normal, simple, ddim_uniform,
sgm_uniform, beta, linear_quadratic); the others only need its sigma_min and sigma_max (karras, exponential,
kl_optimal). `SCHEDULERS` gives all of them the one signature (schedule, steps) -> sigmas.

Every scheduler is vectorised (no Python loop over steps), so even the longest schedule `sigmas_for` allows,
MAX_SCHEDULE_STEPS, is built in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from atelier.errors import InputError
from atelier.limits import MAX_SCHEDULE_STEPS, MAX_STEPS
from atelier.sampling.denoisers import DiscreteSchedule


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


# ---- Schedulers that only need the range [sigma_min, sigma_max] -------------------------------------------------


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 (EDM), eq. 5: sigmas evenly spaced in sigma^(1/rho); rho = 7 spends more steps at low noise.

    sigma_i = (sigma_max^(1/rho) + i / (steps - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0.
    """
    ramp = torch.linspace(0, 1, steps)  # (steps,)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Sigmas evenly spaced in log-sigma from sigma_max to sigma_min, then 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """ "Align Your Steps" (Sabour et al. 2024, https://arxiv.org/abs/2404.14507), eq. 11: evenly spaced in
    arctan(sigma), which minimises a KL bound on the discretisation error. One step samples at sigma_max alone.
    """
    frac = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)  # (steps,) 0 .. 1
    return _append_zero((frac * math.atan(sigma_min) + (1 - frac) * math.atan(sigma_max)).tan())


# ---- Schedulers that pick among the trained noise levels --------------------------------------------------------


def normal(schedule: DiscreteSchedule, steps: int) -> Tensor:
    """Timesteps evenly spaced from T-1 down to 0 (fractional, interpolated in log-sigma), then 0.

    If the lowest trained sigma is 0 (zero-terminal-SNR schedules) it is already the last entry and no 0 is added.
    """
    start = float(schedule.sigma_to_t(torch.tensor(schedule.sigma_max), quantize=True))
    end = float(schedule.sigma_to_t(torch.tensor(schedule.sigma_min), quantize=True))
    ends_at_zero = math.isclose(float(schedule.t_to_sigma(torch.tensor(end))), 0, abs_tol=1e-5)
    timesteps = torch.linspace(start, end, steps + 1 if ends_at_zero else steps)
    sigmas = schedule.t_to_sigma(timesteps)
    return sigmas if ends_at_zero else _append_zero(sigmas)


def sgm_uniform(schedule: DiscreteSchedule, steps: int) -> Tensor:
    """As `normal` but with steps + 1 evenly spaced timesteps of which the last (t = 0) is dropped for sigma = 0.

    This is the spacing Stability's sgm codebase (SDXL) uses; it suits few-step models such as LCM.
    """
    start = float(schedule.sigma_to_t(torch.tensor(schedule.sigma_max), quantize=True))
    end = float(schedule.sigma_to_t(torch.tensor(schedule.sigma_min), quantize=True))
    timesteps = torch.linspace(start, end, steps + 1)[:-1]
    return _append_zero(schedule.t_to_sigma(timesteps))


def simple(schedule: DiscreteSchedule, steps: int) -> Tensor:
    """Every (T / steps)-th trained sigma, counting down from sigma_max, then 0."""
    stride = schedule.num_timesteps / steps
    offsets = (torch.arange(steps, dtype=torch.float64) * stride).long()  # int(i * stride), as ComfyUI
    return _append_zero(schedule.sigmas[-1 - offsets])


def ddim_uniform(schedule: DiscreteSchedule, steps: int) -> Tensor:
    """DDIM's "uniform" timesteps (Song et al. 2020): t = 1, 1 + k, 1 + 2k, ... with k = T // steps, reversed, then 0.

    For SD and 10 steps: t = 901, 801, ..., 101, 1 (diffusers' DDIMScheduler with steps_offset=1 picks the same).
    The list can be one longer or shorter than steps + 1 when T is not a multiple of steps (as in ComfyUI).
    """
    sigmas = schedule.sigmas
    starts_at_zero = math.isclose(float(sigmas[1]), 0, abs_tol=1e-5)
    stride = max(schedule.num_timesteps // (steps + 1 if starts_at_zero else steps), 1)
    picked = [float(s) for s in sigmas[1::stride]]
    return torch.tensor(([] if starts_at_zero else [0.0]) + picked, dtype=torch.float32).flip(0)


def beta(schedule: DiscreteSchedule, steps: int, alpha: float = 0.6, beta: float = 0.6) -> Tensor:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024,
    https://arxiv.org/abs/2407.12173): with alpha = beta = 0.6, steps crowd at both ends of the noise range.

    The quantiles are rounded to trained timesteps and repeats dropped, so with many steps the list can be
    shorter than steps + 1 (as in ComfyUI).

    ComfyUI computes t = rint(ppf(q) * (T - 1)) for every q. Rounding only asks which half-way point
    (k + 1/2) / (T - 1) the quantile passes, and ppf(q) > x exactly when q > cdf(x): so t is the number of the
    T - 1 half-way points whose cdf is below q, found by binary search in a table of those cdfs (computed once).
    """
    last = schedule.num_timesteps - 1
    q = 1 - torch.arange(steps, dtype=torch.float64) * (1 / steps)  # 1 - numpy.linspace(0, 1, steps, endpoint=False)
    t = torch.searchsorted(_half_way_cdfs(last, alpha, beta), q)  # (steps,) rint(ppf(q) * last), non-increasing
    return _append_zero(schedule.sigmas[torch.unique_consecutive(t)])


def linear_quadratic(
    schedule: DiscreteSchedule, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> Tensor:
    """Mochi's schedule (Genmo 2024): noise fraction 1 - s falls linearly to threshold_noise over the first half
    of the steps, then quadratically to 0; sigmas are those fractions of sigma_max.
    """
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        n_lin = steps // 2 if linear_steps is None else linear_steps
        n_quad = steps - n_lin
        i = torch.arange(steps, dtype=torch.float64)
        lin = i[:n_lin] * threshold_noise / n_lin
        # A quadratic a*i^2 + b*i + c that continues the line at i = n_lin (value and slope) and reaches 1 at i = steps.
        gap = n_lin - threshold_noise * steps
        a = gap / (n_lin * n_quad**2)
        b = threshold_noise / n_lin - 2 * gap / n_quad**2
        c = a * n_lin**2
        quad = a * i[n_lin:] ** 2 + b * i[n_lin:] + c
        fractions = 1.0 - torch.cat([lin, quad, i.new_ones(1)])
    return torch.as_tensor(fractions, dtype=torch.float32) * schedule.sigmas[-1]


# ---- The Beta distribution's CDF (no scipy needed) -------------------------------------------------------------


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b) = P(X <= x) for X ~ Beta(a, b).

    Evaluated with its continued fraction (modified Lentz method, Numerical Recipes 3rd ed. section 6.4), which
    converges fast for x < (a + 1) / (a + b + 2); otherwise uses the symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - beta_cdf(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even term d_{2m}
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd term d_{2m+1}
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * result / a


@lru_cache(maxsize=8)
def _half_way_cdfs(last: int, a: float, b: float) -> Tensor:
    """(last,) float64: I_x(a, b) at x = (k + 1/2) / last for k = 0 .. last - 1, increasing (about 15 ms, once)."""
    return torch.tensor([beta_cdf((k + 0.5) / last, a, b) for k in range(last)], dtype=torch.float64)


# ---- One table, one signature -----------------------------------------------------------------------------------


def _by_range(fn: Callable[[int, float, float], Tensor]) -> Callable[[DiscreteSchedule, int], Tensor]:
    return lambda schedule, steps: fn(steps, schedule.sigma_min, schedule.sigma_max)


SCHEDULERS: dict[str, Callable[[DiscreteSchedule, int], Tensor]] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": _by_range(karras),
    "exponential": _by_range(exponential),
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": _by_range(kl_optimal),
}  # ComfyUI's order


def sigmas_for(name: str, schedule: DiscreteSchedule, steps: int, denoise: float = 1.0) -> Tensor:
    """The sigmas for `steps` steps of scheduler `name`, as ComfyUI's KSampler computes them.

    denoise < 1 (img2img): schedule int(steps / denoise) steps and keep only the last steps + 1 sigmas, so sampling
    starts part-way down from a noised input image. denoise <= 0 gives [0.0]: no step, the latent comes back as is
    (ComfyUI returns the latent unchanged too).

    The longer schedule may have at most MAX_SCHEDULE_STEPS steps (ComfyUI has no bound: denoise 1e-9 asks it for
    2e10 sigmas). Its tail is not worth computing any other way: below denoise ~1e-5 the kept float32 sigmas
    repeat one another, which steps of zero length and multistep samplers dividing by log(sigma_next / sigma) do
    not survive.
    """
    if name not in SCHEDULERS:
        raise InputError(f"Scheduler {name!r} is not known; expected one of {', '.join(SCHEDULERS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"Steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}.")
    if not 0.0 <= denoise <= 1.0:
        raise InputError(f"Denoise must be between 0 and 1, got {denoise!r}.")
    if denoise > 0.9999:
        return SCHEDULERS[name](schedule, steps)
    if denoise <= 0.0:
        return torch.zeros(1)
    if steps / denoise > MAX_SCHEDULE_STEPS:
        raise InputError(
            f"Denoise {denoise:g} with {steps} steps would schedule {steps / denoise:.3g} steps (steps / denoise) and "
            f"the most is {MAX_SCHEDULE_STEPS:,}: use a denoise of at least {steps / MAX_SCHEDULE_STEPS:g}, or 0 to "
            f"keep the latent as it is."
        )
    return SCHEDULERS[name](schedule, int(steps / denoise))[-(steps + 1) :]
