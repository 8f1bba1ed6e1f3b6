"""The shapes of the embedded model: small versions of SD1.x's three networks; same classes, same code path."""

from __future__ import annotations

import dataclasses

from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig


@dataclasses.dataclass(frozen=True)
class EmbeddedShapes:
    image_size: int = 128
    vae: VAEConfig = VAEConfig(block_channels=(32, 64, 128, 128), layers_per_block=1, norm_groups=16)
    text: TextEncoderConfig = TextEncoderConfig(width=128, layers=4, heads=4, mlp_width=512, projection_dim=128)
    unet: UNetConfig = UNetConfig(
        block_channels=(64, 128, 224),  # 13.8M parameters: all shipped weights stay under 60 MB in fp16
        layers_per_block=1,
        cross_attention_levels=(True, True, True),
        attention_heads=4,
        context_dim=128,
        norm_groups=16,
    )

    @classmethod
    def tiny(cls) -> EmbeddedShapes:
        """For the CPU test of the training code: same structure, a few thousand parameters per network."""
        return cls(
            image_size=32,
            vae=VAEConfig(block_channels=(8, 8, 16, 16), layers_per_block=1, norm_groups=4),
            text=TextEncoderConfig(width=16, layers=1, heads=2, mlp_width=32, projection_dim=16),
            unet=UNetConfig(
                block_channels=(16, 32),
                layers_per_block=1,
                cross_attention_levels=(False, True),
                attention_heads=2,
                context_dim=16,
                norm_groups=4,
            ),
        )
