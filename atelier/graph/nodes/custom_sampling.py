"""The custom-sampling graph: the KSampler taken apart into the four choices it makes.

ComfyUI's KSampler hides four decisions behind one node. SamplerCustomAdvanced takes each from its own node, which
is why modern workflows use it and why it is the clearest picture of what sampling is:

    NOISE    RandomNoise / DisableNoise          what is added to the latent before the first step
    GUIDER   CFGGuider / BasicGuider / ...       denoise(x, sigma) -> x0, with the prompts and guidance inside
    SAMPLER  KSamplerSelect / SamplerEuler...    how to walk the ODE or SDE from one sigma to the next
    SIGMAS   BasicScheduler / KarrasScheduler    which noise levels to visit, high to low (a 1-D tensor)

Value types, as ComfyUI names them:

    SAMPLER  SamplerChoice: a name of sampling.samplers.SAMPLERS and its options (eta, s_noise, ...)
    SIGMAS   float32 tensor (N + 1,) on the CPU, normally decreasing to 0
    NOISE    NoiseSource: a seed, or no noise at all
    GUIDER   Guider: a MODEL with its conditionings and guidance, `guided()` gives the denoiser samplers call

With the same settings SamplerCustom and SamplerCustomAdvanced give exactly the KSampler's latent: all three end
in pipeline.sample_sigmas, with the same noise (noise.initial_noise), the same per-step noise stream (seeded by
the noise seed) and the same guidance (pipeline.guide). tests/graph/test_custom_sampling.py checks it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from atelier.errors import InputError
from atelier.graph.kit import CFG_INPUT, SEED_INPUT, InterruptFlag, Node, progress_and_previews
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.limits import check_sampling_cost
from atelier.pipeline import Cond, DiffusionModel, Step, composed_denoiser, guide, sample_sigmas, with_vectors
from atelier.sampling.noise import check_seed, initial_noise
from atelier.sampling.samplers import SAMPLERS
from atelier.sampling.schedules import SCHEDULERS, exponential, karras, sigmas_for

# --------------------------------------------------------------------------------------------------------------
# The four value types
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: which sampler of SAMPLERS runs, and the keyword options it is called with."""

    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NoiseSource:
    """NOISE: the starting noise. `enabled` False is DisableNoise (zeros; the seed, 0, still seeds the per-step
    noise of ancestral samplers, as in ComfyUI)."""

    seed: int
    enabled: bool = True

    def generate(self, latent: dict) -> Tensor:
        """(B, 4, h, w) float32 on the CPU: N(0, I) from the seed (per image with a batch_index), or zeros."""
        samples = latent["samples"]
        if not self.enabled:
            return torch.zeros(samples.shape)
        return initial_noise(self.seed, samples.shape, latent.get("batch_index"))


@dataclasses.dataclass
class Guider:
    """GUIDER: a model and what steers it. `guided()` is the denoiser the sampler calls, x0 = guided(x, sigma)."""

    model: DiffusionModel
    # build(model, vectors) -> the guided denoiser; vectors(conds, negative) gives the conditionings SDXL's vector y
    # for the latent being sampled (pipeline.with_vectors), the same conditionings for SD1.x and SD 2.x.
    build: Callable[[DiffusionModel, Callable[[list[Cond], bool], list[Cond]]], Callable[..., Tensor]]

    def guided(self, latent_shape: tuple[int, ...] | None = None) -> Callable[..., Tensor]:
        """The denoiser for sampling a latent of `latent_shape` (B, C, h, w): SDXL's default sizes are its own."""
        config = self.model.unet.config

        def vectors(conds: list[Cond], negative: bool) -> list[Cond]:
            return conds if latent_shape is None else with_vectors(conds, config, latent_shape, negative)

        return self.build(self.model, vectors)


def dual_cfg(
    model: DiffusionModel,
    cond1: list[Cond],
    cond2: list[Cond],
    negative: list[Cond],
    cfg_conds: float,
    cfg_cond2_negative: float,
    nested: bool,
) -> Callable[..., Tensor]:
    """Guidance between three conditionings (ComfyUI's DualCFGGuider), with the x0 predictions p1, p2, pn:

        regular: x0 = pn + cfg_cond2_negative * (p2 - pn) + cfg_conds * (p1 - p2)
        nested:  x0 = pn + cfg_cond2_negative * (p2 + cfg_conds * (p1 - p2) - pn)

    A scale of 1 saves passes as ComfyUI does (regular only): cfg_cond2_negative = 1 drops the negative (pn = 0),
    and then cfg_conds = 1 drops cond2 too (p2 = 0). Each conditioning's entries are combined by
    pipeline.composed_denoiser, so areas and timestep ranges are honoured.
    """
    denoise = model.denoiser()
    p1_fn, p2_fn, pn_fn = (composed_denoiser(denoise, c, model.schedule) for c in (cond1, cond2, negative))
    skip_negative = not nested and math.isclose(cfg_cond2_negative, 1.0)
    skip_cond2 = skip_negative and math.isclose(cfg_conds, 1.0)

    def guided(x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        p1 = p1_fn(x, sigma, **kwargs)
        p2 = torch.zeros_like(x) if skip_cond2 else p2_fn(x, sigma, **kwargs)
        pn = torch.zeros_like(x) if skip_negative else pn_fn(x, sigma, **kwargs)
        if nested:
            text = p2 + cfg_conds * (p1 - p2)
            return pn + cfg_cond2_negative * (text - pn)
        return pn + cfg_cond2_negative * (p2 - pn) + cfg_conds * (p1 - p2)

    return guided


# --------------------------------------------------------------------------------------------------------------
# The loop: shared by SamplerCustom and SamplerCustomAdvanced
# --------------------------------------------------------------------------------------------------------------


def _checked_sigmas(sigmas: Tensor) -> Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).cpu()
    if sigmas.ndim != 1 or not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
        raise InputError(f"Sigmas must be a 1-D list of finite noise levels of at least 0, got {tuple(sigmas.shape)}.")
    return sigmas


def run_custom(
    ctx: NodeContext,
    model: DiffusionModel,
    guided: Callable[..., Tensor],
    sampler: SamplerChoice,
    sigmas: Tensor,
    latent: dict,
    noise: Tensor,
    seed: int,
) -> tuple[dict, dict]:
    """(output, denoised_output): the latent after walking `sigmas`, and the model's last guess of the clean latent
    (x0 at the last step). No sigmas: the latent comes back unchanged, as in ComfyUI."""
    sigmas = _checked_sigmas(sigmas)
    if len(sigmas) == 0:
        return latent, latent
    if sampler.name not in SAMPLERS:
        raise InputError(f"Sampler {sampler.name!r} is not known; expected one of {', '.join(SAMPLERS)}.")
    samples = latent["samples"]
    check_sampling_cost(samples.shape, len(sigmas) - 1)
    last: dict[str, Tensor] = {}

    def keep_x0(step: Step) -> None:
        last["x0"] = step.denoised

    result = sample_sigmas(
        model, samples, sigmas, guided, sampler.name, noise, check_seed(seed),
        sampler_options=sampler.options, noise_mask=latent.get("noise_mask"),
        on_step=progress_and_previews(ctx, model, keep_x0), interrupt=InterruptFlag(ctx),
    )  # fmt: skip
    out = dict(latent, samples=result.cpu())
    denoised = dict(latent, samples=(last["x0"] / model.latent_scale).cpu()) if "x0" in last else out
    return out, denoised


OUTPUTS = [
    Output("LATENT", name="output", tooltip="The latent after the last sigma."),
    Output("LATENT", name="denoised_output", tooltip="The model's guess of the clean latent at the last step (x0)."),
]
SAMPLER_SOCKET = Input("sampler", "SAMPLER", tooltip="The algorithm that walks down the sigmas (a SAMPLER node).")
SIGMAS_SOCKET = Input("sigmas", "SIGMAS", tooltip="The noise levels to visit, high to low (a scheduler node).")
LATENT_SOCKET = Input("latent_image", "LATENT", tooltip="The latent to denoise (zeros for txt2img).")
MODEL_SOCKET = Input("model", "MODEL", tooltip="The model used for denoising the input latent.")
NOISE_SEED = dataclasses.replace(SEED_INPUT, name="noise_seed")


class SamplerCustom(Node):
    SCHEMA = NodeSchema(
        name="SamplerCustom",
        display_name="SamplerCustom",
        category="sampling/custom_sampling",
        description="The KSampler with its sampler and sigmas taken from other nodes: classifier-free guidance "
        "between positive and negative, seeded noise, any sampler on any list of sigmas.",
        inputs=[
            MODEL_SOCKET,
            Input(
                "add_noise",
                "BOOLEAN",
                default=True,
                tooltip="Noise the latent to the first sigma; off when it already holds noise (a previous pass).",
            ),
            NOISE_SEED,
            CFG_INPUT,
            Input("positive", "CONDITIONING", tooltip="What the image should show."),
            Input("negative", "CONDITIONING", tooltip="What guidance steers away from."),
            SAMPLER_SOCKET,
            SIGMAS_SOCKET,
            LATENT_SOCKET,
        ],
        outputs=OUTPUTS,
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: list[Cond],
        negative: list[Cond],
        sampler: SamplerChoice,
        sigmas: Tensor,
        latent_image: dict,
    ) -> tuple:
        noise = NoiseSource(noise_seed, add_noise).generate(latent_image)
        guided = guide(model.denoiser(), positive, negative, cfg, model.schedule)
        return run_custom(ctx, model, guided, sampler, sigmas, latent_image, noise, noise_seed)


class SamplerCustomAdvanced(Node):
    SCHEMA = NodeSchema(
        name="SamplerCustomAdvanced",
        display_name="SamplerCustomAdvanced",
        category="sampling/custom_sampling",
        description="Sampling from its four parts: the noise added first, the guider (model, prompts, guidance), "
        "the sampler and the sigmas. Each is a node of its own, so each can be swapped.",
        inputs=[
            Input("noise", "NOISE", tooltip="The noise added before the first step (RandomNoise, DisableNoise)."),
            Input("guider", "GUIDER", tooltip="The model with its prompts and guidance (CFGGuider, BasicGuider)."),
            SAMPLER_SOCKET,
            SIGMAS_SOCKET,
            LATENT_SOCKET,
        ],
        outputs=OUTPUTS,
    )

    def run(
        self,
        ctx: NodeContext,
        noise: NoiseSource,
        guider: Guider,
        sampler: SamplerChoice,
        sigmas: Tensor,
        latent_image: dict,
    ) -> tuple:
        start = noise.generate(latent_image)
        guided = guider.guided(tuple(latent_image["samples"].shape))
        return run_custom(ctx, guider.model, guided, sampler, sigmas, latent_image, start, noise.seed)


# --------------------------------------------------------------------------------------------------------------
# NOISE
# --------------------------------------------------------------------------------------------------------------


class RandomNoise(Node):
    SCHEMA = NodeSchema(
        name="RandomNoise",
        display_name="RandomNoise",
        category="sampling/noise",
        description="Seeded Gaussian noise, drawn on the CPU as the KSampler draws it: the same seed gives the same "
        "image.",
        inputs=[NOISE_SEED],
        outputs=[Output("NOISE", tooltip="Noise from this seed.")],
    )

    def run(self, ctx: NodeContext, noise_seed: int) -> tuple:
        return (NoiseSource(check_seed(noise_seed)),)


class DisableNoise(Node):
    SCHEMA = NodeSchema(
        name="DisableNoise",
        display_name="DisableNoise",
        category="sampling/noise",
        description="No noise: for a latent that already holds its noise, such as a first pass stopped early.",
        outputs=[Output("NOISE", tooltip="Zeros instead of noise.")],
    )

    def run(self, ctx: NodeContext) -> tuple:
        return (NoiseSource(0, enabled=False),)


# --------------------------------------------------------------------------------------------------------------
# GUIDER
# --------------------------------------------------------------------------------------------------------------


class CFGGuider(Node):
    SCHEMA = NodeSchema(
        name="CFGGuider",
        display_name="CFG Guider",
        category="sampling/guiders",
        description="Classifier-free guidance (Ho & Salimans 2022): x0 = uncond + cfg * (cond - uncond), the "
        "prediction pushed from the negative towards the positive.",
        inputs=[
            MODEL_SOCKET,
            Input("positive", "CONDITIONING", tooltip="What the image should show."),
            Input("negative", "CONDITIONING", tooltip="What guidance steers away from."),
            CFG_INPUT,
        ],
        outputs=[Output("GUIDER", tooltip="The model with its prompts and guidance.")],
    )

    def run(
        self, ctx: NodeContext, model: DiffusionModel, positive: list[Cond], negative: list[Cond], cfg: float
    ) -> tuple:
        def build(m: DiffusionModel, v: Callable) -> Callable[..., Tensor]:
            return guide(m.denoiser(), v(positive, False), v(negative, True), cfg, m.schedule)

        return (Guider(model, build),)


class BasicGuider(Node):
    SCHEMA = NodeSchema(
        name="BasicGuider",
        display_name="Basic Guider",
        category="sampling/guiders",
        description="No guidance: the model's prediction for one conditioning, one pass per step (for models "
        "distilled to need no CFG).",
        inputs=[MODEL_SOCKET, Input("conditioning", "CONDITIONING", tooltip="What the image should show.")],
        outputs=[Output("GUIDER", tooltip="The model with its conditioning.")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, conditioning: list[Cond]) -> tuple:
        # CFG at scale 1 is the conditional prediction alone; the unconditional pass is skipped (guidance.py).
        def build(m: DiffusionModel, v: Callable) -> Callable[..., Tensor]:
            return guide(m.denoiser(), v(conditioning, False), v(conditioning, True), 1.0, m.schedule)

        return (Guider(model, build),)


class DualCFGGuider(Node):
    SCHEMA = NodeSchema(
        name="DualCFGGuider",
        display_name="Dual CFG Guider",
        category="sampling/guiders",
        description="Guidance between three conditionings: towards cond1 away from cond2 (cfg_conds), and towards "
        "cond2 away from the negative (cfg_cond2_negative).",
        inputs=[
            MODEL_SOCKET,
            Input("cond1", "CONDITIONING", tooltip="The conditioning guidance pushes towards most."),
            Input("cond2", "CONDITIONING", tooltip="The middle conditioning, e.g. the style without the subject."),
            Input("negative", "CONDITIONING", tooltip="What guidance steers away from."),
            dataclasses.replace(CFG_INPUT, name="cfg_conds", tooltip="The push from cond2 towards cond1."),
            dataclasses.replace(
                CFG_INPUT, name="cfg_cond2_negative", tooltip="The push from the negative towards cond2."
            ),
            Input(
                "style",
                "COMBO",
                options=["regular", "nested"],
                tooltip="regular adds the two pushes; nested applies the second to the result of the first.",
            ),
        ],
        outputs=[Output("GUIDER", tooltip="The model with its three conditionings and guidance.")],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        cond1: list[Cond],
        cond2: list[Cond],
        negative: list[Cond],
        cfg_conds: float,
        cfg_cond2_negative: float,
        style: str,
    ) -> tuple:
        nested = style == "nested"

        def build(m: DiffusionModel, v: Callable) -> Callable[..., Tensor]:
            conds = v(cond1, False), v(cond2, False), v(negative, True)
            return dual_cfg(m, *conds, cfg_conds, cfg_cond2_negative, nested)

        return (Guider(model, build),)


# --------------------------------------------------------------------------------------------------------------
# SAMPLER
# --------------------------------------------------------------------------------------------------------------


class KSamplerSelect(Node):
    SCHEMA = NodeSchema(
        name="KSamplerSelect",
        display_name="KSamplerSelect",
        category="sampling/samplers",
        description="Picks one of the KSampler's samplers by name, with its default options.",
        inputs=[
            Input("sampler_name", "COMBO", options=list(SAMPLERS), tooltip="The algorithm that walks down the sigmas.")
        ],
        outputs=[Output("SAMPLER", tooltip="The chosen sampler.")],
    )

    def run(self, ctx: NodeContext, sampler_name: str) -> tuple:
        return (SamplerChoice(sampler_name),)


def _amount(name: str, tooltip: str, default: float = 1.0) -> Input:
    return Input(name, "FLOAT", default=default, min=0.0, max=100.0, step=0.01, round=False, tooltip=tooltip)


ETA = _amount("eta", "How much of each step's noise is replaced by fresh noise: 0 is the ODE, 1 full ancestral.")
S_NOISE = _amount("s_noise", "A factor on the fresh noise added at each step (1: as much as the theory asks).")
NOISE_DEVICE = Input(
    "noise_device",
    "COMBO",
    options=["gpu", "cpu"],
    tooltip="Kept for ComfyUI's workflows: Atelier always draws the noise on the CPU, so a seed gives one image on "
    "every device.",
)


# One node per sampler with options, named as in ComfyUI (SamplerDPMPP_2M_SDE...); each gives a SamplerChoice.
# noise_device is accepted for ComfyUI's workflows and has no effect (see NOISE_DEVICE).


def _sampler_schema(name: str, sampler: str, description: str, inputs: list[Input]) -> NodeSchema:
    return NodeSchema(
        name=name,
        display_name=name,
        category="sampling/samplers",
        description=description,
        inputs=inputs,
        outputs=[Output("SAMPLER", tooltip=f"The {sampler} sampler with these options.")],
    )


class SamplerEulerAncestral(Node):
    SCHEMA = _sampler_schema(
        "SamplerEulerAncestral",
        "euler_ancestral",
        "Euler a: an Euler step down to sigma_down, then fresh noise back up to the next sigma.",
        [ETA, S_NOISE],
    )

    def run(self, ctx: NodeContext, eta: float, s_noise: float) -> tuple:
        return (SamplerChoice("euler_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_2S_Ancestral(Node):
    SCHEMA = _sampler_schema(
        "SamplerDPMPP_2S_Ancestral",
        "dpmpp_2s_ancestral",
        "DPM-Solver++(2S) (Lu et al. 2022) with fresh noise after each step, as Euler a adds it.",
        [ETA, S_NOISE],
    )

    def run(self, ctx: NodeContext, eta: float, s_noise: float) -> tuple:
        return (SamplerChoice("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_2M_SDE(Node):
    SCHEMA = _sampler_schema(
        "SamplerDPMPP_2M_SDE",
        "dpmpp_2m_sde",
        "DPM-Solver++(2M) for the reverse SDE (Lu et al. 2022): second order from the previous step, noise each step.",
        [
            Input(
                "solver_type",
                "COMBO",
                options=["midpoint", "heun"],
                tooltip="How the previous denoised guess enters the second-order term.",
            ),
            ETA,
            S_NOISE,
            NOISE_DEVICE,
        ],
    )

    def run(self, ctx: NodeContext, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple:
        return (SamplerChoice("dpmpp_2m_sde", {"solver_type": solver_type, "eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_3M_SDE(Node):
    SCHEMA = _sampler_schema(
        "SamplerDPMPP_3M_SDE",
        "dpmpp_3m_sde",
        "DPM-Solver++(3M) SDE: the 2M SDE with a quadratic through the last three denoised guesses.",
        [ETA, S_NOISE, NOISE_DEVICE],
    )

    def run(self, ctx: NodeContext, eta: float, s_noise: float, noise_device: str) -> tuple:
        return (SamplerChoice("dpmpp_3m_sde", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_SDE(Node):
    SCHEMA = _sampler_schema(
        "SamplerDPMPP_SDE",
        "dpmpp_sde",
        "DPM-Solver++ SDE: two stages per step, the first a fraction r of the way, fresh noise in each.",
        [ETA, S_NOISE, _amount("r", "Where the first stage stops, as a fraction of the step in log-sigma.", 0.5),
         NOISE_DEVICE],
    )  # fmt: skip

    def run(self, ctx: NodeContext, eta: float, s_noise: float, r: float, noise_device: str) -> tuple:
        return (SamplerChoice("dpmpp_sde", {"eta": eta, "s_noise": s_noise, "r": r}),)


class SamplerLMS(Node):
    SCHEMA = _sampler_schema(
        "SamplerLMS",
        "lms",
        "Linear multistep: the last few slopes interpolated by a polynomial in sigma, integrated over the step.",
        [Input("order", "INT", default=4, min=1, max=100, tooltip="How many past slopes the polynomial goes through.")],
    )

    def run(self, ctx: NodeContext, order: int) -> tuple:
        return (SamplerChoice("lms", {"order": order}),)


# --------------------------------------------------------------------------------------------------------------
# SIGMAS
# --------------------------------------------------------------------------------------------------------------

STEPS = Input("steps", "INT", default=20, min=1, max=10000, tooltip="Sampling steps: the list has steps + 1 sigmas.")
DENOISE = Input(
    "denoise",
    "FLOAT",
    default=1.0,
    min=0.0,
    max=1.0,
    step=0.01,
    tooltip="How much of the latent is redone: 1 from pure noise, less keeps only the last steps of a longer list.",
)


def _sigma_input(name: str, default: float, tooltip: str) -> Input:
    return Input(name, "FLOAT", default=default, min=0.0, max=5000.0, step=0.01, round=False, tooltip=tooltip)


SIGMA_MAX = _sigma_input("sigma_max", 14.614642, "The first noise level (SD1.5's highest trained sigma by default).")
SIGMA_MIN = _sigma_input("sigma_min", 0.0291675, "The last noise level before 0 (SD1.5's lowest by default).")
SIGMAS_OUT = [Output("SIGMAS", tooltip="The noise levels, high to low, ending at 0.")]


class BasicScheduler(Node):
    SCHEMA = NodeSchema(
        name="BasicScheduler",
        display_name="BasicScheduler",
        category="sampling/schedulers",
        description="The KSampler's sigmas: one of its schedulers over the model's trained noise levels.",
        inputs=[
            Input("model", "MODEL", tooltip="The model whose trained noise levels are spaced."),
            Input("scheduler", "COMBO", options=list(SCHEDULERS), tooltip="How the noise levels are spaced."),
            STEPS,
            DENOISE,
        ],
        outputs=SIGMAS_OUT,
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, scheduler: str, steps: int, denoise: float) -> tuple:
        if denoise <= 0.0:
            return (torch.zeros(0),)  # no sigmas: the sampler returns the latent untouched
        return (sigmas_for(scheduler, model.schedule, steps, denoise).cpu(),)


class KarrasScheduler(Node):
    SCHEMA = NodeSchema(
        name="KarrasScheduler",
        display_name="KarrasScheduler",
        category="sampling/schedulers",
        description="Karras et al. 2022 (EDM), eq. 5: sigmas evenly spaced in sigma^(1/rho), denser at low noise.",
        inputs=[
            STEPS,
            SIGMA_MAX,
            SIGMA_MIN,
            Input(
                "rho",
                "FLOAT",
                default=7.0,
                min=0.0,
                max=100.0,
                step=0.01,
                round=False,
                tooltip="The curvature: 1 is linear in sigma, 7 (the paper's) spends more steps at low noise.",
            ),
        ],
        outputs=SIGMAS_OUT,
    )

    def run(self, ctx: NodeContext, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple:
        if rho <= 0.0:
            raise InputError(f"rho must be above 0 (it divides the exponent), got {rho}.")
        return (karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    SCHEMA = NodeSchema(
        name="ExponentialScheduler",
        display_name="ExponentialScheduler",
        category="sampling/schedulers",
        description="Sigmas evenly spaced in log-sigma from sigma_max to sigma_min, then 0.",
        inputs=[STEPS, SIGMA_MAX, SIGMA_MIN],
        outputs=SIGMAS_OUT,
    )

    def run(self, ctx: NodeContext, steps: int, sigma_max: float, sigma_min: float) -> tuple:
        if sigma_min <= 0.0 or sigma_max <= 0.0:
            raise InputError(f"sigma_min and sigma_max must be above 0 (their logs are spaced), got {sigma_min} "
                             f"and {sigma_max}.")  # fmt: skip
        return (exponential(steps, sigma_min, sigma_max),)


class SDTurboScheduler(Node):
    SCHEMA = NodeSchema(
        name="SDTurboScheduler",
        display_name="SDTurboScheduler",
        category="sampling/schedulers",
        description="SD Turbo's few steps: timesteps 999, 899, ..., 99 (one every 100), starting lower for denoise "
        "below 1.",
        inputs=[
            Input("model", "MODEL", tooltip="The model whose trained noise levels are read."),
            Input("steps", "INT", default=1, min=1, max=10, tooltip="Steps, at most 10 (one per 100 timesteps)."),
            DENOISE,
        ],
        outputs=SIGMAS_OUT,
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, steps: int, denoise: float) -> tuple:
        start = 10 - int(10 * denoise)  # denoise 1: from t = 999; 0.5: from t = 499
        timesteps = (torch.arange(1, 11) * 100 - 1).flip(0)[start : start + steps]  # 999, 899, ..., 99
        sigmas = model.schedule.t_to_sigma(timesteps)
        return (torch.cat([sigmas, sigmas.new_zeros(1)]).cpu(),)


class SplitSigmas(Node):
    SCHEMA = NodeSchema(
        name="SplitSigmas",
        display_name="SplitSigmas",
        category="sampling/sigmas",
        description="Cuts a list of sigmas at a step into two that share it: the first pass ends where the second "
        "begins, so two samplers in a row walk the same path as one.",
        inputs=[
            Input("sigmas", "SIGMAS", tooltip="The noise levels to cut."),
            Input("step", "INT", default=0, min=0, max=10000, tooltip="The index of the sigma both halves share."),
        ],
        outputs=[
            Output("SIGMAS", name="high_sigmas", tooltip="sigmas[0 .. step]: the first, noisier steps."),
            Output("SIGMAS", name="low_sigmas", tooltip="sigmas[step ..]: the remaining steps."),
        ],
    )

    def run(self, ctx: NodeContext, sigmas: Tensor, step: int) -> tuple:
        return sigmas[: step + 1], sigmas[step:]


class FlipSigmas(Node):
    SCHEMA = NodeSchema(
        name="FlipSigmas",
        display_name="FlipSigmas",
        category="sampling/sigmas",
        description="Reverses the sigmas, low to high: sampling then adds noise instead of removing it (unsampling). "
        "A first sigma of 0 becomes 0.0001, since a step cannot start at 0.",
        inputs=[Input("sigmas", "SIGMAS", tooltip="The noise levels to reverse.")],
        outputs=[Output("SIGMAS", tooltip="The same levels, low to high.")],
    )

    def run(self, ctx: NodeContext, sigmas: Tensor) -> tuple:
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0)  # a copy: the input list, cached upstream, is left alone
        if flipped[0] == 0:
            flipped[0] = 0.0001
        return (flipped,)


CUSTOM_SAMPLING_NODES: tuple[type[Node], ...] = (
    SamplerCustom,
    BasicScheduler,
    KarrasScheduler,
    ExponentialScheduler,
    SDTurboScheduler,
    KSamplerSelect,
    SamplerEulerAncestral,
    SamplerLMS,
    SamplerDPMPP_3M_SDE,
    SamplerDPMPP_2M_SDE,
    SamplerDPMPP_SDE,
    SamplerDPMPP_2S_Ancestral,
    SplitSigmas,
    FlipSigmas,
    CFGGuider,
    DualCFGGuider,
    BasicGuider,
    RandomNoise,
    DisableNoise,
    SamplerCustomAdvanced,
)
"""ComfyUI's custom-sampling nodes that Atelier runs, in the order comfy_extras/nodes_custom_sampler.py lists them."""
