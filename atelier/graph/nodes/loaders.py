"""Loaders: a checkpoint file -> MODEL, CLIP and VAE; a VAE file -> VAE; a LoRA file -> patched MODEL and CLIP."""

from __future__ import annotations

import dataclasses
import logging

import torch

from atelier.graph.kit import ClipModel, Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.models.embeddings import EmbeddingFolder
from atelier.models.library import latent_rgb
from atelier.models.lora import WeightPatch, load_lora
from atelier.pipeline import DiffusionModel, fit_latent_to_rgb

log = logging.getLogger(__name__)


class CheckpointLoaderSimple(Node):
    SCHEMA = NodeSchema(
        name="CheckpointLoaderSimple",
        display_name="Load Checkpoint",
        category="loaders",
        description="Loads a diffusion model checkpoint: the UNet (MODEL), the text encoder (CLIP) and the VAE.",
        inputs=[Input("ckpt_name", "COMBO", options=(), tooltip="The checkpoint to load.")],
        outputs=[
            Output("MODEL", tooltip="The denoising UNet."),
            Output("CLIP", tooltip="The text encoder that turns prompts into conditioning."),
            Output("VAE", tooltip="The autoencoder between images and latents."),
        ],
    )

    def run(self, ctx: NodeContext, ckpt_name: str) -> tuple:
        from atelier.models.checkpoint import load_checkpoint

        path = self.env.checkpoint_path(ckpt_name)
        ckpt = load_checkpoint(path, device=self.env.device, dtype=self.env.dtype)
        if self.env.fast is not False and ckpt.device.type == "cuda":  # imported here: torch.compile costs ~1 s
            from atelier.models.fast import accelerate

            ckpt = accelerate(ckpt, enabled=self.env.fast)
            log.info("%s: fast path on; its first image compiles for a while (--no-fast: readable modules)", ckpt_name)
        stored = latent_rgb(path)
        preview = torch.tensor(stored) if stored is not None else fit_latent_to_rgb(ckpt.vae, size=32)
        model = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor, preview=preview)
        embeddings = EmbeddingFolder(self.env.models, ckpt.text_encoder_config.width)
        return model, ClipModel(ckpt.text_encoder, ckpt.tokenizer, embeddings=embeddings), ckpt.vae


class VAELoader(Node):
    SCHEMA = NodeSchema(
        name="VAELoader",
        display_name="Load VAE",
        category="loaders",
        description="Loads a standalone VAE from models/vae, to decode and encode with it instead of the "
        "checkpoint's own.",
        inputs=[Input("vae_name", "COMBO", options=(), tooltip="The VAE file to load, from models/vae.")],
        outputs=[
            Output("VAE", tooltip="The autoencoder between images and latents (latents are 8x smaller per side).")
        ],
    )

    def run(self, ctx: NodeContext, vae_name: str) -> tuple:
        from atelier.models.checkpoint import load_vae

        return (load_vae(self.env.models.resolve("vae", vae_name), device=self.env.device, dtype=self.env.dtype),)


# --------------------------------------------------------------------------------------------------------------
# LoRA: the same networks, with a patch added to the list each MODEL / CLIP carries (nothing is copied)
# --------------------------------------------------------------------------------------------------------------

LORA_NAME_INPUT = Input("lora_name", "COMBO", options=(), tooltip="The LoRA file, from models/loras.")
STRENGTH_MODEL_INPUT = Input(
    "strength_model",
    "FLOAT",
    default=1.0,
    min=-100.0,
    max=100.0,
    step=0.01,
    tooltip="How strongly to modify the diffusion model: W + strength x change (0: unchanged, negative: the opposite).",
)


def _with_lora(model: DiffusionModel, clip: ClipModel | None, path, strength_model: float, strength_clip: float):
    """`model` and `clip` with the LoRA at `path` appended to their patch lists (a strength of 0 adds nothing)."""
    text_config = clip.text_encoder.config if clip is not None else None
    lora = load_lora(path, model.unet.config, text_config)
    if lora.unmatched:
        log.warning("%s", lora.summary())
    if strength_model != 0.0:
        model = dataclasses.replace(model, patches=(*model.patches, WeightPatch(lora.unet, strength_model, lora.name)))
    if clip is not None and strength_clip != 0.0:
        patch = WeightPatch(lora.text_encoder, strength_clip, lora.name)
        clip = dataclasses.replace(clip, patches=(*clip.patches, patch))
    return model, clip


class LoraLoader(Node):
    SCHEMA = NodeSchema(
        name="LoraLoader",
        display_name="Load LoRA",
        category="loaders",
        description="Applies a LoRA (or LoCon, LoHa, LoKr, DoRA) file to the diffusion model and the text encoder. "
        "The weights are patched only while a sampler or a text encoder runs and restored exactly afterwards, so "
        "loaders can be chained and the checkpoint is never copied.",
        inputs=[
            Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            Input("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
            LORA_NAME_INPUT,
            STRENGTH_MODEL_INPUT,
            Input(
                "strength_clip",
                "FLOAT",
                default=1.0,
                min=-100.0,
                max=100.0,
                step=0.01,
                tooltip="How strongly to modify the CLIP model (0: unchanged).",
            ),
        ],
        outputs=[
            Output("MODEL", tooltip="The diffusion model with the LoRA in its patch list."),
            Output("CLIP", tooltip="The CLIP model with the LoRA in its patch list."),
        ],
    )

    def run(
        self,
        ctx: NodeContext,
        model: DiffusionModel,
        clip: ClipModel,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> tuple:
        path = self.env.models.resolve("loras", lora_name)
        return _with_lora(model, clip, path, strength_model, strength_clip)


class LoraLoaderModelOnly(Node):
    SCHEMA = NodeSchema(
        name="LoraLoaderModelOnly",
        display_name="LoraLoaderModelOnly",
        category="loaders",
        description="Applies a LoRA file to the diffusion model alone (its text-encoder part, if any, is left out).",
        inputs=[
            Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
            LORA_NAME_INPUT,
            STRENGTH_MODEL_INPUT,
        ],
        outputs=[Output("MODEL", tooltip="The diffusion model with the LoRA in its patch list.")],
    )

    def run(self, ctx: NodeContext, model: DiffusionModel, lora_name: str, strength_model: float) -> tuple:
        path = self.env.models.resolve("loras", lora_name)
        return (_with_lora(model, None, path, strength_model, 0.0)[0],)
