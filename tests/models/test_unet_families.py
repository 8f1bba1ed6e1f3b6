"""SD 2.x and SDXL UNets: parity with diffusers' UNet2DConditionModel on shared random weights.

Small configs with every feature of the real ones (64-wide heads -> 8-wide here, linear projections, per-level
transformer depths with a deeper middle, SDXL's `y` vector through add_embedding) run in the normal suite; the
full SDXL base size is a slow test that checks the published parameter count and parity.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from atelier.errors import InputError
from atelier.models.config import UNetConfig
from atelier.models.unet import UNet, sdxl_vector

diffusers = pytest.importorskip("diffusers")

# SD 2.x in small: 8-wide heads (so 4 and 8 heads), linear projections, a 24-wide context.
TINY_SD2 = UNetConfig(
    block_channels=(32, 64),
    layers_per_block=1,
    cross_attention_levels=(True, True),
    attention_head_dim=8,
    linear_projection=True,
    context_dim=24,
    norm_groups=8,
    prediction="v",
)
# SDXL base in small: no transformer at level 0, depths 0/2/3, a 40-wide context, y = 16 pooled + 6 x 8.
TINY_SDXL = UNetConfig(
    block_channels=(32, 64, 64),
    layers_per_block=2,
    cross_attention_levels=(False, True, True),
    attention_head_dim=16,
    transformer_depth=(0, 2, 3),
    linear_projection=True,
    context_dim=40,
    adm_in_channels=16 + 6 * 8,
    size_embed_dim=8,
    norm_groups=8,
)
# The refiner in small: four levels, transformers in the middle two only, a middle deeper than the last level.
TINY_REFINER = UNetConfig(
    block_channels=(24, 48, 48, 48),
    layers_per_block=2,
    cross_attention_levels=(False, True, True, False),
    attention_head_dim=8,
    transformer_depth=(0, 2, 2, 0),
    mid_transformer_depth=2,
    linear_projection=True,
    context_dim=16,
    adm_in_channels=16 + 5 * 8,
    size_embed_dim=8,
    norm_groups=8,
)
CONFIGS = {"sd2": TINY_SD2, "sdxl": TINY_SDXL, "refiner": TINY_REFINER}


def reference_unet(cfg: UNetConfig) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel with the settings of an SD 2.x / SDXL checkpoint, translated from `cfg`."""
    levels = len(cfg.block_channels)
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention_levels)]
    depths = [cfg.depth_at(level) for level in range(levels)]
    # diffusers reads the middle block's depth from the last entry; the refiner's (0, 4, 4, 0) uses one number.
    depth_arg = depths if cfg.mid_transformer_depth is None else cfg.mid_transformer_depth
    heads = tuple(cfg.heads_at(c) for c in cfg.block_channels)
    extra = {}
    if cfg.adm_in_channels is not None:
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=cfg.size_embed_dim,
            projection_class_embeddings_input_dim=cfg.adm_in_channels,
        )
    return diffusers.UNet2DConditionModel(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=cfg.block_channels,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=heads,  # diffusers' quirk: this field holds the number of heads per level
        cross_attention_dim=cfg.context_dim,
        norm_num_groups=cfg.norm_groups,
        norm_eps=cfg.norm_eps,
        transformer_layers_per_block=depth_arg,
        use_linear_projection=cfg.linear_projection,
        flip_sin_to_cos=True,
        freq_shift=0,
        **extra,
    ).eval()


def paired(cfg: UNetConfig) -> tuple[UNet, torch.nn.Module]:
    ref = reference_unet(cfg)
    with torch.device("meta"):
        ours = UNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # shares the tensors: no extra memory
    return ours, ref


def relative_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def size_numbers(cfg: UNetConfig, batch: int) -> torch.Tensor:
    """Plausible micro-conditioning: (orig_h, orig_w, crop_top, crop_left, target_h, target_w) or, for the
    refiner, (orig_h, orig_w, crop_top, crop_left, aesthetic_score)."""
    rows = [[1024.0, 768.0, 0.0, 32.0, 1024.0, 1024.0], [512.0, 512.0, 16.0, 0.0, 1024.0, 896.0]]
    if cfg.adm_in_channels is not None and (cfg.adm_in_channels - 16) // cfg.size_embed_dim == 5:
        rows = [[1024.0, 768.0, 0.0, 32.0, 6.0], [512.0, 512.0, 16.0, 0.0, 2.5]]
    return torch.tensor(rows[:batch])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_keys_and_shapes_match_diffusers(name):
    cfg = CONFIGS[name]
    ours = {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()}
    ref = {k: tuple(v.shape) for k, v in reference_unet(cfg).state_dict().items()}
    assert ours == ref


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize(("size", "timestep"), [((16, 16), 999.0), ((9, 11), 500.5)])
@torch.no_grad()
def test_output_matches_diffusers(name, size, timestep):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    ours, ref = paired(cfg)
    x = torch.randn(2, cfg.in_channels, *size)
    context = torch.randn(2, 7, cfg.context_dim)
    t = torch.tensor([timestep, timestep / 3])
    if cfg.adm_in_channels is None:
        expected = ref(x, t, encoder_hidden_states=context).sample
        got = ours(x, t, context)
    else:
        pooled, numbers = torch.randn(2, 16), size_numbers(cfg, 2)
        added = {"text_embeds": pooled, "time_ids": numbers}
        expected = ref(x, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
        got = ours(x, t, context, sdxl_vector(pooled, numbers, cfg.size_embed_dim))
    assert got.shape == (2, cfg.out_channels, *size)
    assert relative_max_diff(got, expected) <= 1e-4


@torch.no_grad()
def test_size_conditioning_changes_the_prediction():
    torch.manual_seed(1)
    ours, _ = paired(TINY_SDXL)
    x, context, pooled = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 40), torch.randn(1, 16)
    small = sdxl_vector(pooled, torch.tensor([[512.0, 512.0, 0.0, 0.0, 1024.0, 1024.0]]), 8)
    large = sdxl_vector(pooled, torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]]), 8)
    assert small.shape == (1, 64)
    assert (ours(x, 500.0, context, small) - ours(x, 500.0, context, large)).abs().max() > 1e-3


def test_sdxl_vector_is_pooled_then_each_number_embedded():
    from diffusers.models.embeddings import get_timestep_embedding

    pooled, numbers = (
        torch.randn(2, 1280),
        torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [768, 1344, 8, 0, 768, 1344]]),
    )
    y = sdxl_vector(pooled, numbers)
    assert y.shape == (2, 2816)
    assert torch.equal(y[:, :1280], pooled)
    emb = get_timestep_embedding(numbers.flatten(), 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(y[:, 1280:], emb.reshape(2, 6 * 256), atol=1e-6)


def test_missing_or_unexpected_y_is_a_one_sentence_error():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(InputError, match=r"vector y has none; expected \(batch, 64\)\."):
        UNet(TINY_SDXL)(x, 1.0, torch.randn(1, 3, 40))
    with pytest.raises(InputError, match=r"vector y has shape \(1, 5\); expected none"):
        UNet(TINY_SD2)(x, 1.0, torch.randn(1, 3, 24), torch.randn(1, 5))
    with pytest.raises(InputError, match=r"vector y has shape \(1, 63\); expected \(batch, 64\)\."):
        UNet(TINY_SDXL)(x, 1.0, torch.randn(1, 3, 40), torch.randn(1, 63))


@pytest.mark.parametrize(
    ("preset", "tensors", "parameters"),
    [
        (UNetConfig.sdxl(), 1680, 2_567_463_684),
        (UNetConfig.sdxl_refiner(), None, None),
        (UNetConfig.sd2(), 686, 865_910_724),
    ],
)
def test_full_size_state_dicts_match_diffusers_without_allocating(preset, tensors, parameters):
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in UNet(preset).state_dict().items()}
        ref = {k: tuple(v.shape) for k, v in reference_unet(preset).state_dict().items()}
    assert ours == ref
    if tensors is not None:
        assert len(ours) == tensors
        assert sum(torch.Size(s).numel() for s in ours.values()) == parameters


def test_presets_heads_are_64_wide():
    sdxl = UNetConfig.sdxl()
    assert [sdxl.heads_at(c) for c in sdxl.block_channels] == [5, 10, 20]
    assert sdxl.mid_depth == 10 and UNetConfig.sdxl_refiner().mid_depth == 4
    assert dataclasses.replace(UNetConfig(), attention_heads=8).heads_at(1280) == 8  # SD1.x: fixed count


# --------------------------------------------------------------------------------------------------------------
# Full size, run on purpose: pytest -m slow tests/models/test_unet_families.py -s
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@torch.inference_mode()
def test_sdxl_base_full_size_matches_diffusers():
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours, ref = paired(UNetConfig.sdxl())
    ours, ref = ours.to(device), ref.to(device)
    assert sum(p.numel() for p in ours.parameters()) == 2_567_463_684
    side = 128 if device == "cuda" else 32
    x = torch.randn(2, 4, side, side, device=device)
    t = torch.tensor([999.0, 500.5], device=device)
    context = torch.randn(2, 77, 2048, device=device)
    pooled = torch.randn(2, 1280, device=device)
    numbers = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [768, 1344, 8, 0, 1024, 1024]], device=device)
    start = time.perf_counter()
    expected = ref(x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": numbers})
    expected = expected.sample
    ref_seconds = time.perf_counter() - start
    start = time.perf_counter()
    got = ours(x, t, context, sdxl_vector(pooled, numbers))
    our_seconds = time.perf_counter() - start
    diff = (got - expected).abs().max().item()
    print(
        f"\nSDXL base UNet (2,567,463,684 parameters), batch 2, {side}x{side} latent, fp32 {device}: "
        f"max abs diff {diff:.3e} (output max {expected.abs().max().item():.3f}); "
        f"ours {our_seconds:.2f} s, diffusers {ref_seconds:.2f} s"
    )
    assert relative_max_diff(got, expected) <= 1e-4
