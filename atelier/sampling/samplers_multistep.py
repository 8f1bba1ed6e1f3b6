"""Multistep samplers: one denoiser call per step, made more accurate by reusing the calls of earlier steps.

A one-step method of order 2 (Heun) pays two denoiser calls per step. A linear multistep method fits a polynomial
through the last few slopes (or denoised guesses) it has already paid for and integrates that instead: order 2-4
accuracy for one call per step. All of them start with lower orders while the history fills up.

Same contract as samplers.py: `sample_NAME(model, x, sigmas, extra_args, callback, disable, noise_sampler, **opts)`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from atelier.sampling.sampler_common import Callback, Model, NoiseSampler, default_noise_sampler, report, to_d

# ---- Linear multistep in sigma ------------------------------------------------------------------------------------


def _lagrange_integral(nodes: list[float], j: int, a: float, b: float) -> float:
    """Integral from a to b of the j-th Lagrange basis polynomial on `nodes` (1 at nodes[j], 0 at the others).

    Exact: the polynomial's coefficients are built and integrated term by term (there are at most 4 nodes).
    """
    poly = [1.0]  # coefficients, lowest degree first
    for m, node in enumerate(nodes):
        if m != j:  # poly *= (tau - node) / (nodes[j] - node)
            scale = 1.0 / (nodes[j] - node)
            poly = [(lower - node * same) * scale for same, lower in zip([*poly, 0.0], [0.0, *poly], strict=True)]
    return sum(c / (k + 1) * (b ** (k + 1) - a ** (k + 1)) for k, c in enumerate(poly))


@torch.no_grad()
def sample_lms(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams-Bashforth with variable steps) on dx/dsigma, as in k-diffusion's `sample_lms`.

    The last `order` slopes d_i, d_(i-1), ... are interpolated by a polynomial in sigma and that polynomial is
    integrated exactly from sigma_i to sigma_(i+1): x += sum_j c_j * d_(i-j), c_j = integral of the j-th Lagrange
    basis polynomial. (k-diffusion and diffusers integrate numerically with scipy; the result is the same.)
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    sigmas_f = [float(s) for s in sigmas]  # float64 for the coefficients
    ds: list[Tensor] = []  # newest slope last
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        ds = [*ds, to_d(x, sigmas[i], denoised)][-order:]
        nodes = [sigmas_f[i - j] for j in range(len(ds))]  # sigma_i, sigma_(i-1), ...
        coeffs = [_lagrange_integral(nodes, j, sigmas_f[i], sigmas_f[i + 1]) for j in range(len(ds))]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
    return x


@torch.no_grad()
def sample_ipndm(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    max_order: int = 4,
) -> Tensor:
    """Improved PNDM: Adams-Bashforth with fixed-step coefficients on dx/dsigma, of order up to 4.

    From Zhang & Chen 2022 (DEIS paper, https://arxiv.org/abs/2204.13902, Sec. 5 / Appendix), improving the
    pseudo-numerical methods of Liu et al. 2022 (PNDM, https://arxiv.org/abs/2202.09778): the classic
    Adams-Bashforth weights (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24, used as if the steps were equal.
    ComfyUI's version comes from zju-pi/diff-sampler.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    weights = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    ds: list[Tensor] = []  # newest slope first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        ds = [to_d(x, sigma, denoised), *ds][:max_order]
        slope = sum(w * d for w, d in zip(weights[len(ds)], ds, strict=True))
        x = x + (sigma_next - sigma) * slope
    return x


# DEIS maps sigmas to the time t of a VP-SDE fitted to EDM's range (sigma 0.002 at t = 1e-3, sigma 80 at t = 1).
_DEIS_SIGMA_MIN, _DEIS_SIGMA_MAX, _DEIS_T_MIN = 0.002, 80.0, 1e-3
_DEIS_BETA_D = 2 * (math.log1p(_DEIS_SIGMA_MIN**2) / _DEIS_T_MIN - math.log1p(_DEIS_SIGMA_MAX**2)) / (_DEIS_T_MIN - 1)
_DEIS_BETA_MIN = math.log1p(_DEIS_SIGMA_MAX**2) - 0.5 * _DEIS_BETA_D


def _deis_time(sigma: np.ndarray) -> np.ndarray:
    """VP time t(sigma), solving log(1 + sigma^2) = beta_d t^2 / 2 + beta_min t for t."""
    return (np.sqrt(_DEIS_BETA_MIN**2 + 2 * _DEIS_BETA_D * np.log1p(sigma**2)) - _DEIS_BETA_MIN) / _DEIS_BETA_D


def deis_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """The weights c_j of step i of tAB-DEIS: x_(i+1) = x_i + sum_j c_j * d_(i-j), j < order.

    c_j = integral over sigma from sigma_i to sigma_(i+1) of L_j(t(sigma)), where L_j is the Lagrange basis on the
    VP times t(sigma_i), t(sigma_(i-1)), ...: the slopes are interpolated as a polynomial in t, not in sigma.
    Computed by 32-point Gauss-Legendre quadrature in sigma (ComfyUI sums 10000 rectangles in t; the weights agree
    to about 1e-4).
    """
    nodes = _deis_time(np.array([sigmas[i - j] for j in range(order)], dtype=np.float64))
    a, b = sigmas[i], sigmas[i + 1]
    u, w = np.polynomial.legendre.leggauss(32)  # on [-1, 1]
    sig = (b - a) / 2 * u + (a + b) / 2
    t = _deis_time(sig)
    coeffs = []
    for j in range(order):
        basis = np.prod([(t - nodes[m]) / (nodes[j] - nodes[m]) for m in range(order) if m != j], axis=0)
        coeffs.append(float((b - a) / 2 * np.sum(w * basis)))
    return coeffs


@torch.no_grad()
def sample_deis(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    max_order: int = 3,
) -> Tensor:
    """DEIS, the "tAB" variant (Zhang & Chen 2022, https://arxiv.org/abs/2204.13902, Sec. 4, eq. 14).

    An exponential-integrator multistep method: like LMS, but the polynomial through the past slopes is a
    polynomial in the VP-SDE time t rather than in sigma (see `deis_coefficients`). The first step and the last
    step to sigma = 0 are Euler steps.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    sigmas_f = [float(s) for s in sigmas]
    ds: list[Tensor] = []  # newest slope first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        ds = [to_d(x, sigma, denoised), *ds][:max_order]
        order = len(ds) if sigma_next > 0 else 1
        if order == 1:
            x = x + (sigma_next - sigma) * ds[0]  # Euler
        else:
            coeffs = deis_coefficients(sigmas_f, i, order)
            x = x + sum(c * d for c, d in zip(coeffs, ds, strict=False))
    return x


# ---- DPM-Solver++ multistep ---------------------------------------------------------------------------------------


@torch.no_grad()
def sample_dpmpp_2m(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, https://arxiv.org/abs/2211.01095, Algorithm 2).

    Works in lambda = -log(sigma). The exact solution of the ODE over a step of size h = lambda' - lambda, if the
    denoised guess D were constant, is x' = (sigma'/sigma) x + (1 - sigma'/sigma) D. 2M makes D a linear
    extrapolation from this step's and the previous step's denoised guesses, at a ratio r = h_last / h:
    D = (1 + 1/(2r)) denoised - 1/(2r) old_denoised. The first step and the last step to sigma = 0 use D = denoised.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        if old_denoised is None or sigma_next == 0:
            denoised_d = denoised
        else:
            h, h_last = sigma.log() - sigma_next.log(), sigmas[i - 1].log() - sigma.log()
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) for the reverse SDE (Lu et al. 2022b, https://arxiv.org/abs/2211.01095, Appendix / eq. 18).

    The SDE step over h = lambda' - lambda shrinks x by (sigma'/sigma) e^(-eta h) (faster than the ODE), pulls it
    toward the denoised guess by 1 - e^(-(1+eta) h), and adds fresh noise of std sigma' sqrt(1 - e^(-2 eta h)).
    The second-order term uses the previous denoised guess, by the "midpoint" or "heun" rule. eta = 0 gives
    DPM-Solver++(2M). The last step to sigma = 0 returns the denoised guess.

    Noise: ComfyUI draws it from a Brownian tree (torchsde); here `noise_sampler` gives fresh seeded N(0, I) noise
    per step: the same distribution, not the same numbers.
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = sigma.log() - sigma_next.log()
            eta_h = eta * h
            pull = -torch.expm1(-h - eta_h)  # 1 - e^(-(1 + eta) h): how far x moves toward denoised
            x = (sigma_next / sigma) * torch.exp(-eta_h) * x + pull * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (pull / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * pull * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * (-torch.expm1(-2 * eta_h)).sqrt() * s_noise
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
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
    """DPM-Solver++(3M) SDE: `sample_dpmpp_2m_sde` with a quadratic extrapolation through three denoised guesses.

    With step ratios r0 = h_1/h, r1 = h_2/h the first and second divided differences d1, d2 of the denoised
    guesses enter through phi_2(h_eta) = (1 - e^-h_eta)/h_eta ... terms, as in Lu et al. 2022b
    (https://arxiv.org/abs/2211.01095, third-order multistep). Same noise note as `sample_dpmpp_2m_sde`.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None  # the last two denoised guesses
    h_1, h_2 = None, None  # the last two step sizes in lambda
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, i, sigma, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
        else:
            h = sigma.log() - sigma_next.log()
            h_eta = h * (eta + 1)
            x = (sigma_next / sigma) * torch.exp(-eta * h) * x - torch.expm1(-h_eta) * denoised
            phi_2 = torch.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:  # third order
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:  # second order
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * (-torch.expm1(-2 * eta * h)).sqrt() * s_noise
            h_1, h_2 = h, h_1
        denoised_1, denoised_2 = denoised, denoised_1
    return x


# ---- UniPC --------------------------------------------------------------------------------------------------------


def _unipc_rhos(rks: list[float], h: float, variant: str) -> tuple[list[float], list[float], float]:
    """The predictor and corrector weights of UniPC with B(h) (Zhao et al. 2023, Algorithms 2-3).

    rks: the past steps' lambda offsets divided by h (negative), then 1.0 for the step being taken; len(rks) is the
    order p. B(h) = h (bh1) or e^h - 1 (bh2), with h taken negative for data prediction. The weights rho solve
    sum_k rho_k r_k^(n-1) = n! h phi_(n+1)(h) / B(h), n = 1..p, where phi_(n+1) are the exponential-integrator
    phi functions. The predictor uses the first p - 1 equations and offsets; the corrector all p.
    """
    hh = -h  # data prediction integrates in -lambda
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi = math.expm1(hh) / hh - 1  # hh * phi_2(hh)
    b, factorial = [], 1
    for n in range(1, len(rks) + 1):
        b.append(h_phi * factorial / b_h)
        factorial *= n + 1
        h_phi = h_phi / hh - 1 / factorial  # hh * phi_(n+2)(hh)
    R = torch.tensor([[r**n for r in rks] for n in range(len(rks))], dtype=torch.float64)  # (p, p)
    b_t = torch.tensor(b, dtype=torch.float64)
    p = len(rks)
    if p == 1:
        rhos_p = []
    elif p == 2:
        rhos_p = [0.5]  # UniPC's simplified second-order predictor
    else:
        rhos_p = torch.linalg.solve(R[:-1, :-1], b_t[:-1]).tolist()
    rhos_c = [0.5] if p == 1 else torch.linalg.solve(R, b_t).tolist()
    return rhos_p, rhos_c, b_h


@torch.no_grad()
def sample_uni_pc(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    max_order: int = 3,
    variant: str = "bh1",
) -> Tensor:
    """UniPC (Zhao et al. 2023, https://arxiv.org/abs/2302.04867): a multistep predictor plus a free corrector.

    Each step: (1) UniP predicts x at sigma_next from the denoised guesses of the last p steps (DPM-Solver++ in
    lambda = -log sigma, with the history entering through divided differences D1_k); (2) the denoiser is called
    at the prediction, as it must be for the next step anyway; (3) UniC uses that new guess to correct x, raising the
    order by one at no extra cost. Data prediction, multistep, order min(3, steps - 1) with the first steps
    warming up and the last steps lowering the order ("lower_order_final"), no corrector after the last step:
    ComfyUI's configuration of the reference UniPC.

    At sigma = 0 the last step (order 1) is exactly x = denoised. ComfyUI instead stops at sigma = 0.001
    (its bh1 weights are infinite at 0), a difference of 0.001 * (x - denoised) / sigma.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    order = max(1, min(max_order, steps - 1))
    lambdas = [-math.log(float(s)) if s > 0 else math.inf for s in sigmas]  # lambda = -log(sigma)

    denoised = model(x, sigmas[0] * s_in, **extra_args)
    report(callback, 0, sigmas[0], sigmas[0], x, denoised)
    history = [(lambdas[0], denoised)]  # (lambda, denoised) of the last `order` steps, newest last
    for i in range(1, steps + 1):  # step from sigmas[i - 1] to sigmas[i]
        sigma, sigma_next = sigmas[i - 1], sigmas[i]
        p = min(order, i, steps + 1 - i)  # warm-up, then lower order at the end
        lam_0, m_0 = history[-1]
        if sigma_next == 0:  # p == 1 here: the first-order step to sigma = 0
            x = m_0
            break
        h = lambdas[i] - lam_0
        rks = [(lam_k - lam_0) / h for lam_k, _ in history[-p:-1][::-1]] + [1.0]
        d1s = [(m_k - m_0) / r for (_, m_k), r in zip(history[-p:-1][::-1], rks, strict=False)]
        rhos_p, rhos_c, b_h = _unipc_rhos(rks, h, variant)

        x_base = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * m_0  # DPM-Solver++(1) step
        x_pred = x_base - b_h * sum((rho * d for rho, d in zip(rhos_p, d1s, strict=True)), torch.zeros_like(x))
        if i == steps:
            x = x_pred  # no corrector after the last step: it would need one more denoiser call
            break
        denoised = model(x_pred, sigma_next * s_in, **extra_args)
        correction = sum((rho * d for rho, d in zip(rhos_c[:-1], d1s, strict=True)), rhos_c[-1] * (denoised - m_0))
        x = x_base - b_h * correction
        report(callback, i, sigma_next, sigma_next, x, denoised)
        history = [*history, (lambdas[i], denoised)][-order:]
    return x


@torch.no_grad()
def sample_uni_pc_bh2(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
    max_order: int = 3,
) -> Tensor:
    """UniPC with B(h) = e^h - 1 (variant "bh2", recommended by Zhao et al. for guided sampling)."""
    return sample_uni_pc(model, x, sigmas, extra_args, callback, disable, noise_sampler, max_order, variant="bh2")
