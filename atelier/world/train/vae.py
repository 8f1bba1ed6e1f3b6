"""Stage 1, the autoencoder: 128x128x3 -> 16x16x4 (L1 + edge loss + a tiny KL term), then the latent scaling factor
1/std so that the UNet sees unit-variance latents, as SD's 0.18215 (latent diffusion, Rombach et al. 2022).

Continued from existing weights, it keeps the new ones only if the judge (the classifier stage's network) reads at
least as many object kinds through them (`round_trip_judge`). `--latent-channels 8` continues a 4-channel VAE with
a wider latent (`widen_latent_channels`): the new channels start unread by the decoder, so training begins from
the very images the old VAE drew and the judge's "before" reading is the old VAE's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from atelier.imaging import bhwc_uint8_to_bchw_signed
from atelier.models.vae import VAE
from atelier.world.train.loop import Stage, StageJob
from atelier.world.train.ranks import autocast, wrap_ddp
from atelier.world.train.weights import load_vae_file, load_weights, save_weights


def _sobel(x: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical finite differences: an L1 on them keeps the pictograms' edges sharp."""
    return torch.cat([x[..., :, 1:] - x[..., :, :-1], (x[..., 1:, :] - x[..., :-1, :]).transpose(-1, -2)], dim=-1)


def reconstruction_errors(recon: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, L1 of the edges) between decoded and true images, both (B, 3, H, W) in [-1, 1]."""
    recon = recon.float()
    return (recon - images).abs().mean(), (_sobel(recon) - _sobel(images)).abs().mean()


class _AutoencoderPass(nn.Module):
    """encode -> sample the posterior (reparameterisation trick) -> decode, as one forward for DDP."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(images)
        z = posterior.mean + posterior.std * torch.randn_like(posterior.mean)
        return self.vae.decode(z), posterior.mean, posterior.logvar


@dataclasses.dataclass(frozen=True)
class VAEOptions:
    """The vae stage's own options. A sentence about a bad value names the option by its command-line flag."""

    edge_weight: float = 0.5  # --edge-weight: the L1 of the edges (`_sobel`) next to the L1 of the pixels
    latent_channels: int | None = None  # --latent-channels: None keeps the existing VAE's (or the shapes') count

    def __post_init__(self) -> None:
        if self.edge_weight < 0:
            raise ValueError(f"--edge-weight is a loss weight, 0 or more; got {self.edge_weight}")
        if self.latent_channels is not None and self.latent_channels < 1:
            raise ValueError(f"--latent-channels is a number of channels, 1 or more; got {self.latent_channels}")


def widen_latent_channels(state: dict[str, torch.Tensor], channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A VAE's weights with `channels` latent channels instead of its C, drawing the same images.

    Four tensors touch the latent; each keeps its old block and gets new rows or columns (C' - C new channels):
        encoder.conv_out   (2C, c, 3, 3) -> (2C', c, 3, 3)   moments = [mean (C), logvar (C)]: new mean rows drawn
                                                            at the old rows' scale; new logvar rows 0 (unused)
        quant_conv         (2C, 2C) -> (2C', 2C')           old block kept; a new mean passes straight through; a
                                                            new logvar is an old one (so the posterior noise stays
                                                            the trained VAE's, exp(logvar / 2) ~ 0.002, not 1)
        post_quant_conv    (C, C) -> (C', C')               old block kept; the new channels pass straight through
        decoder.conv_in    (c, C, 3, 3) -> (c, C', 3, 3)    new input columns 0: the decoder does not read them yet
    Only the decoder's side starts at zero, so both sides get gradients (zero on both would stay zero)."""
    old = state["post_quant_conv.weight"].shape[0]
    if channels < old:
        raise ValueError(f"--latent-channels can widen a VAE, not narrow it: it has {old}, asked for {channels}")
    if channels == old:
        return dict(state)
    new, gen = channels - old, torch.Generator().manual_seed(seed)
    out = dict(state)

    w, b = state["encoder.conv_out.weight"], state["encoder.conv_out.bias"]  # (2C, c, 3, 3), (2C,)
    fresh = torch.randn((new, *w.shape[1:]), generator=gen) * w[:old].std()
    unused = torch.zeros((new, *w.shape[1:]))
    out["encoder.conv_out.weight"] = torch.cat([w[:old], fresh, w[old:], unused])
    out["encoder.conv_out.bias"] = torch.cat([b[:old], torch.zeros(new), b[old:], torch.zeros(new)])

    w, b = state["quant_conv.weight"], state["quant_conv.bias"]  # (2C, 2C, 1, 1), (2C,)
    at = torch.tensor([*range(old), *range(channels, channels + old)])  # the old moments in the wider layout
    q, qb = torch.zeros(2 * channels, 2 * channels, 1, 1), torch.zeros(2 * channels)
    q[at[:, None], at[None, :]], qb[at] = w, b
    for j in range(old, channels):
        q[j, j] = 1.0  # a new mean passes through
        q[channels + j, at] = w[old + j % old]  # a new logvar is old logvar j % C, read from the old moments
        qb[channels + j] = b[old + j % old]
    out["quant_conv.weight"], out["quant_conv.bias"] = q, qb

    w, b = state["post_quant_conv.weight"], state["post_quant_conv.bias"]  # (C, C, 1, 1), (C,)
    pq = torch.zeros(channels, channels, 1, 1)
    pq[:old, :old] = w
    pq[range(old, channels), range(old, channels)] = 1.0
    out["post_quant_conv.weight"], out["post_quant_conv.bias"] = pq, torch.cat([b, torch.zeros(new)])

    w = state["decoder.conv_in.weight"]  # (c, C, 3, 3)
    out["decoder.conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], new, *w.shape[2:])], dim=1)
    return out


def starting_vae(job: StageJob, options: VAEOptions) -> tuple[VAE, bool]:
    """The VAE the stage trains, and whether it continues existing weights: `job.out`'s vae.safetensors (widened
    to --latent-channels when asked), else a new one of the job's shapes."""
    path, channels = job.out / "vae.safetensors", options.latent_channels
    if not path.exists():
        config = job.shapes.vae if channels is None else dataclasses.replace(job.shapes.vae, latent_channels=channels)
        return VAE(config), False
    vae = load_vae_file(path)
    if channels is None or channels == vae.config.latent_channels:
        return vae, True
    wide = VAE(dataclasses.replace(vae.config, latent_channels=channels))
    wide.load_state_dict(widen_latent_channels(vae.state_dict(), channels, job.seed))
    return wide, True


def train_vae(job: StageJob, options: VAEOptions = VAEOptions()) -> None:
    """Stage 1, the autoencoder.

    When `job.out` already holds a vae.safetensors (from --init or an earlier run), training continues from it, and at
    the end the judge reads object kinds through both autoencoders (`round_trip_judge`): the new one is written
    only if it reads at least as many. During training only vae.state.pt is written, so a stage resumed after a
    time budget still compares with the weights it first started from."""
    torch.manual_seed(job.seed)
    vae, existing = starting_vae(job, options)
    vae = vae.to(job.ranks.device)
    judge = (
        round_trip_judge(job.out, job.shapes.image_size, job.workers, world=job.world) if job.ranks.main else None
    )  # None: no classifier yet
    before = None  # the judge's reading through the VAE we start from, when there is one
    if existing:
        # Continue from existing weights: the latents move little, so the UNet can follow by fine-tuning. A resumed
        # stage loads its own state over them below.
        before = judge(vae) if judge is not None else None
    opt = torch.optim.AdamW(vae.parameters(), lr=job.settings.lr, weight_decay=0.0, betas=(0.9, 0.99))
    stage = Stage("vae", job)  # its clock starts after the judge
    if job.ranks.main and existing and not stage.state_path.exists():
        print("[vae] starting from the existing vae.safetensors", flush=True)
    stage.resume({"vae": vae}, opt)
    model = wrap_ddp(_AutoencoderPass(vae), job.ranks)
    gen = torch.Generator().manual_seed(job.seed * 1000 + job.ranks.rank + stage.step)

    def loss_fn() -> tuple[torch.Tensor, dict]:
        images, _ = job.data.batch(job.settings.batch, gen)
        with autocast(job.ranks):
            recon, mean, logvar = model(images)
        l1, edge = reconstruction_errors(recon, images)
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
        return l1 + options.edge_weight * edge + 1e-6 * kl, {"l1": l1, "edge": edge, "kl": kl}

    stage.run({"vae": vae}, opt, loss_fn)

    # The latent scaling factor: 1 / std of the latents over a sample of the data, so that the UNet's inputs have
    # unit variance (SD1.x measured 0.18215 the same way).
    vae.eval()
    with torch.no_grad():
        images, _ = job.data.batch(min(512, job.data.images.shape[0]), torch.Generator().manual_seed(job.seed))
        latents = torch.cat([vae.encode(chunk).mean.float() for chunk in images.split(64)])
    std = job.ranks.all_mean(latents.std().item())
    config = dataclasses.replace(vae.config, scaling_factor=round(1.0 / std, 5))
    if not job.ranks.main:
        return
    after = judge(vae) if judge is not None else None
    if after is not None:
        with stage.log_path.open("a") as f:
            f.write(json.dumps({"step": stage.step, "judge_kind_before": before, "judge_kind_after": after}) + "\n")
        print(f"[vae] the judge reads the kind of {after:.1%} of drawn objects after a round trip", flush=True)
    if before is not None and after is not None and after < before:
        print(f"[vae] it read {before:.1%} through the VAE we started from: that one stays", flush=True)
        return
    save_weights(job.out / "vae.safetensors", vae, config)
    print(f"[vae] latent std {std:.4f} -> scaling_factor {config.scaling_factor}", flush=True)


# The scenes round_trip_judge draws: a seed of its own, far from the small data seeds of the stages (--seed and the
# streams derived from it) and from atelier eval's streams.
JUDGE_SCENES_SEED = 7_000_001


def round_trip_judge(
    out: Path, size: int, workers: int, count: int = 1000, world: str = "v1"
) -> Callable[[VAE], float] | None:
    """A function that measures the ceiling of generation for a VAE: the share of objects drawn in `count` fresh
    renders whose kind the judge (the classifier stage's network in `out`) still reads after a trip through the VAE
    (as `atelier eval`'s section 1 measures it). The classifier is loaded and the scenes rendered once, for all the
    VAEs it is given. None when there is no trained classifier yet."""
    from atelier.world.evaluate import (
        new_classifier,
        object_kind_accuracy,
        read_images,
        render_labelled,
        vae_round_trip,
    )

    if not (out / "classifier.safetensors").exists():
        return None
    with torch.random.fork_rng(devices=[]):  # the classifier's initialisation leaves training's CPU stream alone
        classifier = new_classifier(world).eval()
    load_weights(out / "classifier.safetensors", classifier)
    images, _, scenes = render_labelled(seed=JUDGE_SCENES_SEED, count=count, size=size, workers=workers, world=world)

    def judge(vae: VAE) -> float:
        device, was_training = next(vae.parameters()).device, vae.training
        round_trips = vae_round_trip(vae.eval(), bhwc_uint8_to_bchw_signed(images))
        readings = read_images(classifier.to(device), round_trips, world=world)
        vae.train(was_training)
        return object_kind_accuracy(readings, scenes)

    return judge
