"""Training the embedded model on the procedural world, in three resumable stages: vae, clip, unet.

    python -m atelier.world.train --stage vae  --out runs/embedded            # one process (CPU or one GPU)
    torchrun --nproc_per_node 4 -m atelier.world.train --stage unet --out runs/embedded   # several GPUs (DDP)

Each stage reads what the previous ones wrote in `--out` and writes its own weights there (safetensors, plus a
`<stage>.state.pt` with optimiser state and step count, so a stage killed half-way resumes where it stopped).
Each rank renders its own slice of the world into memory (on the GPU when there is one): the data set is never
read from disk, and is the same for a given seed, whatever the number of ranks.

The recipe follows latent diffusion (Rombach et al. 2022), scaled down:
1. vae:  an autoencoder 128x128x3 -> 16x16x4 (L1 + edge loss + a tiny KL term), then the latent scaling factor
         1/std so the UNet sees unit-variance latents, as SD's 0.18215. Continued from existing weights, it keeps
         the new ones only if the judge (the classifier) reads at least as many object kinds through them.
   decoder (optional, later): the decoder alone sharpened with the encoder frozen; the latents do not move.
2. clip: the CLIP text transformer and a small image encoder trained contrastively (InfoNCE, Radford et al. 2021)
         on the world's English and French captions, so "rouge" lands near "red".
3. unet: eps-prediction on SD's discrete schedule, conditioned by cross-attention on the frozen text encoder's
         hidden states, 10% caption dropout for classifier-free guidance, optionally noisy captions (another
         image's, as web alt-text often is), min-SNR loss weighting (Hang et al. 2023), EMA weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from atelier.world.train.classifier import ClassifierOptions, train_classifier
from atelier.world.train.clip import train_clip
from atelier.world.train.data import render_world
from atelier.world.train.decoder import train_decoder
from atelier.world.train.loop import StageJob, StageSettings
from atelier.world.train.pack import pack, unpack
from atelier.world.train.ranks import init_ranks
from atelier.world.train.shapes import EmbeddedShapes
from atelier.world.train.unet import UNetOptions, train_unet
from atelier.world.train.vae import VAEOptions, train_vae
from atelier.world.worlds import WORLD_NAMES

DEFAULTS = {
    "vae": StageSettings(steps=3000, batch=64, lr=4e-4),
    "decoder": StageSettings(steps=4000, batch=64, lr=2e-4),
    "clip": StageSettings(steps=2000, batch=512, lr=5e-4),
    "unet": StageSettings(steps=30000, batch=256, lr=3e-4, warmup=500),
    "classifier": StageSettings(steps=3000, batch=256, lr=1e-3),
}

STAGES = tuple(DEFAULTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the embedded model on the procedural world.")
    parser.add_argument(
        "--stage",
        choices=STAGES,
        action="append",
        default=[],
        help="stage(s) to run, in order; repeat the flag for several",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/embedded"))
    parser.add_argument("--images", type=int, default=100_000, help="rendered images per rank")
    parser.add_argument("--captions", type=int, default=4, help="captions per image (EN and FR)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes per rank")
    parser.add_argument("--steps", type=int, help="override the stage's step count")
    parser.add_argument("--batch", type=int, help="override the stage's per-rank batch")
    parser.add_argument("--lr", type=float, help="override the stage's learning rate")
    parser.add_argument("--budget", type=float, help="stop after this many seconds in all (stages resume later)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--world", choices=WORLD_NAMES, default="v1", help="the world to train on (v1: the shipped model's)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, for testing the code on a CPU")
    parser.add_argument("--device")
    parser.add_argument("--init", type=Path, help="start from this shipped checkpoint (see unpack)")
    parser.add_argument("--pack", type=Path, help="after the stages, write the shipped checkpoint to this path")
    parser.add_argument("--warmup", type=int, help="override the stage's learning-rate warm-up steps")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (unet stage)")
    parser.add_argument(
        "--caption-noise", type=float, default=0.0, help="unet stage: share of captions taken from another image"
    )
    parser.add_argument("--edge-weight", type=float, default=0.5, help="vae stage: weight of the edge L1 term")
    parser.add_argument(
        "--latent-channels", type=int, help="vae stage: latent channels (more than the existing VAE's: widened)"
    )
    return parser


def stage_settings(name: str, args: argparse.Namespace) -> StageSettings:
    """The stage's DEFAULTS, with the numbers the command line overrides."""
    overrides = {field: getattr(args, field) for field in ("steps", "batch", "lr", "warmup")}
    return dataclasses.replace(DEFAULTS[name], **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # each stage's own options check their ranges, whichever stages run
        vae_options = VAEOptions(edge_weight=args.edge_weight, latent_channels=args.latent_channels)
        unet_options = UNetOptions(compile_model=args.compile, caption_noise=args.caption_noise)
        classifier_options = ClassifierOptions(images_per_rank=args.images)
    except ValueError as error:
        parser.error(str(error))
    runs: dict[str, Callable[[StageJob], None]] = {
        "vae": partial(train_vae, options=vae_options),
        "decoder": train_decoder,
        "clip": train_clip,
        "unet": partial(train_unet, options=unet_options),
        "classifier": partial(train_classifier, options=classifier_options),
    }

    started = time.time()
    ranks = init_ranks(args.device)
    shapes = EmbeddedShapes.tiny() if args.tiny else EmbeddedShapes()
    args.out.mkdir(parents=True, exist_ok=True)
    if ranks.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    workers = max(1, args.workers // ranks.world)
    if args.init is not None and ranks.main:
        unpack(args.init, args.out)
    if ranks.world > 1:
        dist.barrier()
    needs_world = any(name != "classifier" for name in args.stage)
    data = None
    if needs_world:
        data = render_world(args.images, args.seed, ranks, shapes.image_size, args.captions, workers, args.world)
    for name in args.stage:
        budget = None if args.budget is None else max(1.0, args.budget - (time.time() - started))
        settings = stage_settings(name, args)
        runs[name](StageJob(shapes, data, args.out, settings, ranks, budget, args.seed, workers, args.world))
        if ranks.world > 1:
            dist.barrier()  # the next stage reads what rank 0 just wrote
    if args.pack is not None and ranks.main:
        notes = {"seed": args.seed, "images_per_rank": args.images, "ranks": ranks.world}
        if "unet" in args.stage:
            notes["caption_noise"] = unet_options.caption_noise
        if "vae" in args.stage:
            notes["edge_weight"] = vae_options.edge_weight
            if vae_options.latent_channels is not None:
                notes["latent_channels"] = vae_options.latent_channels
        for path in pack(args.out, args.pack, shapes, notes, world=args.world):
            print(f"[pack] wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    if ranks.world > 1:
        dist.destroy_process_group()
