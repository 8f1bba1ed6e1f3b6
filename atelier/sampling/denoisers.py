"""From a noise-predicting network to a denoiser: the one function every sampler calls.

Samplers in Atelier follow k-diffusion (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", https://arxiv.org/abs/2206.00364): they walk a list of noise levels `sigmas` and at each one ask

    denoised = model(x, sigma, **extra_args)   # x: (B, C, h, w) noisy latent, sigma: (B,), denoised: (B, C, h, w)

for the model's best guess of the clean latent x0. Here x = x0 + sigma * noise ("variance exploding" form).

Stable Diffusion was not trained that way. It was trained as a DDPM (Ho et al. 2020) on 1000 discrete timesteps t
with x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * noise, where a_t is `alphas_cumprod[t]`, and its UNet predicts the
noise ("eps") or the velocity v (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512). Dividing x_t by sqrt(a_t)
gives x0 + sigma_t * noise with sigma_t = sqrt((1 - a_t) / a_t): the two forms are the same process, so a DDPM can
be driven by k-diffusion samplers once we (1) map sigma <-> t and (2) wrap the network as below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from atelier.errors import InputError


class DiscreteSchedule:
    """The noise levels a DDPM was trained on: `sigmas[t]` for t = 0 .. T-1, increasing with t.

    Matches ComfyUI's `ModelSamplingDiscrete`: betas and their cumulative product are computed in float64, the
    sigmas are stored in float32, and timestep <-> sigma conversions interpolate in log-sigma.
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise InputError("The betas of a noise schedule must be a 1-D list of at least 2 values between 0 and 1.")
        self.betas = betas  # (T,) float64
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (T,) float64, a_t, decreasing from ~1 to ~0
        sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()  # (T,) float32, increasing
        self.log_sigmas = sigmas.log().float()  # (T,) float32

    @classmethod
    def scaled_linear(
        cls, beta_start: float = 0.00085, beta_end: float = 0.012, num_timesteps: int = 1000
    ) -> DiscreteSchedule:
        """Stable Diffusion 1.x's training schedule: betas linear in sqrt-space, then squared.

        (CompVis and ComfyUI call this schedule "linear"; diffusers calls it "scaled_linear".)
        """
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        return cls(betas)

    def zero_terminal_snr(self) -> DiscreteSchedule:
        """The same schedule rescaled so that its last step is (almost) pure noise: ComfyUI's ModelSamplingDiscrete
        with zsnr=True.

        Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1: shift and
        scale sqrt(a_t) so that it keeps its first value and reaches 0 at the last step. SD's schedule ends at
        sqrt(a_T) = 0.068, a signal the model learns to rely on; models trained with the rescale (most v-prediction
        fine-tunes that ask for zsnr) start from true noise. A last a_T of exactly 0 is an infinite sigma, so it is
        set to 4.8973451890853435e-08 (sigma ~ 4500), ComfyUI's value.
        """
        root = self.alphas_cumprod.sqrt()  # (T,) float64, sqrt(a_t)
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * first / (first - last)  # now root[0] = first, root[-1] = 0
        alphas_cumprod = root**2
        alphas_cumprod[-1] = 4.8973451890853435e-08
        ratios = alphas_cumprod[1:] / alphas_cumprod[:-1]
        betas = torch.cat([1.0 - alphas_cumprod[:1], 1.0 - ratios])  # the betas whose cumulative product this is
        return DiscreteSchedule(betas)

    @property
    def num_timesteps(self) -> int:
        return len(self.sigmas)

    @property
    def sigma_min(self) -> float:
        """The smallest trained noise level, sigmas[0] (0.0292 for SD)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest trained noise level, sigmas[T-1] (14.6146 for SD)."""
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        """The timestep for each sigma, as float32.

        quantize=False (k-diffusion's default): a fractional t, linear in log-sigma between the two nearest
        trained sigmas. quantize=True (what ComfyUI feeds its UNets): the nearest trained timestep, as an integer
        value. Sigmas outside [sigma_min, sigma_max] clamp to t = 0 or T-1.
        """
        # Computed where sigma lives: a table copied back and forth would make the host wait for the GPU at every
        # sampling step (7% of an SD1.5 step on an H100, see docs/benchmarks).
        log_sigmas = self._log_sigmas_on(sigma.device)
        log_sigma = sigma.float().log()
        dists = log_sigma[None] - log_sigmas.view(-1, *([1] * log_sigma.ndim))  # (T, *sigma.shape)
        if quantize:
            return dists.abs().argmin(dim=0).float()
        # low = index of the last trained log-sigma <= log_sigma (at most T-2, so that low+1 exists).
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.num_timesteps - 2)
        high = low + 1
        w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0, 1)
        return ((1 - w) * low + w * high).float()

    def percent_to_sigma(self, percent: float) -> float:
        """The sigma reached `percent` of the way through sampling (0 = the start, pure noise; 1 = the end), as
        ComfyUI's ModelSamplingDiscrete.percent_to_sigma: the timestep (1 - percent) * 999, interpolated in
        log-sigma. 0 and below give a sigma above every trained one (1e9), 1 and above give 0, so the ends of a
        range such as ConditioningSetTimestepRange's (0, 1) take in every step.
        """
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.t_to_sigma(torch.tensor((1.0 - percent) * 999.0)))

    def _log_sigmas_on(self, device: torch.device) -> Tensor:
        """The log-sigma table, copied once to each device that asks for it."""
        key = (device, id(self.log_sigmas))  # a schedule whose table is replaced gets fresh copies
        cache = self.__dict__.setdefault("_device_tables", {})
        if key not in cache:
            cache[key] = self.log_sigmas.to(device)
        return cache[key]

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """The sigma for each (possibly fractional) timestep: linear interpolation in log-sigma, in float32."""
        t = t.float().to(self.log_sigmas.device).clamp(0, self.num_timesteps - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp()


UNetFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # unet(x_in, t, context) -> eps or v, all batched on dim 0
# control(x_in, t, context, sigma, schedule) -> the ControlNet residuals for this call (models/unet.py's
# ControlResiduals), or None where no ControlNet is active at this sigma (models/controlnet.py's ControlStack).
ControlFn = Callable[[Tensor, Tensor, Tensor | None, Tensor, "DiscreteSchedule"], Any]


def _per_sample(sigma: Tensor, x: Tensor) -> Tensor:
    """(B,) sigma -> (B, 1, 1, 1) so that it broadcasts against x: (B, C, h, w)."""
    return sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)


class Denoiser:
    """Wrap a DDPM network `unet(x_in, t, context)` into the sampler contract `denoiser(x, sigma, context) -> x0`.

    With the EDM preconditioning of Karras et al. 2022 (Table 1) and sigma_data = 1:
        x0 = c_skip(sigma) * x + c_out(sigma) * unet(c_in(sigma) * x, t(sigma), context)

    eps-prediction: c_in = 1 / sqrt(sigma^2 + 1), c_skip = 1, c_out = -sigma, i.e. x0 = x - sigma * eps.
        (c_in turns the VE latent x0 + sigma * noise back into the DDPM input sqrt(a_t) * x0 + sqrt(1 - a_t) * noise.)
    v-prediction (Salimans & Ho 2022): same c_in, c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1).

    The timestep given to the network is the nearest trained one (quantize_timesteps=True, as ComfyUI does) or a
    fractional one interpolated in log-sigma (False, as k-diffusion's CompVisDenoiser does by default).
    The network runs in its own dtype; the returned x0 has x's dtype.
    """

    def __init__(
        self,
        unet: UNetFn,
        schedule: DiscreteSchedule,
        prediction: str = "eps",
        quantize_timesteps: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        if prediction not in ("eps", "v"):
            raise InputError(f"Prediction type {prediction!r} is not supported; expected 'eps' or 'v'.")
        self.unet = unet
        self.schedule = schedule
        self.prediction = prediction
        self.quantize_timesteps = quantize_timesteps
        self.dtype = dtype  # the dtype the network's inputs are cast to (None: keep x's dtype)

    def __call__(
        self,
        x: Tensor,
        sigma: Tensor,
        context: Tensor | None = None,
        y: Tensor | None = None,
        control: ControlFn | None = None,
    ) -> Tensor:
        """x0 from x (B, C, h, w) at noise level sigma (B,) or (); `y` (B, adm) is SDXL's pooled/size vector,
        handed to the network as its fourth argument (UNet.forward), None for models without one; `control`
        gives the ControlNets' residuals for this call (pipeline.ControlStack), None without ControlNets."""
        sigma = sigma.to(x.device).expand(x.shape[0]) if sigma.ndim == 0 else sigma.to(x.device)  # (B,)
        t = self.schedule.sigma_to_t(sigma, quantize=self.quantize_timesteps)  # (B,) float32
        if sigma.device.type == "cpu" and bool((sigma == sigma[:1]).all()):
            # Samplers step the whole batch through the same sigmas: one timestep, embedded once by the network
            # (see UNet.forward), so an image's result does not depend on its batch. Only on the CPU, where
            # looking at the values costs no wait for a GPU.
            t = t[0]  # ()
        s = _per_sample(sigma, x)  # (B, 1, 1, 1)
        net_dtype = self.dtype or x.dtype
        x_in = x / (s**2 + 1) ** 0.5  # c_in * x: back to the DDPM's unit-variance input
        ctx = context.to(net_dtype) if context is not None else None
        # ControlNets see exactly the UNet's input (c_in * x, t, context) and give residuals to add inside it.
        residuals = control(x_in.to(net_dtype), t, ctx, sigma, self.schedule) if control is not None else None
        extra = {} if residuals is None else {"control": residuals}
        if y is not None:
            extra["y"] = y.to(x.device, net_dtype)
        out = self.unet(x_in.to(net_dtype), t, ctx, **extra).to(x.dtype)  # (B, C, h, w) eps or v
        if self.prediction == "eps":
            return x - out * s  # c_skip = 1, c_out = -sigma
        return x / (s**2 + 1) - out * s / (s**2 + 1) ** 0.5  # c_skip = 1/(sigma^2+1), c_out = -sigma/sqrt(..)


# ---- The starting latent ------------------------------------------------------------------------------------------


def is_max_denoise(schedule: DiscreteSchedule, sigmas: Tensor) -> bool:
    """True when sampling starts from pure noise: the first sigma is (within 1e-5) the schedule's sigma_max, or above.

    ComfyUI's rule (KSAMPLER.max_denoise): it holds for denoise = 1 with every scheduler that starts at sigma_max.
    """
    sigma = float(sigmas[0])
    return math.isclose(schedule.sigma_max, sigma, rel_tol=1e-5) or sigma > schedule.sigma_max


def noise_scaling(sigma: float | Tensor, noise: Tensor, latent: Tensor, max_denoise: bool = False) -> Tensor:
    """The latent a sampler starts from: latent + sigma * noise, as ComfyUI's EPS/V_PREDICTION `noise_scaling`.

    With max_denoise (pure-noise start, see `is_max_denoise`) the noise is scaled by sqrt(1 + sigma^2) instead of
    sigma. Why: at t = T-1 the DDPM input is ~pure noise of variance 1; the denoiser divides x by
    sqrt(1 + sigma^2) (c_in), so starting from noise * sqrt(1 + sigma^2) hands the UNet exactly unit-variance noise,
    as in training, rather than noise * sigma / sqrt(1 + sigma^2) (variance 0.9953 at sigma_max = 14.61).
    txt2img starts from an all-zero latent, so there it is noise * sqrt(1 + sigma_max^2).
    """
    sigma = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device)
    if sigma.ndim == 1:
        sigma = _per_sample(sigma, noise)
    scale = torch.sqrt(1.0 + sigma**2) if max_denoise else sigma
    return noise * scale + latent.to(noise.device, noise.dtype)


def start_latent(schedule: DiscreteSchedule, sigmas: Tensor, noise: Tensor, latent: Tensor) -> Tensor:
    """The noised latent a sampler begins from, given the sigma list it will walk (ComfyUI's KSAMPLER rule)."""
    return noise_scaling(sigmas[0], noise, latent, is_max_denoise(schedule, sigmas))
