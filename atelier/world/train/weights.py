"""Checkpoint helpers: weights as safetensors (the configs in the metadata); a stage's optimiser state is loop.py's."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from atelier.models.config import VAEConfig, config_from_json, config_to_json
from atelier.models.vae import VAE


def save_weights(path: Path, module: nn.Module, config: object | None = None) -> None:
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"config": config_to_json(config)} if config is not None else {}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_weights(path: Path, module: nn.Module) -> None:
    module.load_state_dict(load_file(str(path)))


def load_trained_vae(out: Path) -> VAE:
    """The autoencoder the vae (or decoder) stage wrote in `out`, built from the config stored with it (its
    scaling factor was measured at the end of that stage), on the CPU."""
    return load_vae_file(out / "vae.safetensors")


def load_vae_file(path: Path) -> VAE:
    """An autoencoder saved by `save_weights` with its config (any file name: one taken out of git history)."""
    vae = VAE(config_from_json(VAEConfig, _metadata(path)["config"]))
    load_weights(path, vae)
    return vae


def _metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (where save_weights keeps the config)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()
