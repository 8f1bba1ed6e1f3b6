"""Parity of atelier's VAE with diffusers' AutoencoderKL on the same random weights, and tiled encode/decode."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from atelier.errors import InputError
from atelier.models.config import VAEConfig
from atelier.models.vae import VAE, tile_starts, tiled_apply


def reference_vae(config: VAEConfig) -> AutoencoderKL:
    levels = len(config.block_channels)
    return AutoencoderKL(
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_groups,
        scaling_factor=config.scaling_factor,
    ).eval()


def pair(config: VAEConfig) -> tuple[AutoencoderKL, VAE]:
    reference = reference_vae(config)
    ours = VAE(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference divided by the output's scale (its max abs value, at least 1)."""
    return ((a - b).abs().max() / a.abs().max().clamp(min=1.0)).item()


def images(batch: int, size: int) -> torch.Tensor:
    return torch.rand(batch, 3, size, size) * 2 - 1  # in [-1, 1]


@pytest.fixture(scope="module")
def tiny() -> tuple[AutoencoderKL, VAE]:
    torch.manual_seed(1)
    return pair(VAEConfig.tiny())


def test_state_dict_names_and_shapes_equal_diffusers(tiny):
    reference, ours = tiny
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}


@torch.no_grad()
def test_encode_matches_diffusers(tiny):
    reference, ours = tiny
    x = images(2, 64)
    theirs, mine = reference.encode(x).latent_dist, ours.encode(x)
    assert mine.mean.shape == (2, 4, 8, 8)
    assert max_rel_diff(theirs.mean, mine.mean) <= 1e-4
    assert max_rel_diff(theirs.logvar, mine.logvar) <= 1e-4
    assert max_rel_diff(theirs.std, mine.std) <= 1e-4
    assert torch.equal(mine.mode(), mine.mean)
    a = theirs.sample(generator=torch.Generator().manual_seed(7))
    b = mine.sample(generator=torch.Generator().manual_seed(7))
    assert max_rel_diff(a, b) <= 1e-4


@torch.no_grad()
def test_decode_matches_diffusers(tiny):
    reference, ours = tiny
    z = torch.randn(2, 4, 8, 8)
    theirs, mine = reference.decode(z).sample, ours.decode(z)
    assert mine.shape == (2, 3, 64, 64)
    assert max_rel_diff(theirs, mine) <= 1e-4


@torch.no_grad()
def test_scaled_latents_carry_the_scaling_factor(tiny):
    _, ours = tiny
    x = images(1, 64)
    z_scaled = ours.encode_latents(x)
    assert torch.allclose(z_scaled, ours.encode(x).mean * 0.18215)
    assert torch.allclose(ours.decode_latents(z_scaled), ours.decode(z_scaled / 0.18215))
    sampled = ours.encode_latents(x, sample=True, generator=torch.Generator().manual_seed(3))
    expected = ours.encode(x).sample(torch.Generator().manual_seed(3)) * 0.18215
    assert torch.allclose(sampled, expected)


def test_tile_starts_cover_the_axis_with_full_tiles():
    assert tile_starts(64, 64, 16) == [0]
    assert tile_starts(40, 64, 16) == [0]
    assert tile_starts(112, 64, 16) == [0, 48]  # overlap exactly 16
    assert tile_starts(100, 64, 16) == [0, 36]  # last tile pushed back: overlap 28
    assert tile_starts(256, 64, 16) == [0, 48, 96, 144, 192]  # a 2048x2048 image at SD size: 25 tiles


@torch.no_grad()
def test_tiling_a_pixelwise_function_is_exact():
    """With a function that looks at each pixel alone, tiles cannot disagree: the blend weights must add up to 1
    everywhere and every tile must land in its place, so tiled == whole up to rounding."""
    torch.manual_seed(0)
    mix = torch.randn(3, 4, 1, 1)
    up = lambda z: F.interpolate(F.conv2d(z, mix), scale_factor=8, mode="nearest")  # noqa: E731
    z = torch.randn(2, 4, 37, 29)
    assert (tiled_apply(up, z, tile=16, overlap=6, in_scale=1, out_scale=8) - up(z)).abs().max() <= 1e-5
    down = lambda x: F.avg_pool2d(x, 8)  # noqa: E731
    x = torch.randn(1, 3, 8 * 37, 8 * 29)
    assert (tiled_apply(down, x, tile=16, overlap=6, in_scale=8, out_scale=1) - down(x)).abs().max() <= 1e-5


@torch.no_grad()
def test_one_tile_covering_everything_equals_the_plain_pass(tiny):
    _, ours = tiny
    z = torch.randn(1, 4, 12, 12)
    assert torch.equal(ours.decode_tiled(z, tile=64), ours.decode(z))
    x = images(1, 96)
    assert torch.equal(ours.encode_tiled(x, tile=64).mean, ours.encode(x).mean)


@torch.no_grad()
def test_tiled_decode_is_close_to_plain_decode(tiny):
    """Tiles differ from the whole image: GroupNorm normalises with the tile's statistics, the mid-block attention
    sees only the tile, and convolutions near a tile edge see zero padding. Random weights are the worst case
    (nothing taught the network to be local; the tiny decoder's receptive field, ~13 latent pixels, exceeds the
    overlap), so the bound is relative to that effect itself: one tile decoded alone, without blending, is off
    by X; the blended mosaic must be off by less than half of X, and by less than 10% of the output's spread.
    Measured: mosaic mean|diff| 0.023, max 0.38; a lone tile mean 0.087; output std ~0.33."""
    _, ours = tiny
    torch.manual_seed(5)
    z = torch.randn(1, 4, 32, 32)
    plain = ours.decode(z)
    mosaic = ours.decode_tiled(z, tile=24, overlap=8)  # 2x2 tiles at offsets 0 and 8
    lone = ours.decode(z[:, :, :24, :24]) - plain[:, :, :192, :192]
    err = (mosaic - plain).abs()
    print(f"\ntiled decode: mean {err.mean():.4f} max {err.max():.3f}; lone tile mean {lone.abs().mean():.4f}")
    assert err.mean() < 0.5 * lone.abs().mean()
    assert err.max() < 0.5 * lone.abs().max()
    assert err.mean() < 0.1 * plain.std()


@torch.no_grad()
def test_tiled_encode_is_close_to_plain_encode(tiny):
    """The same effect on the way in (see the decode test). Measured: mosaic mean|diff| 0.015; a lone tile 0.043."""
    _, ours = tiny
    torch.manual_seed(6)
    x = images(1, 192)
    plain = ours.encode(x).mean
    err = (ours.encode_tiled(x, tile=16, overlap=8).mean - plain).abs()
    lone = ours.encode(x[:, :, :128, :128]).mean - plain[:, :, :16, :16]
    print(f"\ntiled encode: mean {err.mean():.4f} max {err.max():.3f}; lone tile mean {lone.abs().mean():.4f}")
    assert err.mean() < 0.5 * lone.abs().mean()
    assert err.mean() < 0.1 * plain.std()


def test_bad_inputs_name_what_was_expected(tiny):
    _, ours = tiny
    with pytest.raises(InputError, match="Image size 60x64 is not a multiple of 8 on each side"):
        ours.encode(torch.zeros(1, 3, 64, 60))
    with pytest.raises(InputError, match=r"expected \(batch, 3, height, width\)"):
        ours.encode(torch.zeros(1, 4, 64, 64))
    with pytest.raises(InputError, match=r"expected \(batch, 4, height, width\)"):
        ours.decode_latents(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError, match="Tile 16 with overlap 16 is invalid"):
        ours.decode_tiled(torch.zeros(1, 4, 8, 8), tile=16, overlap=16)


@pytest.mark.slow
@torch.no_grad()
def test_sd15_size_matches_diffusers():
    torch.manual_seed(3)
    reference, ours = pair(VAEConfig())
    x = images(1, 256)
    t0 = time.perf_counter()
    theirs = reference.encode(x).latent_dist
    t1 = time.perf_counter()
    mine = ours.encode(x)
    t2 = time.perf_counter()
    z = theirs.mean
    decoded_theirs = reference.decode(z).sample
    t3 = time.perf_counter()
    decoded_mine = ours.decode(z)
    t4 = time.perf_counter()
    d_mean = (theirs.mean - mine.mean).abs().max().item()
    d_logvar = (theirs.logvar - mine.logvar).abs().max().item()
    d_image = (decoded_theirs - decoded_mine).abs().max().item()
    print(
        f"\nSD VAE 256x256 fp32 CPU: max|diff| mean {d_mean:.2e} logvar {d_logvar:.2e} decoded {d_image:.2e}; "
        f"encode diffusers {t1 - t0:.2f}s atelier {t2 - t1:.2f}s, "
        f"decode diffusers {t3 - t2:.2f}s atelier {t4 - t3:.2f}s"
    )
    assert max_rel_diff(theirs.mean, mine.mean) <= 1e-4
    assert max_rel_diff(theirs.logvar, mine.logvar) <= 1e-4
    assert max_rel_diff(decoded_theirs, decoded_mine) <= 1e-4


@pytest.mark.gpu
@torch.no_grad()
def test_tiled_decode_of_2048_fits_in_8_gb():
    """SD-size VAE, a 2048x2048 image (256x256 latent, 25 tiles of 64): peak CUDA memory, fp16 and fp32."""
    device = torch.device("cuda")
    for dtype in (torch.float16, torch.float32):
        vae = VAE(VAEConfig()).to(device, dtype).eval()
        z = torch.randn(1, 4, 256, 256, device=device, dtype=dtype)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        image = vae.decode_tiled(z, tile=64, overlap=16)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        weights = sum(p.numel() * p.element_size() for p in vae.parameters()) / 2**30
        print(
            f"\n{dtype}: 2048x2048 tiled decode peak {peak:.2f} GiB above {weights:.2f} GiB of weights, "
            f"{time.perf_counter() - t0:.1f}s"
        )
        assert image.shape == (1, 3, 2048, 2048)
        assert peak + weights < 8
        del vae, z, image
        torch.cuda.empty_cache()
