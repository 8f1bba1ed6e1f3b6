"""Parity of atelier's UNet with diffusers' UNet2DConditionModel on shared random weights, and the attention hook."""

import dataclasses
import functools
import time

import pytest
import torch

from atelier.errors import AtelierError, InputError
from atelier.models.attention import capture_cross_attention, token_heatmaps
from atelier.models.config import UNetConfig
from atelier.models.unet import UNet, timestep_embedding

diffusers = pytest.importorskip("diffusers")

MIXED = dataclasses.replace(
    UNetConfig.tiny(),
    block_channels=(32, 64, 64),
    layers_per_block=2,
    cross_attention_levels=(False, True, True),
    transformer_depth=2,
)
# Attention at the top level only, odd channel counts in and out, and 4 heads.
CROSS_THEN_PLAIN = UNetConfig(
    in_channels=3,
    out_channels=5,
    block_channels=(32, 64),
    layers_per_block=1,
    cross_attention_levels=(True, False),
    attention_heads=4,
    context_dim=24,
    norm_groups=8,
)
CONFIGS = {"tiny": UNetConfig.tiny(), "mixed_depth2": MIXED, "cross_then_plain": CROSS_THEN_PLAIN}


def reference_unet(cfg: UNetConfig) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel with the settings an SD1.x checkpoint uses, translated from `cfg`."""
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention_levels)]
    return diffusers.UNet2DConditionModel(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=cfg.block_channels,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_heads,  # diffusers' SD1 quirk: this field holds the number of heads
        cross_attention_dim=cfg.context_dim,
        norm_num_groups=cfg.norm_groups,
        norm_eps=cfg.norm_eps,
        transformer_layers_per_block=cfg.transformer_depth,
        use_linear_projection=False,
        flip_sin_to_cos=True,
        freq_shift=0,
    ).eval()


@functools.cache
def paired(cfg: UNetConfig) -> tuple[UNet, torch.nn.Module]:
    ref = reference_unet(cfg)
    ours = UNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # shares the tensors: no extra memory
    return ours, ref


def relative_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_keys_and_shapes_match_diffusers(name):
    cfg = CONFIGS[name]
    ours = {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()}
    ref = {k: tuple(v.shape) for k, v in reference_unet(cfg).state_dict().items()}
    assert ours == ref


def test_state_dict_keys_match_at_sd15_size_without_allocating():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in UNet(UNetConfig()).state_dict().items()}
        ref = {k: tuple(v.shape) for k, v in reference_unet(UNetConfig()).state_dict().items()}
    assert ours == ref
    assert len(ours) == 686  # the SD1.5 UNet's tensor count
    assert sum(torch.Size(s).numel() for s in ours.values()) == 859_520_964


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize(("size", "timestep"), [((16, 16), 999.0), ((9, 9), 500.5), ((12, 20), 1.0)])
@torch.no_grad()
def test_output_matches_diffusers(name, size, timestep):
    cfg = CONFIGS[name]
    ours, ref = paired(cfg)
    x = torch.randn(2, cfg.in_channels, *size)
    context = torch.randn(2, 7, cfg.context_dim)
    t = torch.tensor([timestep, timestep / 3])
    expected = ref(x, t, encoder_hidden_states=context).sample
    got = ours(x, t, context)
    assert got.shape == (2, cfg.out_channels, *size)
    assert relative_max_diff(got, expected) <= 1e-4


@torch.no_grad()
def test_scalar_timestep_is_broadcast_over_the_batch():
    cfg = UNetConfig.tiny()
    ours, ref = paired(cfg)
    x, context = torch.randn(3, 4, 8, 8), torch.randn(3, 5, cfg.context_dim)
    expected = ref(x, torch.tensor(250.0), encoder_hidden_states=context).sample
    assert relative_max_diff(ours(x, torch.tensor(250.0), context), expected) <= 1e-4
    assert relative_max_diff(ours(x, 250.0, context), expected) <= 1e-4


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 500.5, 999.0])
    expected = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(timestep_embedding(t, 320), expected, atol=1e-6)
    # t = 0: cos(0) = 1 in the first half, sin(0) = 0 in the second.
    assert timestep_embedding(torch.zeros(1), 8).tolist() == [[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]


def test_prediction_type_is_only_stored():
    cfg = dataclasses.replace(UNetConfig.tiny(), prediction="v")
    eps_net, v_net = UNet(UNetConfig.tiny()), UNet(cfg)
    v_net.load_state_dict(eps_net.state_dict())
    x, context = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 32)
    assert v_net.config.prediction == "v"
    assert torch.equal(v_net(x, 10.0, context), eps_net(x, 10.0, context))


def test_bad_inputs_raise_one_sentence_errors():
    net = UNet(UNetConfig.tiny())
    x = torch.randn(2, 4, 8, 8)
    with pytest.raises(InputError, match=r"timestep has shape \(3,\); expected a scalar or one value per image \(2\)"):
        net(x, torch.ones(3), torch.randn(2, 3, 32))
    with pytest.raises(InputError, match=r"text conditioning has shape \(2, 3, 16\); expected \(batch, tokens, 32\)"):
        net(x, 1.0, torch.randn(2, 3, 16))
    with pytest.raises(AtelierError, match="has 3 cross_attention_levels for 2 block_channels; expected one entry"):
        UNet(dataclasses.replace(UNetConfig.tiny(), cross_attention_levels=(True, True, False)))


# --------------------------------------------------------------------------------------------------------------
# The cross-attention hook
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_capture_cross_attention_shapes_sums_and_same_output():
    cfg = MIXED
    net = UNet(cfg).eval()
    x, context = torch.randn(2, 4, 12, 20), torch.randn(2, 7, cfg.context_dim)
    plain = net(x, 321.0, context)
    with capture_cross_attention(net) as maps:
        captured = net(x, 321.0, context)
    assert (captured - plain).abs().max().item() <= 1e-5

    # Levels 1 and 2 have 2 transformers down and 3 up, each of depth 2, plus the middle one: 2*(2+3)*2 + 2 = 22.
    assert len(maps) == 22
    assert maps[0].layer == "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert maps[-1].layer == "up_blocks.1.attentions.2.transformer_blocks.1.attn2"
    sizes = {m.layer.split(".attentions")[0]: m.size for m in maps}
    assert sizes == {
        "down_blocks.1": (6, 10),
        "down_blocks.2": (3, 5),
        "mid_block": (3, 5),
        "up_blocks.0": (3, 5),
        "up_blocks.1": (6, 10),
    }
    for m in maps:
        assert m.probs.shape == (2, cfg.attention_heads, *m.size, 7)
        assert torch.allclose(m.probs.sum(dim=-1), torch.ones(()), atol=1e-5)
        assert (m.probs >= 0).all()

    # Outside the context nothing is recorded and the fused path runs again.
    net(x, 321.0, context)
    assert len(maps) == 22
    assert all(m.record is None for m in net.modules() if hasattr(m, "record"))


@torch.no_grad()
def test_token_heatmaps_average_layers_and_heads():
    cfg = UNetConfig.tiny()
    net = UNet(cfg).eval()
    x, context = torch.randn(2, 4, 16, 16), torch.randn(2, 5, cfg.context_dim)
    with capture_cross_attention(net) as maps:
        net(x, 10.0, context)
    with capture_cross_attention(net, average_heads=True) as averaged:
        net(x, 10.0, context)
    assert averaged[0].probs.shape == (2, 1, 16, 16, 5)
    assert torch.allclose(averaged[0].probs[:, 0], maps[0].probs.mean(dim=1))

    heat = token_heatmaps(maps, (16, 24))
    assert heat.shape == (2, 5, 16, 24)
    assert torch.allclose(heat.sum(dim=1), torch.ones(()), atol=1e-5)  # still a distribution over tokens
    assert torch.allclose(heat, token_heatmaps(averaged, (16, 24)), atol=1e-6)
    # A single full-resolution layer at its own size is just its head average, permuted to (B, T, h, w).
    one = token_heatmaps(maps[:1], 16)
    assert torch.allclose(one, maps[0].probs.mean(dim=1).permute(0, 3, 1, 2), atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Full size, run on purpose: pytest -m slow tests/models/test_unet.py -s
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@torch.inference_mode()
def test_sd15_size_matches_diffusers():
    ours, ref = paired(UNetConfig())
    x = torch.randn(2, 4, 64, 64)
    t = torch.tensor([999.0, 500.5])
    context = torch.randn(2, 77, 768)

    start = time.perf_counter()
    expected = ref(x, t, encoder_hidden_states=context).sample
    ref_seconds = time.perf_counter() - start
    start = time.perf_counter()
    got = ours(x, t, context)
    our_seconds = time.perf_counter() - start

    diff = (got - expected).abs().max().item()
    print(
        f"\nSD1.5 UNet, batch 2, 64x64 latent, fp32 CPU with {torch.get_num_threads()} threads: "
        f"max abs diff {diff:.3e} (output max {expected.abs().max().item():.3f}); "
        f"ours {our_seconds:.2f} s, diffusers {ref_seconds:.2f} s"
    )
    assert relative_max_diff(got, expected) <= 1e-4
