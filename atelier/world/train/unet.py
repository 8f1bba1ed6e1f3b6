"""Stage 3, the denoising UNet on pre-encoded latents: eps-prediction on SD's discrete schedule, conditioned by
cross-attention on the frozen text encoder's hidden states, 10% caption dropout for classifier-free guidance,
optionally noisy captions (another image's, as web alt-text often is), min-SNR loss weighting (Hang et al. 2023),
EMA weights."""

from __future__ import annotations

import dataclasses
import time

import torch

from atelier.imaging import uint8_to_signed
from atelier.models.clip import CLIPTextEncoder
from atelier.models.tokenizer import CLIPTokenizer
from atelier.models.unet import UNet
from atelier.models.vae import VAE
from atelier.sampling.denoisers import DiscreteSchedule
from atelier.world.train.loop import Stage, StageJob
from atelier.world.train.ranks import autocast, wrap_ddp
from atelier.world.train.weights import load_trained_vae, load_weights, save_weights


def encode_latents(vae: VAE, images_u8: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """All images -> their scaled latent means (N, 4, H/8, W/8), kept in bf16/fp32 on the same device."""
    out = []
    with torch.no_grad():
        for chunk in images_u8.split(batch):
            out.append(vae.encode(uint8_to_signed(chunk)).mean * vae.config.scaling_factor)
    return torch.cat(out)


def encode_captions(text: CLIPTextEncoder, tokens: torch.Tensor, dtype: torch.dtype, batch: int = 4096) -> torch.Tensor:
    """Every caption -> the frozen text encoder's last hidden state, once: (N, K, 77) ids -> (N, K, 77, D).

    The text encoder is frozen during the UNet stage, so running it at every step (as a pipeline does) would only
    repeat the same arithmetic; 400k captions at width 128 take ~8 GB of GPU memory in bf16."""
    flat = tokens.flatten(0, 1)
    out = []
    with torch.no_grad():
        for chunk in flat.split(batch):
            out.append(text(chunk.long()).last_hidden_state.to(dtype))
    return torch.cat(out).unflatten(0, tokens.shape[:2])


def pick_captions(
    idx: torch.Tensor, shape: tuple[int, int], gen: torch.Generator, dropout: float, noise: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The caption each training image of a batch (indices `idx` into the data, (B,)) is paired with, among the
    data's `shape` = (images, captions per image):
    (the image whose caption it is, which of its captions, dropped?), each (B,).

    `dropout`: the share of empty captions, which teach the unconditional model that classifier-free guidance
    needs (Ho & Salimans 2022). `noise`: the share of captions that belong to another random image. Web alt-text,
    on which SD was trained, often describes something else than its picture; a model that learns from such pairs
    follows its prompt loosely on its own (CFG 1) and needs guidance to follow it well, which is the lesson of
    CFG that the lab teaches. With perfect captions this world's model already follows them at CFG 1."""
    images, captions_per_image = shape
    pick = torch.randint(0, captions_per_image, idx.shape, generator=gen, device=idx.device)
    drop = torch.rand(idx.shape, generator=gen, device=idx.device) < dropout
    if noise <= 0:  # no extra draws: the random streams of runs without noise stay as they were
        return idx, pick, drop
    other = torch.randint(0, images, idx.shape, generator=gen, device=idx.device)
    mislabelled = torch.rand(idx.shape, generator=gen, device=idx.device) < noise
    return torch.where(mislabelled, other, idx), pick, drop


@dataclasses.dataclass(frozen=True)
class UNetOptions:
    """The unet stage's own options. A sentence about a bad value names the option by its command-line flag, where
    it has one."""

    ema_decay: float = 0.999  # the EMA weights' decay per step (after a short warm-up of the average)
    caption_dropout: float = 0.1  # share of empty captions, for classifier-free guidance (`pick_captions`)
    compile_model: bool = False  # --compile: torch.compile the UNet
    caption_noise: float = 0.0  # --caption-noise: share of captions taken from another image (`pick_captions`)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ema_decay is a decay per step, from 0 to 1; got {self.ema_decay}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout is a share of the captions, from 0 to 1; got {self.caption_dropout}")
        if not 0.0 <= self.caption_noise <= 1.0:
            raise ValueError(f"--caption-noise is a share of the captions, from 0 to 1; got {self.caption_noise}")


def train_unet(job: StageJob, options: UNetOptions = UNetOptions()) -> None:
    vae = load_trained_vae(job.out).to(job.ranks.device).eval()
    if vae.config.latent_channels != job.shapes.unet.in_channels:
        raise ValueError(
            f"The VAE in {job.out} has {vae.config.latent_channels} latent channels and the UNet's shapes expect "
            f"{job.shapes.unet.in_channels}; a widened VAE (--latent-channels) needs a UNet of as many channels."
        )
    text = CLIPTextEncoder(job.shapes.text).to(job.ranks.device).eval()
    load_weights(job.out / "text_encoder.safetensors", text)
    start = time.time()
    latents = encode_latents(vae, job.data.images)  # (N, 4, 16, 16) fp32
    dtype = torch.bfloat16 if job.ranks.device.type == "cuda" else torch.float32
    empty_ids = torch.tensor([[CLIPTokenizer.from_default()("")]], device=job.ranks.device)
    with autocast(job.ranks):
        contexts = encode_captions(text, job.data.tokens, dtype)  # (N, K, 77, D)
        empty = encode_captions(text, empty_ids, dtype)[0]  # (1, 77, D): the dropped caption
    del vae, text
    if job.ranks.main:
        print(
            f"[unet] {latents.shape[0]} latents and {contexts.shape[0] * contexts.shape[1]} captions encoded in "
            f"{time.time() - start:.1f} s, latent std {latents.std().item():.3f}",
            flush=True,
        )

    torch.manual_seed(job.seed + 2)
    unet = UNet(job.shapes.unet).to(job.ranks.device)
    ema = UNet(job.shapes.unet).to(job.ranks.device).eval().requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    cuda = job.ranks.device.type == "cuda"
    opt = torch.optim.AdamW(
        unet.parameters(), lr=job.settings.lr, weight_decay=0.01, betas=(0.9, 0.99), fused=cuda or None
    )
    stage = Stage("unet", job)
    if not stage.state_path.exists() and (job.out / "unet_ema.safetensors").exists():
        load_weights(job.out / "unet_ema.safetensors", unet)  # continue from shipped weights (fresh optimiser)
        ema.load_state_dict(unet.state_dict())
        if job.ranks.main:
            print("[unet] starting from the existing unet_ema.safetensors", flush=True)
    stage.resume({"unet": unet, "ema": ema}, opt)
    model = wrap_ddp(unet, job.ranks)
    compiled = torch.compile(model) if options.compile_model else None  # fuses GroupNorm+SiLU, elementwise tails

    def forward(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(x_t, t, context)
            except Exception as error:  # a compiler failure costs the speed-up, not the training run
                print(f"[unet] torch.compile failed ({type(error).__name__}: {error}); training eagerly", flush=True)
                compiled = None
        return model(x_t, t, context)

    schedule = DiscreteSchedule.scaled_linear()
    alphas_cumprod = schedule.alphas_cumprod.to(job.ranks.device).float()  # (1000,)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    min_snr_weight = snr.clamp(max=5.0) / snr  # min-SNR-5 weighting for eps-prediction (Hang et al. 2023)
    # Drawn on the training device: no host-to-device copy, and the host never waits for the GPU.
    gen = torch.Generator(job.ranks.device).manual_seed(job.seed * 1000 + 13 + job.ranks.rank + stage.step)
    n, dev = job.settings.batch, job.ranks.device

    def loss_fn() -> tuple[torch.Tensor, dict]:
        idx = torch.randint(0, latents.shape[0], (n,), generator=gen, device=dev)
        said, pick, drop = pick_captions(idx, contexts.shape[:2], gen, options.caption_dropout, options.caption_noise)
        context = torch.where(drop[:, None, None], empty, contexts[said, pick])  # (B, 77, D)
        x0 = latents[idx]
        t = torch.randint(0, 1000, (n,), generator=gen, device=dev)
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise  # forward process q(x_t | x_0), Ho et al. 2020 eq. 4
        with autocast(job.ranks):
            eps = forward(x_t, t.float(), context)
        per_item = (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))
        return (per_item * min_snr_weight[t]).mean(), {"mse": per_item.mean().detach()}

    ema_params, params = list(ema.parameters()), list(unet.parameters())

    @torch.no_grad()
    def update_ema() -> None:
        decay = min(options.ema_decay, (1 + stage.step) / (10 + stage.step))  # short warm-up of the average
        torch._foreach_lerp_(ema_params, params, 1 - decay)

    stage.run({"unet": unet, "ema": ema}, opt, loss_fn, after_step=update_ema, save_every=2000)
    if job.ranks.main:
        save_weights(job.out / "unet_ema.safetensors", ema, job.shapes.unet)
