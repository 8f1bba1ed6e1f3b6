"""Packing: the stages' weights -> the shipped files, and back (`unpack`, to continue training from them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from atelier.imaging import bhwc_uint8_to_bchw_signed
from atelier.models.clip import CLIPTextEncoder
from atelier.models.unet import UNet
from atelier.world.encoders import ImageEncoder
from atelier.world.train.shapes import EmbeddedShapes
from atelier.world.train.weights import load_trained_vae, load_weights, save_weights


def unpack(checkpoint: Path, out: Path) -> None:
    """The inverse of `pack`: a shipped checkpoint (+ extras) -> the stage files in `out`, to continue training."""
    from atelier.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint, device="cpu", dtype="fp32")
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "vae.safetensors", ckpt.vae, ckpt.vae_config)
    save_weights(out / "text_encoder.safetensors", ckpt.text_encoder, ckpt.text_encoder_config)
    save_weights(out / "unet_ema.safetensors", ckpt.unet, ckpt.unet_config)
    extras_path = checkpoint.with_name(checkpoint.stem + "-extras.safetensors")
    if extras_path.exists():
        extras = load_file(str(extras_path))
        for prefix in ("image_encoder", "classifier"):
            part = {k[len(prefix) + 1 :]: v.float() for k, v in extras.items() if k.startswith(prefix + ".")}
            if part:
                save_file(part, str(out / f"{prefix}.safetensors"))


def pack(
    out: Path, dest: Path, shapes: EmbeddedShapes | None = None, notes: dict | None = None, world: str = "v1"
) -> tuple[Path, Path]:
    """Write `dest` (the model: one single-file checkpoint in SD's layout, fp16, configs in its metadata) and
    `<dest stem>-extras.safetensors` (the image encoder for the concept map and `world`'s attribute classifier).

    The metadata records the world as `atelier.train.world`, which `atelier eval` reads (a checkpoint without it
    is the first world's)."""
    from atelier.models.checkpoint import save_checkpoint
    from atelier.pipeline import fit_latent_to_rgb
    from atelier.world.dataset import render_dataset
    from atelier.world.evaluate import new_classifier

    shapes = shapes or EmbeddedShapes()
    vae, text, unet = load_trained_vae(out), CLIPTextEncoder(shapes.text), UNet(shapes.unet)
    load_weights(out / "text_encoder.safetensors", text)
    load_weights(out / "unet_ema.safetensors", unet)
    scenes = render_dataset(seed=7, start=0, count=256, size=shapes.image_size, world=world)[0]  # (256, H, W, 3) uint8
    projection = fit_latent_to_rgb(vae.eval(), images=bhwc_uint8_to_bchw_signed(scenes))
    meta = {
        "atelier.native_size": str(shapes.image_size),
        "atelier.latent_rgb": json.dumps([[round(v, 5) for v in row] for row in projection.tolist()]),
        "atelier.description": "Atelier's embedded model, trained on the procedural EN/FR world (see docs/).",
        **{f"atelier.train.{k}": str(v) for k, v in (notes or {}).items()},
        "atelier.train.world": world,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, unet.half(), vae.half(), text.half(), meta)

    extras = {}
    image_encoder = ImageEncoder(shapes.text.projection_dim)
    load_weights(out / "image_encoder.safetensors", image_encoder)
    extras.update({f"image_encoder.{k}": v.half() for k, v in image_encoder.state_dict().items()})
    if (out / "classifier.safetensors").exists():
        classifier = new_classifier(world)
        load_weights(out / "classifier.safetensors", classifier)
        extras.update({f"classifier.{k}": v.half() for k, v in classifier.state_dict().items()})
    extras_path = dest.with_name(dest.stem + "-extras.safetensors")
    tmp = extras_path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in extras.items()}, str(tmp))
    os.replace(tmp, extras_path)
    return dest, extras_path
