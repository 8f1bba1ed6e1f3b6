"""The KSamplers: a latent denoised step by step, guided by the positive and negative conditioning."""

from __future__ import annotations

from atelier.graph.kit import KSAMPLER_INPUTS, SAMPLER_INPUTS, SEED_MAX, Node, run_sampler
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.pipeline import Cond, DiffusionModel, SamplerSettings


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
        inputs=[
            Input("model", "MODEL"),
            Input("add_noise", "COMBO", options=["enable", "disable"]),
            Input("noise_seed", "INT", default=0, min=0, max=SEED_MAX, control_after_generate=True),
            *SAMPLER_INPUTS,
            Input("start_at_step", "INT", default=0, min=0, max=10000),
            Input("end_at_step", "INT", default=10000, min=0, max=10000),
            Input("return_with_leftover_noise", "COMBO", options=["disable", "enable"]),
        ],
        outputs=[Output("LATENT")],
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
