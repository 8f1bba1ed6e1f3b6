"""The SD autoencoder: images <-> latents, 8x smaller in each direction.

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models") runs the
denoising in the latent space of an autoencoder instead of on pixels: a 512x512x3 image becomes a 64x64x4
latent, 48 times fewer numbers. The autoencoder is a VAE (Kingma & Welling 2014, "Auto-Encoding Variational
Bayes") with a small KL penalty, built from the convolutional encoder/decoder of VQGAN (Esser et al. 2021,
"Taming Transformers for High-Resolution Image Synthesis"): ResNet blocks at each resolution, one
self-attention block in the middle, GroupNorm + SiLU throughout.

    encoder:  image (B, 3, H, W) in [-1, 1]
              -> conv_in -> down blocks (ResNets, then a stride-2 conv, except at the last level)
              -> mid block (ResNet, attention, ResNet) -> GroupNorm, SiLU, conv_out -> quant_conv
              -> mean and log-variance (B, 4, H/8, W/8) each: a diagonal Gaussian per latent pixel
    decoder:  latent (B, 4, H/8, W/8) -> post_quant_conv -> conv_in -> mid block
              -> up blocks (ResNets, then nearest 2x upsampling + conv, except at the last level)
              -> GroupNorm, SiLU, conv_out -> image (B, 3, H, W), roughly in [-1, 1]

Two latent scales, named explicitly in this file:
    raw latent       what the decoder eats and the encoder's Gaussian describes (`encode`, `decode`)
    scaled latent    raw * scaling_factor (0.18215 for SD1.x), about unit variance: what the UNet denoises
                     (`encode_latents`, `decode_latents`)

Parameter names follow diffusers' AutoencoderKL, so its state_dict loads here unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from atelier.errors import InputError
from atelier.models.config import VAEConfig
from atelier.models.layers import multi_head_attention

# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus a skip connection (1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in, h, w)
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, h, w)
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return skip + h  # (B, out, h, w)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention where every pixel is a token: lets the bottleneck mix information globally."""

    def __init__(self, channels: int, groups: int, eps: float):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # a list only so the weight is `to_out.0`

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, h, w)
        B, C, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, h*w, C)
        out = multi_head_attention(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens), heads=1)
        out = self.to_out[0](out)  # (B, h*w, C)
        return x + out.transpose(1, 2).reshape(B, C, h, w)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv; padding only right and bottom, as the original VQGAN did."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, h/2, w/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour copy, then a 3x3 conv to smooth the blocks."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, 2h, 2w)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EncoderLevel(nn.Module):
    """One resolution level of the encoder: ResNet blocks, then (except at the last level) a downsampling."""

    def __init__(self, in_channels: int, out_channels: int, num_resnets: int, downsample: bool, config: VAEConfig):
        super().__init__()
        g, eps = config.norm_groups, config.norm_eps
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, g, eps) for i in range(num_resnets)]
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)] if downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for down in self.downsamplers:
            x = down(x)
        return x


class DecoderLevel(nn.Module):
    """One resolution level of the decoder: ResNet blocks, then (except at the last level) an upsampling."""

    def __init__(self, in_channels: int, out_channels: int, num_resnets: int, upsample: bool, config: VAEConfig):
        super().__init__()
        g, eps = config.norm_groups, config.norm_eps
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, g, eps) for i in range(num_resnets)]
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for up in self.upsamplers:
            x = up(x)
        return x


class MidBlock(nn.Module):
    """The bottleneck at the lowest resolution: ResNet, self-attention, ResNet."""

    def __init__(self, channels: int, config: VAEConfig):
        super().__init__()
        g, eps = config.norm_groups, config.norm_eps
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, g, eps), ResnetBlock(channels, channels, g, eps)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, g, eps)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


# --------------------------------------------------------------------------------------------------------------
# Encoder and decoder (Esser et al. 2021)
# --------------------------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> mean and log-variance stacked on channels (B, 2 * latent_channels, H/8, W/8)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        ch = config.block_channels
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            [
                EncoderLevel(ch[max(i - 1, 0)], ch[i], config.layers_per_block, i < len(ch) - 1, config)
                for i in range(len(ch))
            ]
        )
        self.mid_block = MidBlock(ch[-1], config)
        self.conv_norm_out = nn.GroupNorm(config.norm_groups, ch[-1], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(ch[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # (B, 128, H, W) at SD size
        for level in self.down_blocks:
            x = level(x)  # ... down to (B, 512, H/8, W/8)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 8, H/8, W/8)


class Decoder(nn.Module):
    """Raw latent (B, latent_channels, h, w) -> image (B, 3, 8h, 8w)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        ch = tuple(reversed(config.block_channels))  # widest first: (512, 512, 256, 128) at SD size
        self.conv_in = nn.Conv2d(config.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], config)
        # The decoder has one more ResNet per level than the encoder.
        self.up_blocks = nn.ModuleList(
            [
                DecoderLevel(ch[max(i - 1, 0)], ch[i], config.layers_per_block + 1, i < len(ch) - 1, config)
                for i in range(len(ch))
            ]
        )
        self.conv_norm_out = nn.GroupNorm(config.norm_groups, ch[-1], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(ch[-1], config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)  # (B, 512, h, w) at SD size
        x = self.mid_block(x)
        for level in self.up_blocks:
            x = level(x)  # ... up to (B, 128, 8h, 8w)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 3, 8h, 8w)


# --------------------------------------------------------------------------------------------------------------
# The posterior q(z | x) and the autoencoder
# --------------------------------------------------------------------------------------------------------------


class DiagonalGaussian:
    """The encoder's answer for one image: an independent Gaussian for every latent number (Kingma & Welling 2014).

    `mean` and `logvar` are (B, latent_channels, h, w) in raw latent units. SD uses the mode (the mean) for
    img2img most of the time; sampling adds noise of std exp(logvar / 2), which is tiny for a trained SD VAE.
    """

    def __init__(self, moments: torch.Tensor):  # moments: (B, 2 * latent_channels, h, w)
        self.mean, logvar = moments.chunk(2, dim=1)
        # Clamped as in the LDM code, so that exp() never overflows or underflows.
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        """The most likely latent: the mean."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * noise (the reparameterisation trick); the noise is drawn on the generator's device."""
        noise_device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=noise_device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)


class VAE(nn.Module):
    """AutoencoderKL. Raw-latent methods: `encode`, `decode`, `encode_tiled`, `decode_tiled`.
    Scaled-latent methods (what the UNet sees): `encode_latents`, `decode_latents`."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # 1x1 convs on either side of the latent, left over from VQGAN's quantiser; kept because weights have them.
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)

    # -- raw latents ------------------------------------------------------------------------------------------

    def _moments(self, images: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(images))  # (B, 2 * latent_channels, H/8, W/8)

    def _image(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))  # (B, 3, 8h, 8w)

    def encode(self, images: torch.Tensor) -> DiagonalGaussian:
        """Images (B, 3, H, W) in [-1, 1], H and W multiples of 8 -> posterior over RAW latents (B, 4, H/8, W/8)."""
        self._check_images(images)
        return DiagonalGaussian(self._moments(images))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """RAW latents (B, 4, h, w) -> images (B, 3, 8h, 8w), roughly in [-1, 1] (not clamped)."""
        self._check_latents(z)
        return self._image(z)

    def encode_tiled(
        self, images: torch.Tensor, tile: int = 64, overlap: int = 16, before_tile: Callable[[], None] | None = None
    ) -> DiagonalGaussian:
        """`encode`, one tile at a time. `tile` and `overlap` are in LATENT pixels (x8 in the image): the
        defaults read 512x512 image tiles that overlap by 128 pixels. See `tiled_apply` for the blending and
        `before_tile`."""
        self._check_images(images)
        f = self.config.downscale
        moments = tiled_apply(self._moments, images, tile, overlap, in_scale=f, out_scale=1, before_tile=before_tile)
        return DiagonalGaussian(moments)

    def decode_tiled(
        self, z: torch.Tensor, tile: int = 64, overlap: int = 16, before_tile: Callable[[], None] | None = None
    ) -> torch.Tensor:
        """`decode`, one tile at a time, for RAW latents. `tile` and `overlap` are in latent pixels: the defaults
        decode 64x64 latent tiles (512x512 pixels) that overlap by 16 (128 pixels). See `tiled_apply`."""
        self._check_latents(z)
        f = self.config.downscale
        return tiled_apply(self._image, z, tile, overlap, in_scale=1, out_scale=f, before_tile=before_tile)

    # -- scaled latents (what the UNet denoises) --------------------------------------------------------------

    def encode_latents(
        self,
        images: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        tile: int | None = None,
        overlap: int = 16,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> SCALED latents (B, 4, H/8, W/8) = raw * scaling_factor.

        The posterior's mean unless `sample` is True. `tile` (latent pixels) switches to tiled encoding.
        """
        posterior = self.encode(images) if tile is None else self.encode_tiled(images, tile, overlap)
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.config.scaling_factor

    def decode_latents(self, z_scaled: torch.Tensor, tile: int | None = None, overlap: int = 16) -> torch.Tensor:
        """SCALED latents (B, 4, h, w), as the sampler returns them -> images (B, 3, 8h, 8w) in about [-1, 1].

        Divides by scaling_factor first. `tile` (latent pixels) switches to tiled decoding.
        """
        z = z_scaled / self.config.scaling_factor
        return self.decode(z) if tile is None else self.decode_tiled(z, tile, overlap)

    # -- input checks -----------------------------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.config.downscale
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise InputError(
                f"Images have shape {tuple(images.shape)}; expected (batch, {self.config.in_channels}, height, width)."
            )
        if images.shape[2] % f or images.shape[3] % f:
            raise InputError(f"Image size {images.shape[3]}x{images.shape[2]} is not a multiple of {f} on each side.")

    def _check_latents(self, z: torch.Tensor) -> None:
        c = self.config.latent_channels
        if z.ndim != 4 or z.shape[1] != c:
            raise InputError(f"Latents have shape {tuple(z.shape)}; expected (batch, {c}, height, width).")


# --------------------------------------------------------------------------------------------------------------
# Tiling: big images through a network one overlapping tile at a time
# --------------------------------------------------------------------------------------------------------------


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering 0..size, neighbours overlapping by at least `overlap`.

    The last tile is pushed back to end exactly at `size`, so every tile has full size (its overlap with the one
    before may then be larger). One tile when it covers everything.
    """
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def _ramp_weights(start: int, length: int, size: int, ramp: int) -> torch.Tensor:
    """1D blend weights for a tile covering start..start+length of an axis of `size` (output pixels).

    Weight 1 in the middle; on each side that borders another tile, a linear ramp over `ramp` pixels from near 0
    up to 1. Ramps start at 0.5/ramp, not 0, so that every pixel has a positive total weight.
    """
    w = torch.ones(length)
    ramp = min(ramp, length)
    if ramp > 0:
        up = (torch.arange(ramp) + 0.5) / ramp  # (ramp,) rising
        if start > 0:
            w[:ramp] = torch.minimum(w[:ramp], up)
        if start + length < size:
            w[-ramp:] = torch.minimum(w[-ramp:], up.flip(0))
    return w


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    in_scale: int,
    out_scale: int,
    before_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Run `fn` on overlapping square tiles of x (B, C, H, W) and blend the results linearly.

    Positions are counted on the latent grid: one latent pixel is `in_scale` pixels of x and `out_scale` pixels
    of the output (decode: 1 and 8, encode: 8 and 1). Tiles of `tile` latent pixels overlap by at least
    `overlap`; only one tile's activations exist at a time, so memory stays that of a tile-sized pass plus the
    output. Measured on an H100 with the SD1.x VAE, decoding 2048x2048 in 64-latent tiles peaked at 0.63 GiB
    (fp16) / 1.26 GiB (fp32) above the weights; the same decode in one piece needs 9.5 / 19 GiB.

    Each output pixel is the weighted mean of the tiles that cover it, the weights rising linearly across each
    overlap (`_ramp_weights`), so there is no hard seam.

    Why tiles differ a little from the whole: GroupNorm takes its mean and variance over the tile instead of the
    whole image, the mid-block attention sees only the tile, and convolutions near a tile's edge see zero padding
    instead of the neighbours. The overlap hides the edge effect; the statistics effect remains, small when the
    image looks alike everywhere, and shows as slight colour shifts between tiles when it does not.

    `before_tile()`, when given, is called before each tile and may raise to stop: a 16k image is hundreds of
    tiles, and the pipeline checks there whether the user pressed Cancel.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise InputError(f"Tile {tile} with overlap {overlap} is invalid; expected tile >= 1 and 0 <= overlap < tile.")
    H, W = x.shape[2] // in_scale, x.shape[3] // in_scale  # size on the latent grid
    th, tw = min(tile, H), min(tile, W)  # tile height and width (smaller when the whole is smaller)
    s = out_scale
    out = weight = None
    for y in tile_starts(H, tile, overlap):
        for x0 in tile_starts(W, tile, overlap):
            if before_tile is not None:
                before_tile()
            piece = x[:, :, y * in_scale : (y + th) * in_scale, x0 * in_scale : (x0 + tw) * in_scale]
            result = fn(piece)  # (B, C_out, th * out_scale, tw * out_scale)
            if out is None:
                out = result.new_zeros(result.shape[0], result.shape[1], H * out_scale, W * out_scale)
                weight = result.new_zeros(H * out_scale, W * out_scale)
            wy = _ramp_weights(y * s, th * s, H * s, overlap * s)
            wx = _ramp_weights(x0 * s, tw * s, W * s, overlap * s)
            w = (wy[:, None] * wx[None, :]).to(result)  # (th * s, tw * s)
            out[:, :, y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += result * w
            weight[y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += w
    assert out is not None and weight is not None
    return out / weight
