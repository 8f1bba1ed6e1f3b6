"""Loaders: a checkpoint file -> MODEL, CLIP and VAE; a VAE file -> VAE."""

from __future__ import annotations

import logging

import torch

from atelier.graph.kit import ClipModel, Node
from atelier.graph.schema import Input, NodeContext, NodeSchema, Output
from atelier.models.library import latent_rgb
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
        return model, ClipModel(ckpt.text_encoder, ckpt.tokenizer), ckpt.vae


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
