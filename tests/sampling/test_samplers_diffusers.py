"""Parity with diffusers' schedulers wherever diffusers implements the same algorithm.

One small deterministic noise predictor eps(x_in, t) = tanh(W x_in + b t / 1000) + 0.3 x_in (nonlinear and
timestep-dependent) drives both sides:
- diffusers: its own loop, `scale_model_input` then `step`, with a seeded generator for the per-step noise;
- Atelier: the same network wrapped as a denoiser x0 = x - sigma * eps(x / sqrt(sigma^2 + 1), t), with the sigmas
  and the exact timesteps t diffusers used, and a noise_sampler drawing from a generator with the same seed (both
  draw torch.randn(shape) in the same order, so they get the same noise).
diffusers' "variance preserving" schedulers (DDIM, DDPM, DPM-Solver++, UniPC, LCM) keep x / sqrt(1 + sigma^2); at
sigma = 0 both forms agree, and elsewhere the test converts.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

from atelier.sampling.samplers import SAMPLERS

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
SHAPE = (1, 4, 6, 6)
SEED = 1234  # the per-step noise of both sides
TOLERANCE = 1e-4  # max |ours - theirs| / max |theirs|


class EpsModel:
    """A fixed random noise predictor: eps(x_in, t) = tanh(W x_in + b t / 1000) + 0.3 x_in, mixing channels."""

    def __init__(self, channels: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(channels, channels, generator=g) / channels**0.5
        self.b = torch.randn(channels, generator=g)

    def __call__(self, x_in: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        t = float(t) / 1000
        h = torch.einsum("oc,bchw->bohw", self.w, x_in) + self.b.view(1, -1, 1, 1) * t
        return torch.tanh(h) + 0.3 * x_in


class TableDenoiser:
    """The eps model as a denoiser, told the exact timestep diffusers used for each sigma (a lookup table)."""

    def __init__(self, eps: EpsModel, sigmas: list[float], timesteps: list[float], lcm: LCMScheduler | None = None):
        self.eps, self.table, self.lcm = eps, list(zip(sigmas, timesteps, strict=False)), lcm

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        value = float(sigma[0])
        sig, t = min(self.table, key=lambda row: abs(row[0] - value))
        assert abs(sig - value) <= 1e-5 * value, f"sigma {value} is not one of diffusers' sigmas"
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        x_vp = x / (s**2 + 1) ** 0.5
        x0 = x - s * self.eps(x_vp, t)
        if self.lcm is not None:  # LCM's boundary condition (Song et al. 2023): part of the model, not the sampler
            c_skip, c_out = self.lcm.get_scalings_for_boundary_condition_discrete(torch.tensor(float(t)))
            x0 = c_out * x0 + c_skip * x_vp
        return x0


def run_diffusers(scheduler, eps: EpsModel, latents: torch.Tensor, stochastic: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    for t in scheduler.timesteps:
        model_out = eps(scheduler.scale_model_input(latents, t), t)
        kwargs = {"generator": generator} if stochastic else {}
        latents = scheduler.step(model_out, t, latents, **kwargs).prev_sample
    return latents


def noise_sampler(x: torch.Tensor):
    generator = torch.Generator().manual_seed(SEED)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=x.dtype)


def vp_sigmas(scheduler) -> list[float]:
    """sigma_t = sqrt((1 - a_t) / a_t) for each of the scheduler's timesteps (a = alphas_cumprod)."""
    a = scheduler.alphas_cumprod[scheduler.timesteps.long()].double()
    return ((1 - a) / a).sqrt().tolist()


def relative_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def compare(
    name, scheduler, sigmas=None, timesteps=None, vp: bool = True, stochastic: bool = False, table_sigmas=None
) -> float:
    """Run both sides from the same noise; return the relative max difference of the final latents.

    `scheduler` has had set_timesteps called; sigmas/timesteps default to its timesteps' sigmas, then 0.
    table_sigmas: the sigma of each model call, when it is not simply `sigmas` (KDPM2's midpoints).
    """
    eps = EpsModel()
    if sigmas is None:  # a variance-preserving scheduler: sigmas from its timesteps, then 0
        timesteps = scheduler.timesteps.tolist()
        sigmas = [*vp_sigmas(scheduler), 0.0]
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    latents = noise * scheduler.init_noise_sigma
    theirs = run_diffusers(scheduler, eps, latents.clone(), stochastic)
    x = latents * (1 + sigmas[0] ** 2) ** 0.5 if vp else latents  # to x0 + sigma * noise form
    table = sigmas if table_sigmas is None else table_sigmas  # the sigma of each of diffusers' model calls
    denoiser = TableDenoiser(eps, table, timesteps, lcm=scheduler if name == "lcm" else None)
    sigma_t = torch.tensor(sigmas, dtype=torch.float32)
    ours = SAMPLERS[name](denoiser, x.clone(), sigma_t, noise_sampler=noise_sampler(x))
    if vp and sigmas[-1] > 0:
        ours = ours / (1 + sigmas[-1] ** 2) ** 0.5
    diff = relative_diff(ours, theirs)
    print(f"{name}: relative max diff {diff:.2e}")
    return diff


def sigma_space(scheduler):
    """For diffusers' sigma-space schedulers: (sigmas, timesteps) after set_timesteps."""
    return scheduler.sigmas.tolist(), scheduler.timesteps.tolist()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("karras", [False, True])
def test_euler(karras: bool):
    s = EulerDiscreteScheduler(**SD, use_karras_sigmas=karras)
    s.set_timesteps(10)
    assert compare("euler", s, *sigma_space(s), vp=False) < TOLERANCE


def test_euler_ancestral():
    s = EulerAncestralDiscreteScheduler(**SD)
    s.set_timesteps(10)
    assert compare("euler_ancestral", s, *sigma_space(s), vp=False, stochastic=True) < TOLERANCE


def test_heun():
    """diffusers interleaves sigmas (s0, s1, s1, s2, s2, ..., 0): its timestep table covers both calls per step."""
    s = HeunDiscreteScheduler(**SD)
    s.set_timesteps(10)
    distinct = torch.unique_consecutive(s.sigmas).tolist()  # s0, s1, ..., s9, 0
    timesteps = s.timesteps.tolist()
    assert compare("heun", s, distinct, [timesteps[0], *timesteps[1::2]], vp=False) < TOLERANCE


def test_dpm_2():
    """KDPM2: the midpoint sigma is the geometric mean; its timestep is interpolated in log-sigma (fractional)."""
    s = KDPM2DiscreteScheduler(**SD)
    s.set_timesteps(10)
    distinct = torch.unique_consecutive(s.sigmas).tolist()  # s0, s1, ..., s9, 0
    mids = s.sigmas_interpol.tolist()  # nan, m1, m1, m2, m2, ...: m_k between s_(k-1) and s_k
    calls = [distinct[0]]  # the sigma of each model call: s0, mid(s0, s1), s1, mid(s1, s2), ...
    for k in range(1, len(distinct) - 1):
        calls += [mids[2 * k - 1], distinct[k]]
    assert compare("dpm_2", s, distinct, s.timesteps.tolist(), vp=False, table_sigmas=calls) < TOLERANCE


def test_lms():
    pytest.importorskip("scipy")  # diffusers integrates LMS's coefficients with scipy; Atelier does it exactly
    s = LMSDiscreteScheduler(**SD)
    s.set_timesteps(10)
    assert compare("lms", s, *sigma_space(s), vp=False) < TOLERANCE


def test_ddim():
    """DDIM with eta = 0 is Euler in sigma; the last step goes to a_prev = 1 (set_alpha_to_one), i.e. sigma = 0."""
    s = DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    s.set_timesteps(10)
    assert compare("ddim", s) < TOLERANCE


def test_ddpm():
    """DDPM's posterior ("fixed_small" variance) with skipped steps; no clipping of x0."""
    s = DDPMScheduler(**SD, clip_sample=False, variance_type="fixed_small")
    s.set_timesteps(10)
    assert compare("ddpm", s, stochastic=True) < TOLERANCE


def test_dpmpp_2m():
    """final_sigmas_type 'zero' makes diffusers' last step first order, as ComfyUI's 2M at sigma = 0."""
    s = DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    s.set_timesteps(10)
    assert compare("dpmpp_2m", s) < TOLERANCE


def test_dpmpp_2m_sde():
    s = DPMSolverMultistepScheduler(**SD, algorithm_type="sde-dpmsolver++", solver_order=2, final_sigmas_type="zero")
    s.set_timesteps(10)
    assert compare("dpmpp_2m_sde", s, stochastic=True) < TOLERANCE


def test_uni_pc_bh2_to_zero():
    """ComfyUI's UniPC settings: order 3, data prediction, lower order at the end, no corrector after the last step."""
    s = UniPCMultistepScheduler(**SD, solver_order=3, solver_type="bh2", final_sigmas_type="zero")
    s.set_timesteps(10)
    assert compare("uni_pc_bh2", s) < TOLERANCE


def test_uni_pc_bh1_to_sigma_min():
    """bh1's weights are infinite at sigma = 0 (diffusers returns NaN there), so both stop at the smallest sigma."""
    s = UniPCMultistepScheduler(**SD, solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min")
    s.set_timesteps(10)
    sigmas = [*vp_sigmas(s), s.sigmas[-1].item()]
    assert sigmas[-1] > 0
    assert compare("uni_pc", s, sigmas, s.timesteps.tolist()) < TOLERANCE


def test_lcm():
    """4 LCM steps; the boundary scalings c_skip, c_out are applied by the denoiser (ComfyUI: model sampling)."""
    s = LCMScheduler(**SD)
    s.set_timesteps(4)
    assert compare("lcm", s, stochastic=True) < TOLERANCE
