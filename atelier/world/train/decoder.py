"""The decoder stage (optional, after the vae stage): the VAE's decoder alone sharpened with its encoder frozen, so
the latents do not move."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from atelier.models.vae import VAE
from atelier.world.train.loop import Stage, StageJob
from atelier.world.train.ranks import autocast, wrap_ddp
from atelier.world.train.vae import reconstruction_errors
from atelier.world.train.weights import load_trained_vae, save_weights


@dataclasses.dataclass(frozen=True)
class DecoderOptions:
    """The decoder stage's own options."""

    latent_noise: float = 0.1  # Gaussian noise added to the latents the decoder sees, in units of their std

    def __post_init__(self) -> None:
        if self.latent_noise < 0:
            raise ValueError(f"latent_noise is a standard deviation, 0 or more; got {self.latent_noise}")


def train_decoder(job: StageJob, options: DecoderOptions = DecoderOptions()) -> None:
    """Sharpen the VAE's decoder with its encoder frozen (what Stability did for SD's "ft-MSE" decoder).

    The latents do not move, so the text encoder and the UNet trained on them stay valid: only the pictures they
    decode to get sharper. The decoder sees the posterior mean, as the UNet's training latents are, plus a little
    Gaussian noise (`options.latent_noise` in units of the latents' std) so that it also cleans up the small errors of a
    generated latent. The edge term weighs as much as L1 here: thin parts (rays, masts, star points) are what the
    first stage blurred."""
    vae = load_trained_vae(job.out).to(job.ranks.device)
    config = vae.config
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    trained = [vae.post_quant_conv, vae.decoder]
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=job.settings.lr, weight_decay=0.0, betas=(0.9, 0.99))
    stage = Stage("decoder", job)
    stage.resume({"vae": vae}, opt)
    decoder = wrap_ddp(_Decode(vae), job.ranks)
    gen = torch.Generator().manual_seed(job.seed * 1000 + 29 + job.ranks.rank + stage.step)
    noise_std = options.latent_noise / config.scaling_factor  # the raw latents' std is 1 / scaling_factor

    def loss_fn() -> tuple[torch.Tensor, dict]:
        images, _ = job.data.batch(job.settings.batch, gen)
        with torch.no_grad(), autocast(job.ranks):
            z = vae.encode(images).mean.float()
        z = z + noise_std * torch.randn(z.shape, generator=gen).to(z.device)
        with autocast(job.ranks):
            recon = decoder(z)
        l1, edge = reconstruction_errors(recon, images)
        return l1 + edge, {"l1": l1, "edge": edge}

    stage.run({"vae": vae}, opt, loss_fn)
    if job.ranks.main:
        save_weights(job.out / "vae.safetensors", vae, config)  # same encoder, same scaling factor


class _Decode(nn.Module):
    """The decoder half as one module for DDP (its gradients are the only ones to all-reduce)."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.post_quant_conv, self.decoder = vae.post_quant_conv, vae.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))
