"""The embedded model's pieces the lessons use: its text encoder and tokenizer, its VAE, and the image encoder
trained with it (world/encoders.py), which ships in a separate file (`<model>-extras.safetensors`).

The UNet is not among them: the lessons that sample (film strips, attention maps) run as nodes, through the
prompt queue. All of it is ~10 MB, loaded in float32 on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import load_file

from atelier.models.checkpoint import load_checkpoint
from atelier.models.clip import CLIPTextEncoder
from atelier.models.library import EMBEDDED_EXTRAS_PATH, embedded_model_path
from atelier.models.tokenizer import CLIPTokenizer
from atelier.models.vae import VAE
from atelier.world.encoders import ImageEncoder

IMAGE_ENCODER_PREFIX = "image_encoder."  # its keys in the extras file


@dataclasses.dataclass
class LessonModels:
    text_encoder: CLIPTextEncoder
    tokenizer: CLIPTokenizer
    vae: VAE
    image_encoder: ImageEncoder | None  # None when the extras file is missing


def load_image_encoder(extras: Path, projection_dim: int) -> ImageEncoder | None:
    """The image encoder stored under `image_encoder.` in an extras file, or None when there is none."""
    if not extras.is_file():
        return None
    prefix = IMAGE_ENCODER_PREFIX
    weights = {k[len(prefix) :]: v.float() for k, v in load_file(str(extras)).items() if k.startswith(prefix)}
    if not weights:
        return None
    encoder = ImageEncoder(projection_dim)
    encoder.load_state_dict(weights)
    return encoder.eval()


def load_embedded_models() -> LessonModels:
    """The embedded model's text encoder, tokenizer and VAE, and its image encoder when the extras file is there."""
    ckpt = load_checkpoint(embedded_model_path(), device="cpu", dtype=torch.float32)
    image_encoder = load_image_encoder(EMBEDDED_EXTRAS_PATH, ckpt.text_encoder_config.projection_dim)
    return LessonModels(ckpt.text_encoder, ckpt.tokenizer, ckpt.vae, image_encoder)
