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

    @classmethod
    def open_clip_h(cls) -> TextEncoderConfig:
        """OpenCLIP ViT-H/14's text tower (Cherti et al. 2023, trained on LAION-2B), SD 2.x's: 24 layers, 1024 wide,
        exact GELU. SD 2.x reads its penultimate layer (through the final LayerNorm)."""
        return cls(width=1024, layers=24, heads=16, mlp_width=4096, activation="gelu")

    @classmethod
    def open_clip_bigg(cls) -> TextEncoderConfig:
        """OpenCLIP ViT-bigG/14's text tower, SDXL's second encoder: 32 layers, 1280 wide, exact GELU, and the
        projection of its pooled <end> token (1280 -> 1280) that SDXL's UNet reads in its vector y."""
        return cls(width=1280, layers=32, heads=20, mlp_width=5120, activation="gelu", projection_dim=1280)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The denoising UNet of latent diffusion (Rombach et al. 2022): ResNet blocks + cross-attention transformers.

    Defaults are SD1.x. SD 2.x changes four numbers (64-wide heads, linear projections, a 1024-wide context from
    OpenCLIP ViT-H, v-prediction for the 768 model); SDXL (Podell et al. 2023, "SDXL: Improving Latent Diffusion
    Models for High-Resolution Image Synthesis") drops a level, puts 2 and 10 transformer blocks per level, reads
    a 2048-wide context and adds a vector `y` (pooled text + image-size embeddings) to the time embedding.
    The presets below (`sd2`, `sdxl`, `sdxl_refiner`) are the published shapes.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    # Which resolution levels (down path; the up path mirrors it) carry a spatial transformer.
    cross_attention_levels: tuple[bool, ...] = (True, True, True, False)
    attention_heads: int = 8  # SD1.x: 8 heads at every level, so the head width grows with the channels
    # SD 2.x and SDXL fix the head width instead: heads = channels / attention_head_dim (64), i.e. 5, 10, 20.
    # When set, it wins over `attention_heads`.
    attention_head_dim: int | None = None
    # Transformer blocks per spatial transformer: one number for every level, or one per level (SDXL: 0, 2, 10).
    transformer_depth: int | tuple[int, ...] = 1
    mid_transformer_depth: int | None = None  # the middle block's; None = the deepest level's (SDXL: 10)
    # SD 2.x / SDXL project into and out of the transformers with Linear layers on tokens instead of 1x1 convs
    # (the same map, stored as (C, C) instead of (C, C, 1, 1)).
    linear_projection: bool = False
    context_dim: int = 768  # width of the text encoder's hidden states
    # SDXL's extra conditioning vector `y` (LDM calls it the "adm" input, diffusers the "text_time" embedding):
    # its width, or None when the UNet has none. It goes through a 2-layer MLP (label_emb) into the time embedding.
    adm_in_channels: int | None = None
    size_embed_dim: int = 256  # width of the sinusoidal embedding of each size number inside `y` (SDXL: 256)
    norm_groups: int = 32
    norm_eps: float = 1e-5
    prediction: str = "eps"  # "eps" (SD1.x) or "v" (velocity, Salimans & Ho 2022)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_channels[0]

    def heads_at(self, channels: int) -> int:
        """The number of attention heads of a transformer `channels` wide."""
        if self.attention_head_dim is None:
            return self.attention_heads
        return channels // self.attention_head_dim

    def depth_at(self, level: int) -> int:
        """Transformer blocks at resolution level `level` (0 = full resolution)."""
        if isinstance(self.transformer_depth, int):
            return self.transformer_depth
        return self.transformer_depth[level]

    @property
    def mid_depth(self) -> int:
        if self.mid_transformer_depth is not None:
            return self.mid_transformer_depth
        return self.depth_at(len(self.block_channels) - 1)

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

    @classmethod
    def sd2(cls, prediction: str = "v") -> UNetConfig:
        """SD 2.x: "v" for the 768-v models (768x768), "eps" for 512-base. Same weights' shapes either way."""
        return cls(attention_head_dim=64, linear_projection=True, context_dim=1024, prediction=prediction)

    @classmethod
    def sdxl(cls) -> UNetConfig:
        """SDXL 1.0 base: 2,567,463,684 parameters. y = pooled bigG text (1280) + 6 size numbers x 256 = 2816."""
        return cls(
            block_channels=(320, 640, 1280),
            cross_attention_levels=(False, True, True),
            attention_head_dim=64,
            transformer_depth=(0, 2, 10),
            linear_projection=True,
            context_dim=2048,
            adm_in_channels=2816,
        )

    @classmethod
    def sdxl_refiner(cls) -> UNetConfig:
        """SDXL 1.0 refiner: reads bigG alone (1280); y = pooled (1280) + 5 numbers (sizes, aesthetic) x 256 = 2560."""
        return cls(
            block_channels=(384, 768, 1536, 1536),
            cross_attention_levels=(False, True, True, False),
            attention_head_dim=64,
            transformer_depth=4,  # at levels 1, 2 and the middle (levels 0 and 3 have no transformer)
            linear_projection=True,
            context_dim=1280,
            adm_in_channels=2560,
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
