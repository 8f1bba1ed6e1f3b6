"""Samplers: how a list of noise levels and a denoiser become an image.

Every sampler here is a plain function with k-diffusion's contract (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", https://arxiv.org/abs/2206.00364):

    x = sample_NAME(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)

    model(x, sigma, **extra_args) -> denoised   # x: (B, C, h, w) noisy latent, sigma: (B,), denoised: best guess x0
    x                                           # the starting latent, ALREADY noised to sigmas[0]
    sigmas                                      # (N + 1,) decreasing noise levels, normally ending in 0
    callback({"i", "sigma", "sigma_hat", "x", "denoised"})   # once per step, before x moves on
    noise_sampler(sigma, sigma_next) -> Tensor like x        # fresh N(0, I) noise for stochastic samplers

Noisy latents are in the "variance exploding" form x = x0 + sigma * noise. In that form the probability-flow ODE of
the diffusion is simply (Karras et al. 2022, eq. 3 with sigma(t) = t)

    dx/dsigma = (x - denoised(x, sigma)) / sigma = d        # `to_d`: the direction pointing away from the image

and the samplers below are different numerical methods for walking it from sigmas[0] down to 0: one-step methods
(Euler, Heun, DPM-Solver-2), multistep methods that reuse earlier denoiser calls (LMS, DPM-Solver++(2M), UniPC,
DEIS, iPNDM: see samplers_multistep.py), and stochastic ones that add fresh noise as they go ("ancestral" and SDE
samplers). Samplers know nothing about the network, its timesteps or guidance: the denoiser wrapper does that.

`SAMPLERS` maps ComfyUI's sampler names to these functions. `disable` is accepted for k-diffusion compatibility
(it switches off a progress bar there) and ignored: progress is reported through `callback` only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from atelier.sampling.sampler_common import (
    Callback,
    Model,
    NoiseSampler,
    Sampler,
    default_noise_sampler,
    get_ancestral_step,
    report,
    to_d,
)
from atelier.sampling.samplers_multistep import (
    sample_deis,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m_sde,
    sample_ipndm,
    sample_lms,
    sample_uni_pc,
    sample_uni_pc_bh2,
)


def _churn(
    x: Tensor, sigma: Tensor, sigma_next: Tensor, churn: tuple[float, float, float, float], noise_sampler: NoiseSampler
) -> tuple[Tensor, Tensor]:
    """Karras et al. 2022, Algorithm 2, lines 5-7: optionally raise the noise level to sigma_hat = sigma * (1 + gamma).

    churn = (s_churn / steps, s_tmin, s_tmax, s_noise). With s_churn = 0 (the default everywhere) nothing happens.
    """
    churn_per_step, s_tmin, s_tmax, s_noise = churn
    gamma = min(churn_per_step, 2**0.5 - 1) if churn_per_step > 0 and s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (1 + gamma)
    if gamma > 0:
        x = x + noise_sampler(sigma, sigma_next) * s_noise * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


# ---- One-step ODE samplers ----------------------------------------------------------------------------------------


@torch.no_grad()
def sample_euler(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler's method on the probability-flow ODE: Algorithm 2 of Karras et al. 2022 without the Heun correction.

    One denoiser call per step. With s_churn > 0 each step first adds a little noise (the "churn" of Algorithm 2).
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])  # (B,): one sigma per batch item
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        churn = (s_churn / (len(sigmas) - 1), s_tmin, s_tmax, s_noise)
        x, sigma_hat = _churn(x, sigma, sigma_next, churn, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, i, sigma, sigma_hat, x, denoised)
        d = to_d(x, sigma_hat, denoised)
        x = x + d * (sigma_next - sigma_hat)  # follow the tangent down to sigma_next
    return x


@torch.no_grad()
def sample_heun(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's method (2nd order): Algorithm 2 of Karras et al. 2022.

    An Euler step gives a trial point at sigma_next; the slope there and the slope here are averaged (trapezoid
    rule) and the step is redone with that average. Two denoiser calls per step, except the last step to sigma = 0,
    where the slope is undefined and a plain Euler step is taken.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        churn = (s_churn / (len(sigmas) - 1), s_tmin, s_tmax, s_noise)
        x, sigma_hat = _churn(x, sigma, sigma_next, churn, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, i, sigma, sigma_hat, x, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        if sigma_next == 0:
            x = x + d * dt  # Euler
        else:
            x_trial = x + d * dt
            d_next = to_d(x_trial, sigma_next, model(x_trial, sigma_next * s_in, **extra_args))
            x = x + (d + d_next) / 2 * dt  # trapezoid rule
    return x


@torch.no_grad()
def sample_dpm_2(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """A midpoint method in the spirit of DPM-Solver-2 (Lu et al. 2022, https://arxiv.org/abs/2206.00927).

    Karras et al.'s Algorithm 2 with the trapezoid replaced by the midpoint rule, the midpoint taken at the
    geometric mean sqrt(sigma * sigma_next) (halfway in log-sigma, as DPM-Solver steps in log-SNR): an Euler
    half-step to sigma_mid, then the full step with the slope measured there. Two denoiser calls per step; the last
    step to sigma = 0 is a plain Euler step.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        churn = (s_churn / (len(sigmas) - 1), s_tmin, s_tmax, s_noise)
        x, sigma_hat = _churn(x, sigma, sigma_next, churn, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, i, sigma, sigma_hat, x, denoised)
        d = to_d(x, sigma_hat, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma_hat)  # Euler
        else:
            sigma_mid = (sigma_hat.log() + sigma_next.log()).div(2).exp()
            x_mid = x + d * (sigma_mid - sigma_hat)
            d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
            x = x + d_mid * (sigma_next - sigma_hat)
    return x


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DDIM with eta = 0 (Song et al. 2020, https://arxiv.org/abs/2010.02502, eq. 12), written with sigmas.

    DDIM keeps the predicted noise eps = (x - x0) / sigma and re-noises the predicted x0 to the next level:
    x_next = x0 + sigma_next * eps. That is exactly one Euler step of the probability-flow ODE, which is why ComfyUI
    runs "ddim" with its Euler sampler; the classic DDIM timesteps come from the "ddim_uniform" schedule.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        eps = (x - denoised) / sigma
        x = denoised + sigma_next * eps
    return x


# ---- Ancestral (stochastic) one-step samplers ---------------------------------------------------------------------


@torch.no_grad()
def sample_euler_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """ "Euler a": an Euler step down to sigma_down, then fresh noise back up to sigma_next.

    Because part of the noise is replaced at every step, the sample keeps moving until the last steps and does not
    converge to one image as the step count grows (unlike Euler). With eta = 1 this is ancestral sampling of
    Ho et al. 2020 (DDPM): see `sample_ddpm`, which gives the same result.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)  # deterministic part
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up  # fresh noise
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """`sample_dpm_2`'s midpoint step down to sigma_down, then fresh noise up to sigma_next (as in Euler a)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)  # Euler
        else:
            sigma_mid = (sigma.log() + sigma_down.log()).div(2).exp()
            x_mid = x + d * (sigma_mid - sigma)
            d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
            x = x + d_mid * (sigma_down - sigma)
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022b, https://arxiv.org/abs/2211.01095, Algorithm 1) with ancestral noise.

    DPM-Solver++ works in lambda = -log(sigma) (half the log signal-to-noise ratio) and integrates the linear part
    of the ODE exactly: a first-order step from sigma to sigma' is x' = (sigma'/sigma) x + (1 - sigma'/sigma) x0, a
    blend of x and the denoised guess. "2S": a half step (in lambda) to sigma_mid, a second denoiser call there,
    and the full step redone with that midpoint denoised. Then fresh noise as in Euler a.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = denoised  # the exact first-order step to sigma = 0
        else:
            sigma_mid = (sigma * sigma_down) ** 0.5  # halfway in lambda = -log(sigma)
            x_mid = (sigma_mid / sigma) * x + (1 - sigma_mid / sigma) * denoised
            denoised_mid = model(x_mid, sigma_mid * s_in, **extra_args)
            x = (sigma_down / sigma) * x + (1 - sigma_down / sigma) * denoised_mid
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 1 / 2,
) -> Tensor:
    """DPM-Solver++ (stochastic), k-diffusion's "DPM++ SDE": a two-stage DPM-Solver++ step, noise in each stage.

    Stage 1 goes a fraction r of the way (in lambda = -log sigma) as an ancestral first-order step and calls the
    denoiser there; stage 2 does the full ancestral step from sigma with the two denoised guesses blended
    (1 - 1/(2r), 1/(2r)), the second-order DPM-Solver++ rule (Lu et al. 2022b, https://arxiv.org/abs/2211.01095).
    Two denoiser calls per step; the last step to sigma = 0 returns the denoised guess.

    Noise: ComfyUI draws both stages' noise from one Brownian tree (torchsde), so they are correlated increments of
    one Brownian path. Here each stage asks `noise_sampler` for fresh, independent, seeded noise: same per-stage
    distribution, not the same numbers as ComfyUI.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        sigma_s = sigma ** (1 - r) * sigma_next**r  # lambda_s = lambda + r * h
        # Stage 1: ancestral DPM-Solver++(1) step sigma -> sigma_s.
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_s, eta)
        x_s = (sigma_down / sigma) * x + (1 - sigma_down / sigma) * denoised
        if eta > 0 and s_noise > 0:
            x_s = x_s + noise_sampler(sigma, sigma_s) * s_noise * sigma_up
        denoised_s = model(x_s, sigma_s * s_in, **extra_args)
        # Stage 2: ancestral step sigma -> sigma_next with the blended denoised guess.
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_s
        x = (sigma_down / sigma) * x + (1 - sigma_down / sigma) * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_ddpm(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Ancestral sampling of DDPM (Ho et al. 2020, https://arxiv.org/abs/2006.11239, eqs. 6-7 and Algorithm 2).

    Each step samples the posterior q(x_prev | x_t, x0) with the predicted noise, in the DDPM's own variables:
    a_t = alphas_cumprod = 1 / (1 + sigma^2) and x_t = x / sqrt(1 + sigma^2) (the "variance preserving" latent).
    Big steps use the "skipping" form alpha = a_t / a_prev, beta = 1 - alpha. Rewritten with sigmas this is exactly
    Euler a with eta = 1; it is kept in the paper's form to show where that comes from.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        eps = (x - denoised) / sigma
        a_t, a_prev = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        alpha = a_t / a_prev
        x_t = x * a_t**0.5  # VP latent: sqrt(a_t) x0 + sqrt(1 - a_t) eps
        mean = (x_t - (1 - alpha) / (1 - a_t) ** 0.5 * eps) / alpha**0.5  # eq. 11
        if sigma_next > 0:
            std = ((1 - alpha) * (1 - a_prev) / (1 - a_t)) ** 0.5  # posterior std, beta-tilde of eq. 7
            x = (mean + std * noise_sampler(sigma, sigma_next)) / a_prev**0.5  # back to x0 + sigma * noise form
        else:
            x = mean
    return x


@torch.no_grad()
def sample_lcm(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Latent Consistency Model sampling (Luo et al. 2023, https://arxiv.org/abs/2310.04378, Algorithm 1).

    A consistency model maps any noisy latent straight to x0, so each step jumps to the denoised guess and, unless it
    is the last, noises it afresh to sigma_next. (LCM's boundary-condition scalings c_skip/c_out belong to the
    denoiser, as in ComfyUI's model sampling, not here.)
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        x = denoised
        if sigma_next > 0:
            x = x + sigma_next * noise_sampler(sigma, sigma_next)
    return x


SAMPLERS: dict[str, Sampler] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "ddpm": sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": sample_ipndm,
    "deis": sample_deis,
    "ddim": sample_ddim,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}
"""ComfyUI's sampler names (comfy/samplers.py, KSampler.SAMPLERS, in its order) -> sampler functions."""

__all__ = ["SAMPLERS", "Sampler", "get_ancestral_step", "to_d"]
