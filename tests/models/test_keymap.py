"""Key renaming between the original SD single-file layout and ours (= diffusers / transformers names).

The tables are checked three ways: round trips on real module state dicts, exact key counts of the full-size SD1.5
layout, and agreement with diffusers' own single-file converter on every name of a full-size UNet and VAE. Full-size
modules are built on the meta device (names and shapes only, no memory), so these tests are fast.
"""

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as ref
from transformers import CLIPTextConfig, CLIPTextModel

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig

SD15_UNET = UNetConfig()
SD15_VAE = VAEConfig()


def diffusers_unet(config: UNetConfig) -> UNet2DConditionModel:
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.cross_attention_levels))
    return UNet2DConditionModel(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=config.block_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.context_dim,
        attention_head_dim=config.attention_heads,
        transformer_layers_per_block=config.transformer_depth,
        norm_num_groups=config.norm_groups,
    )


def diffusers_vae(config: VAEConfig) -> AutoencoderKL:
    levels = len(config.block_channels)
    return AutoencoderKL(
        block_out_channels=config.block_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=config.norm_groups,
    )


def meta_state(make):
    with torch.device("meta"):
        return make().state_dict()


UNET_CONFIGS = [
    SD15_UNET,
    UNetConfig.tiny(),
    UNetConfig(
        block_channels=(32, 64, 64),
        layers_per_block=3,
        cross_attention_levels=(False, True, True),
        transformer_depth=2,
        context_dim=16,
        norm_groups=8,
    ),
]


@pytest.mark.parametrize("config", UNET_CONFIGS, ids=["sd15", "tiny", "odd"])
def test_unet_round_trip(config):
    state = meta_state(lambda: diffusers_unet(config))
    sd = keymap.unet_to_sd(state, config)
    back = keymap.unet_from_sd(sd, config)
    assert len(sd) == len(state) == len(back)
    assert list(back) == list(state)
    assert all(back[k] is state[k] for k in state)  # renaming never touches a tensor


def test_sd15_unet_names_and_counts():
    sd = keymap.unet_to_sd(meta_state(lambda: diffusers_unet(SD15_UNET)), SD15_UNET)
    assert len(sd) == 686  # the number of model.diffusion_model.* tensors in v1-5-pruned-emaonly.safetensors
    # A few names every SD1.x file has, with the shapes they have there.
    assert tuple(sd["input_blocks.0.0.weight"].shape) == (320, 4, 3, 3)
    assert tuple(sd["input_blocks.4.1.proj_in.weight"].shape) == (640, 640, 1, 1)
    assert tuple(sd["input_blocks.9.0.op.weight"].shape) == (1280, 1280, 3, 3)
    assert tuple(sd["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape) == (1280, 768)
    assert tuple(sd["output_blocks.2.1.conv.weight"].shape) == (1280, 1280, 3, 3)  # no transformer at this level
    assert tuple(sd["output_blocks.5.2.conv.weight"].shape) == (1280, 1280, 3, 3)  # after a transformer: slot 2
    assert tuple(sd["output_blocks.11.0.skip_connection.weight"].shape) == (320, 640, 1, 1)
    assert tuple(sd["time_embed.0.weight"].shape) == (1280, 320)
    assert tuple(sd["out.2.weight"].shape) == (4, 320, 3, 3)


def test_unet_table_agrees_with_diffusers_converter():
    """Our SD names, fed to diffusers' own LDM->diffusers converter, come back as the diffusers model's names."""
    state = meta_state(lambda: diffusers_unet(SD15_UNET))
    sd = {keymap.UNET_PREFIX + k: v for k, v in keymap.unet_to_sd(state, SD15_UNET).items()}
    converted = ref.convert_ldm_unet_checkpoint(sd, {"layers_per_block": 2})
    assert set(converted) == set(state)
    assert all(tuple(converted[k].shape) == tuple(state[k].shape) for k in state)


@pytest.mark.parametrize("config", [SD15_VAE, VAEConfig.tiny()], ids=["sd15", "tiny"])
def test_vae_round_trip_and_attention_reshape(config):
    state = meta_state(lambda: diffusers_vae(config))
    sd = keymap.vae_to_sd(state, config)
    assert len(sd) == len(state)
    c = config.block_channels[-1]
    for name in ("q", "k", "v", "proj_out"):
        assert tuple(sd[f"encoder.mid.attn_1.{name}.weight"].shape) == (c, c, 1, 1)  # 1x1 conv in SD files
    back = keymap.vae_from_sd(sd, config)
    assert list(back) == list(state)
    assert all(back[k].shape == state[k].shape for k in state)
    assert tuple(back["decoder.mid_block.attentions.0.to_q.weight"].shape) == (c, c)


def test_vae_table_agrees_with_diffusers_converter():
    state = meta_state(lambda: diffusers_vae(SD15_VAE))
    sd = {keymap.VAE_PREFIX + k: v for k, v in keymap.vae_to_sd(state, SD15_VAE).items()}
    assert len(sd) == 248  # first_stage_model.* tensors in v1-5-pruned-emaonly.safetensors
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in sd  # SD numbers decoder levels bottom-up
    assert "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight" in sd
    config = {"down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
    converted = ref.convert_ldm_vae_checkpoint(sd, config)
    assert set(converted) == set(state)
    assert all(tuple(converted[k].shape) == tuple(state[k].shape) for k in state)


def test_vae_attention_values_survive_the_reshape():
    config = VAEConfig.tiny()
    state = {k: torch.randn(v.shape) for k, v in meta_state(lambda: diffusers_vae(config)).items()}
    back = keymap.vae_from_sd(keymap.vae_to_sd(state, config), config)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_text_encoder_names_and_round_trip():
    config = TextEncoderConfig.tiny()
    hf = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4))
    state = keymap.text_encoder_names(hf.state_dict())  # transformers 5 leaves out `text_model.`; it is added
    assert all(k.startswith("text_model.") for k in state)
    assert len(state) == 2 + 16 * 3 + 2  # two embeddings, 16 tensors per layer, final LayerNorm (SD1.5: 196)
    sd = keymap.text_encoder_to_sd(state, config)
    assert keymap.text_encoder_from_sd(sd, config).keys() == state.keys()
    old = {"embeddings.position_ids": torch.arange(77)[None], "embeddings.token_embedding.weight": torch.zeros(3)}
    assert list(keymap.text_encoder_names(old)) == ["text_model.embeddings.token_embedding.weight"]


def test_projection_is_kept_when_configured():
    config = TextEncoderConfig(projection_dim=8)
    state = {"text_model.final_layer_norm.weight": torch.zeros(2), "text_projection.weight": torch.zeros(8, 2)}
    assert keymap.text_encoder_from_sd(keymap.text_encoder_to_sd(state, config), config).keys() == state.keys()
    with pytest.raises(CheckpointError, match=r"text_projection\.weight"):
        keymap.text_encoder_to_sd(state, TextEncoderConfig())


def test_unknown_keys_are_named():
    config = UNetConfig.tiny()
    sd = keymap.unet_to_sd(meta_state(lambda: diffusers_unet(config)), config)
    sd["input_blocks.77.0.in_layers.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"The UNet has 1 weight\(s\) .*input_blocks\.77\.0\.in_layers\.0"):
        keymap.unet_from_sd(sd, config)


def test_split_and_join_checkpoint():
    full = {
        "model.diffusion_model.out.2.bias": torch.zeros(4),
        "first_stage_model.quant_conv.bias": torch.zeros(8),
        "cond_stage_model.transformer.text_model.final_layer_norm.bias": torch.zeros(2),
        "model_ema.decay": torch.tensor(0.999),
        "alphas_cumprod": torch.zeros(1000),
    }
    parts = keymap.split_checkpoint(full)
    assert list(parts["unet"]) == ["out.2.bias"]
    assert list(parts["vae"]) == ["quant_conv.bias"]
    assert list(parts["text_encoder"]) == ["text_model.final_layer_norm.bias"]
    assert sorted(parts["ignored"]) == ["alphas_cumprod", "model_ema.decay"]
    joined = keymap.join_checkpoint(parts["unet"], parts["vae"], parts["text_encoder"])
    assert joined.keys() == {k for k in full if k not in parts["ignored"]}


def test_old_diffusers_vae_attention_names():
    state = {"encoder.mid_block.attentions.0.query.weight": 1, "decoder.mid_block.attentions.0.proj_attn.bias": 2}
    assert keymap.vae_old_diffusers_names(state) == {
        "encoder.mid_block.attentions.0.to_q.weight": 1,
        "decoder.mid_block.attentions.0.to_out.0.bias": 2,
    }


def test_old_and_new_vae_attention_names_cannot_both_be_kept():
    state = {"encoder.mid_block.attentions.0.query.weight": 1, "encoder.mid_block.attentions.0.to_q.weight": 2}
    with pytest.raises(CheckpointError, match=r"^the VAE has attention weights under both old and new .*\(1 lost\)"):
        keymap.vae_old_diffusers_names(state)


def test_vae_from_diffusers_renames_old_names_and_reshapes_attention():
    state = {
        "encoder.mid_block.attentions.0.query.weight": torch.zeros(8, 8, 1, 1),
        "encoder.mid_block.attentions.0.to_k.weight": torch.zeros(8, 8),
        "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
    }
    out = keymap.vae_from_diffusers(state)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "encoder.mid_block.attentions.0.to_q.weight": (8, 8),
        "encoder.mid_block.attentions.0.to_k.weight": (8, 8),
        "encoder.conv_in.weight": (8, 3, 3, 3),
    }


def test_vae_without_prefix():
    state = {"first_stage_model.encoder.conv_in.weight": 1, "decoder.conv_in.weight": 2, "loss.logvar": 3}
    assert keymap.vae_without_prefix(state) == {
        "encoder.conv_in.weight": 1,
        "decoder.conv_in.weight": 2,
        "loss.logvar": 3,
    }
    with pytest.raises(CheckpointError, match=r"^the VAE has weights both with and without the first_stage_model\.\*"):
        keymap.vae_without_prefix({"first_stage_model.decoder.conv_in.weight": 1, "decoder.conv_in.weight": 2})
