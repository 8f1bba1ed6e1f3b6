"""The KSamplers: a latent denoised step by step, guided by the positive and negative conditioning."""

from __future__ import annotations

import dataclasses

from atelier.graph.kit import KSAMPLER_INPUTS, SAMPLER_INPUTS, SEED_INPUT, Node, run_sampler
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.pipeline import Cond, DiffusionModel, SamplerSettings
from atelier.sampling.denoisers import DiscreteSchedule


class KSampler(Node):
    SCHEMA = NodeSchema(
        name="KSampler",
        display_name="KSampler",
        category="sampling",
        description="Denoises a latent step by step, guided by the positive and negative conditioning.",
        inputs=KSAMPLER_INPUTS,
        outputs=[Output("LATENT", tooltip="The denoised latent.")],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: list[Cond],
        negative: list[Cond],
        latent_image: dict,
        denoise: float = 1.0,
    ) -> tuple:
        settings = SamplerSettings(seed, steps, cfg, sampler_name, scheduler, denoise)
        return (run_sampler(ctx, model, latent_image, positive, negative, settings),)


class KSamplerAdvanced(Node):
    SCHEMA = NodeSchema(
        name="KSamplerAdvanced",
        display_name="KSampler (Advanced)",
        category="sampling",
        description="The KSampler run over a slice of its steps: chain two of them to hand a half-denoised latent "
        "from one model to another, or to start from a latent that already holds noise.",
        inputs=[
            Input("model", "MODEL", tooltip="The model used for denoising the input latent."),
            Input(
                "add_noise",
                "COMBO",
                options=["enable", "disable"],
                tooltip="enable noises the latent to the first sigma; disable when it already holds noise (a "
                "previous sampler's leftover).",
            ),
            dataclasses.replace(SEED_INPUT, name="noise_seed"),
            *SAMPLER_INPUTS,
            Input(
                "start_at_step",
                "INT",
                default=0,
                min=0,
                max=10000,
                tooltip="The step to start at, out of steps; the steps before it are skipped.",
            ),
            Input(
                "end_at_step",
                "INT",
                default=10000,
                min=0,
                max=10000,
                tooltip="The step to stop at; steps or more runs to the end.",
            ),
            Input(
                "return_with_leftover_noise",
                "COMBO",
                options=["disable", "enable"],
                tooltip="When stopping early: enable returns the latent still noisy, for a next sampler; disable "
                "takes the last step down to sigma 0 (a clean latent).",
            ),
        ],
        outputs=[Output("LATENT", tooltip="The latent after the chosen steps.")],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: list[Cond],
        negative: list[Cond],
        latent_image: dict,
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
    ) -> tuple:
        settings = SamplerSettings(noise_seed, steps, cfg, sampler_name, scheduler, 1.0)
        out = run_sampler(
            ctx,
            model,
            latent_image,
            positive,
            negative,
            settings,
            add_noise=add_noise == "enable",
            start_step=start_at_step,
            end_step=end_at_step,
            force_full_denoise=return_with_leftover_noise != "enable",
        )
        return (out,)


class ModelSamplingDiscrete(Node):
    SCHEMA = NodeSchema(
        name="ModelSamplingDiscrete",
        display_name="ModelSamplingDiscrete",
        category="advanced/model",
        description="Says what the model predicts (noise or velocity) and whether its noise schedule is rescaled "
        "to a zero terminal SNR, for checkpoints whose file does not say it (e.g. SD 2.x 768-v fine-tunes).",
        inputs=[
            Input("model", "MODEL", tooltip="The model to sample with."),
            Input(
                "sampling",
                "COMBO",
                options=["eps", "v_prediction"],
                default="eps",
                tooltip="eps: the network predicts the noise (SD1.x, SD 2.x base, SDXL); v_prediction: the "
                "velocity (Salimans & Ho 2022; SD 2.x 768-v).",
            ),
            Input(
                "zsnr",
                "BOOLEAN",
                default=False,
                tooltip="Rescale the schedule so that its last step is pure noise (Lin et al. 2024), for models "
                "trained that way.",
            ),
        ],
        outputs=[Output("MODEL", tooltip="The same network with this prediction type and schedule.")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, sampling: str, zsnr: bool) -> tuple:
        schedule = DiscreteSchedule.scaled_linear()  # ComfyUI starts from the default schedule too
        if zsnr:
            schedule = schedule.zero_terminal_snr()
        prediction = "v" if sampling == "v_prediction" else "eps"
        return (dataclasses.replace(model, schedule=schedule, prediction=prediction),)
