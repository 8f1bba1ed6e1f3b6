"""One frozen dataclass config per component, serialisable to JSON for checkpoint metadata.

Each model file defines its own config (`TextEncoderConfig`, `UNetConfig`, `VAEConfig`) as a frozen dataclass;
these two functions turn any of them into the JSON string stored in a safetensors header and back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

C = TypeVar("C")


def config_to_json(config: Any) -> str:
    """A config dataclass as a JSON object (tuples become lists)."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def config_from_json(cls: type[C], text: str | dict) -> C:
    """The config of type `cls` stored in `text`; unknown keys are ignored, lists become tuples again."""
    data = json.loads(text) if isinstance(text, str) else dict(text)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for name, value in data.items():
        if name in fields:
            kwargs[name] = _tuplify(value)
    return cls(**kwargs)


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


# --------------------------------------------------------------------------------------------------------------
# The three networks of a latent-diffusion model. Defaults are Stable Diffusion 1.x; `tiny()` presets are the
# small shapes the tests use. Field names are what the workshop calls things, not what one library calls them.
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """CLIP text transformer (Radford et al. 2021). SD1.x uses OpenAI's ViT-L/14 text tower: 12 layers, 768 wide."""

    vocab_size: int = 49408
    max_positions: int = 77  # the 77-token window: <start> + 75 tokens + <end>
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072
    activation: str = "quick_gelu"  # x * sigmoid(1.702 x), as OpenAI trained it
    layer_norm_eps: float = 1e-5
    # Width of the projection of the pooled <end> token into the shared text-image space. SD1.x does not use it
    # (None); the embedded model, trained contrastively, does.
    projection_dim: int | None = None

    @classmethod
    def tiny(cls) -> TextEncoderConfig:
        return cls(width=32, layers=3, heads=4, mlp_width=64)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The SD1.x denoising UNet (Rombach et al. 2022): ResNet blocks + cross-attention transformers per level."""

    in_channels: int = 4
    out_channels: int = 4
    block_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    # Which resolution levels (down path; the up path mirrors it) carry a spatial transformer.
    cross_attention_levels: tuple[bool, ...] = (True, True, True, False)
    attention_heads: int = 8  # SD1.x: 8 heads at every level, so the head width grows with the channels
    transformer_depth: int = 1
    context_dim: int = 768  # width of the text encoder's hidden states
    norm_groups: int = 32
    norm_eps: float = 1e-5
    prediction: str = "eps"  # "eps" (SD1.x) or "v" (velocity, Salimans & Ho 2022)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_channels[0]

    @classmethod
    def tiny(cls) -> UNetConfig:
        return cls(
            block_channels=(32, 64),
            layers_per_block=1,
            cross_attention_levels=(True, True),
            attention_heads=2,
            context_dim=32,
            norm_groups=8,
        )


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The SD autoencoder (AutoencoderKL): 8x spatial compression into 4 latent channels."""

    in_channels: int = 3
    latent_channels: int = 4
    block_channels: tuple[int, ...] = (128, 256, 512, 512)  # one level per entry; 3 downsamplings = 8x
    layers_per_block: int = 2
    norm_groups: int = 32
    norm_eps: float = 1e-6
    # Latents are multiplied by this after encoding so that they have roughly unit variance (SD1.x: 0.18215).
    scaling_factor: float = 0.18215

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_channels) - 1)

    @classmethod
    def tiny(cls) -> VAEConfig:
        return cls(block_channels=(32, 32, 64, 64), layers_per_block=1, norm_groups=8)
