"""ControlNet (models/controlnet.py): parity with diffusers' ControlNetModel on shared random weights, the UNet's
output with the residuals equal to diffusers' UNet2DConditionModel given them, both file layouts, bad files."""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from safetensors.torch import save_file

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import UNetConfig, config_to_json
from atelier.models.controlnet import (
    AppliedControlNet,
    ControlNet,
    ControlNetConfig,
    ControlStack,
    load_controlnet,
    percent_to_sigma,
    skip_channels,
)
from atelier.models.info import describe_model
from atelier.models.unet import UNet
from atelier.sampling.denoisers import DiscreteSchedule
from tests.models.test_unet import reference_unet

diffusers = pytest.importorskip("diffusers")

TINY = ControlNetConfig(
    dataclasses.replace(UNetConfig.tiny(), block_channels=(32, 64, 64), layers_per_block=2,
                        cross_attention_levels=(True, True, False)),
    hint_block_channels=(8, 16, 16, 32),
)  # fmt: skip


def reference_controlnet(config: ControlNetConfig) -> torch.nn.Module:
    """diffusers' ControlNetModel with SD1.x settings, translated from `config`, every weight random (the zero
    convolutions too, so that they carry something to compare)."""
    cfg = config.unet
    ref = diffusers.ControlNetModel(
        in_channels=cfg.in_channels,
        conditioning_channels=config.hint_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention_levels),
        block_out_channels=cfg.block_channels,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_heads,  # diffusers' SD1 quirk: the number of heads
        cross_attention_dim=cfg.context_dim,
        norm_num_groups=cfg.norm_groups,
        norm_eps=cfg.norm_eps,
        transformer_layers_per_block=cfg.transformer_depth,
        conditioning_embedding_out_channels=config.hint_block_channels,
        use_linear_projection=False,
        flip_sin_to_cos=True,
        freq_shift=0,
    ).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim > 1:  # weights: variance ~ 1 / fan-in
                p.copy_(noise * 0.5 / p[0].numel() ** 0.5)
            else:  # norm scales near 1, biases near 0
                p.copy_(noise * 0.05 + (1.0 if "norm" in name and name.endswith(".weight") else 0.0))
    return ref


@functools.cache
def paired(config: ControlNetConfig) -> tuple[ControlNet, torch.nn.Module]:
    ref = reference_controlnet(config)
    ours = ControlNet(config).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def inputs(config: ControlNetConfig, batch: int = 2, size: int = 16):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, config.unet.in_channels, size, size, generator=g)
    context = torch.randn(batch, 7, config.unet.context_dim, generator=g)
    hint = torch.rand(batch, 3, 8 * size, 8 * size, generator=g)
    return x, torch.tensor([999.0, 321.0][:batch]), context, hint


def test_residuals_and_controlled_unet_equal_diffusers():
    ours, ref = paired(TINY)
    x, t, context, hint = inputs(TINY)
    with torch.no_grad():
        got = ours(x, t, context, hint)
        down, mid = ref(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
        assert len(got.down) == len(down) == len(skip_channels(TINY.unet)) == 9
        for a, b in zip(got.down, down, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.mid, mid, atol=1e-5, rtol=1e-4)
        assert mid.abs().max() > 1e-2  # the comparison is not between zeros
        # the UNet with the residuals added, against diffusers' UNet given them
        ref_unet = reference_unet(TINY.unet)
        unet = UNet(TINY.unet).eval()
        unet.load_state_dict(ref_unet.state_dict())
        expected = ref_unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample  # fmt: skip
        controlled = unet(x, t, context, control=got)
        torch.testing.assert_close(controlled, expected, atol=1e-5, rtol=1e-4)
        assert (controlled - unet(x, t, context)).abs().max() > 1e-3  # the control changed the output


def original_layout(state: dict[str, torch.Tensor], config: ControlNetConfig, prefix: str) -> dict[str, torch.Tensor]:
    """A diffusers-named ControlNet state in the original (ComfyUI / lllyasviel) layout: the encoder through the
    UNet's LDM names, the hint encoder as input_hint_block.{0, 2, ..., 14}, zero_convs.i.0, middle_block_out.0."""
    encoder = {k: v for k, v in state.items() if not k.startswith("controlnet_")}
    out = keymap.rename(encoder, keymap.unet_table(config.unet), to_sd=True, what="test")
    hint = [k for k in state if k.startswith("controlnet_cond_embedding.")]
    convs = ["conv_in"] + [f"blocks.{i}" for i in range(2 * (len(config.hint_block_channels) - 1))] + ["conv_out"]
    for index, name in enumerate(convs):
        for part in ("weight", "bias"):
            out[f"input_hint_block.{2 * index}.{part}"] = state[f"controlnet_cond_embedding.{name}.{part}"]
    assert len(hint) == 2 * len(convs)
    for i in range(len(skip_channels(config.unet))):
        for part in ("weight", "bias"):
            out[f"zero_convs.{i}.0.{part}"] = state[f"controlnet_down_blocks.{i}.{part}"]
    for part in ("weight", "bias"):
        out[f"middle_block_out.0.{part}"] = state[f"controlnet_mid_block.{part}"]
    return {prefix + k: v for k, v in out.items()}


@pytest.mark.parametrize("layout", ["diffusers-file", "diffusers-folder", "control_model.", "no-prefix", "whole-sd"])
def test_each_layout_loads_to_the_same_network(tmp_path, layout):
    ours, ref = paired(TINY)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / "control_v11p_sd15_canny.safetensors"
    ours_meta = {"atelier.unet_config": config_to_json(TINY.unet)}  # the heads and groups, which shapes hide
    if layout == "diffusers-file":
        save_file(state, str(path), metadata=ours_meta)
    elif layout == "diffusers-folder":
        path = tmp_path / "canny"
        ref.save_pretrained(path)
    else:
        prefix = "" if layout == "no-prefix" else "control_model."
        stored = original_layout(state, TINY, prefix)
        if layout == "whole-sd":  # lllyasviel's first files carried the whole SD model beside the ControlNet
            stored["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
            stored["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)
        save_file(stored, str(path), metadata=ours_meta)
    loaded = load_controlnet(path)
    assert loaded.config == TINY
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    text = describe_model(path)
    assert "a ControlNet for a Stable Diffusion 1.x UNet" in text and "9 residuals" in text
    assert ("diffusers" if layout.startswith("diffusers") else "original / ComfyUI") in text


def test_stack_sums_strengths_and_keeps_to_its_step_window():
    ours, _ = paired(TINY)
    x, t, context, hint = inputs(TINY, batch=1)
    image = hint.movedim(1, -1)  # IMAGE (B, H, W, 3)
    schedule = DiscreteSchedule.scaled_linear()
    one = ours(x, t, context, hint)
    stack = ControlStack((AppliedControlNet(ours, image, 0.5), AppliedControlNet(ours, image, 0.25, 0.0, 0.5)))
    early, late = torch.tensor([schedule.sigma_max]), torch.tensor([0.5])
    both = stack(x, t, context, early, schedule)
    torch.testing.assert_close(both.mid, one.mid * 0.75)
    torch.testing.assert_close(stack(x, t, context, late, schedule).mid, one.mid * 0.5)  # past 50%: first only
    assert ControlStack((AppliedControlNet(ours, image, 1.0, 0.6, 1.0),))(x, t, context, early, schedule) is None
    # ComfyUI's percent -> sigma: 0 above everything, 1 zero, 0.5 the sigma of timestep 499.5
    assert percent_to_sigma(schedule, 0.0) == float("inf") and percent_to_sigma(schedule, 1.0) == 0.0
    assert percent_to_sigma(schedule, 0.5) == pytest.approx(float(schedule.t_to_sigma(torch.tensor(499.5))))


def test_a_controlnet_in_another_dtype_than_the_unet_reads_and_answers_in_the_unets():
    """A small model's UNet stays in fp32 on a GPU (device.py) while a ControlNet may be bf16: the stack casts."""
    ours, _ = paired(TINY)
    x, t, context, hint = inputs(TINY, batch=1)
    schedule = DiscreteSchedule.scaled_linear()
    early = torch.tensor([schedule.sigma_max])
    exact = ControlStack((AppliedControlNet(ours, hint.movedim(1, -1), 1.0),))(x, t, context, early, schedule)
    half = copy.deepcopy(ours).to(torch.bfloat16)
    got = ControlStack((AppliedControlNet(half, hint.movedim(1, -1), 1.0),))(x, t, context, early, schedule)
    assert got.mid.dtype == torch.float32 and all(r.dtype == torch.float32 for r in got.down)
    torch.testing.assert_close(got.mid, exact.mid, atol=0.05, rtol=0.05)  # bf16 rounding, not another result


def test_bad_files_get_one_sentence(tmp_path):
    path = tmp_path / "upscaler.safetensors"
    save_file({"conv_first.weight": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match=r"^upscaler.safetensors is not a ControlNet \(found conv_first"):
        load_controlnet(path)
    _, ref = paired(TINY)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    del state["controlnet_down_blocks.3.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"looks like a ControlNet \(diffusers layout\) but has 1 missing"):
        load_controlnet(path)
    stored = original_layout({k: v.contiguous() for k, v in ref.state_dict().items()}, TINY, "control_model.")
    stored["control_model.zero_convs.40.0.weight"] = torch.zeros(1)
    save_file(stored, str(path))
    with pytest.raises(CheckpointError, match="weight"):
        load_controlnet(path)


@pytest.mark.slow
def test_sd15_size_matches_diffusers():
    """The full SD1.5 ControlNet (361 M parameters) against diffusers' on the same random weights."""
    config = ControlNetConfig(UNetConfig())
    ours, ref = paired(config)
    x, t, context, hint = inputs(config, batch=2, size=32)
    with torch.no_grad():
        got = ours(x, t, context, hint)
        down, mid = ref(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
    worst = max(
        ((a - b).abs().max() / b.abs().max()).item() for a, b in zip([*got.down, got.mid], [*down, mid], strict=True)
    )
    print(f"\nSD1.5 ControlNet, 32x32 latent: worst relative max difference over the 13 residuals {worst:.2e}")
    assert worst < 1e-4


def test_only_the_entries_that_carry_controlnets_get_them_and_areas_cut_the_hint():
    from atelier.pipeline import Cond, composed_denoiser

    ours, _ = paired(TINY)
    x, _, context, hint = inputs(TINY, batch=1, size=8)
    applied = AppliedControlNet(ours, hint.movedim(1, -1))
    seen = []

    def denoise(x, sigma, context, control=None):
        seen.append(control)
        return x

    conds = [
        Cond(context[:1], control=(applied,)),
        Cond(context[:1]),
        Cond(context[:1], area=(4, 4, 2, 4), control=(applied,)),
    ]
    composed_denoiser(denoise, conds)(x, torch.tensor([1.0]))
    assert isinstance(seen[0], ControlStack) and seen[1] is None and isinstance(seen[2], ControlStack)
    crop = seen[2]._hint(applied, 0, x[:, :, 2:6, 4:8])
    torch.testing.assert_close(crop, hint[:, :, 16:48, 32:64])  # the area's part of the hint, 8x the latent
