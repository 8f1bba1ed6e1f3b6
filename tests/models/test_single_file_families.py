"""SD 2.x and SDXL single files in their original layouts, built from random weights, read by Atelier's loader and
by diffusers' own single-file converters (diffusers.loaders.single_file_utils: convert_ldm_unet_checkpoint,
convert_open_clip_checkpoint, convert_ldm_clip_checkpoint; called directly, as `from_single_file` would need the
published configs from the Hub) into diffusers/transformers modules: both must give identical outputs.

Each file is written the way Stability's code stores it: `model.diffusion_model.*` (LDM UNet names),
`first_stage_model.*`, and the text towers under `cond_stage_model.model.*` (SD 2.x, open_clip layout) or
`conditioner.embedders.0.transformer.text_model.*` (CLIP-L, transformers layout) and
`conditioner.embedders.1.model.*` (bigG, open_clip layout: in_proj_weight, ln_1, mlp.c_fc, positional_embedding...).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.checkpoint import load_family_checkpoint
from atelier.models.config import TextEncoderConfig, VAEConfig
from atelier.models.detect import detect_family, family_variant, infer_unet_config
from atelier.models.unet import sdxl_vector
from atelier.models.vae import VAE

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from tests.models.test_unet_families import reference_unet  # noqa: E402
from tests.models.tiny_families import TINY_G, TINY_H, TINY_L, TINY_REFINER, TINY_SD2, TINY_SDXL  # noqa: E402

START, END = 49406, 49407
# The tiny towers and UNets (what a file cannot say fixed at the real models' values: 64-wide heads, 32 GroupNorm
# groups, 256 values per size number in y) are shared with the graph tests; this file's VAE is its own.
TINY_VAE = VAEConfig(block_channels=(32, 32), layers_per_block=1)


def hf_tower(config: TextEncoderConfig, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    hf = CLIPTextConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.width,
        intermediate_size=config.mlp_width,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        hidden_act=config.activation,
        projection_dim=config.projection_dim or config.width,
        eos_token_id=END,
    )
    cls = CLIPTextModelWithProjection if config.projection_dim else CLIPTextModel
    model = cls(hf).eval()
    for p in model.parameters():  # LayerNorm biases start at 0 and weights at 1: make every tensor count
        p.data.add_(0.02 * torch.randn_like(p))
    return model


def tower_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our names: transformers 5's CLIPTextModel drops the `text_model.` level, files keep it."""
    state = model.state_dict()
    if isinstance(model, CLIPTextModel):
        state = {f"text_model.{k}": v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.endswith("position_ids")}


def unet_and_sd_state(cfg, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    ref = reference_unet(cfg)
    for p in ref.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    return ref, keymap.unet_to_sd(ref.state_dict(), cfg)


def vae_sd_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return keymap.vae_to_sd(VAE(TINY_VAE).state_dict(), TINY_VAE)


def with_prefix(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v.contiguous() for k, v in state.items()}


def ids(pad: int) -> torch.Tensor:
    out = torch.randint(0, START, (2, 77))
    out[:, 0] = START
    out[0, 6], out[1, 12] = END, END
    out[0, 7:], out[1, 13:] = pad, pad
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


@pytest.fixture(scope="module")
def sdxl_file(tmp_path_factory):
    ref_unet, unet_sd = unet_and_sd_state(TINY_SDXL, seed=10)
    clip_l, clip_g = hf_tower(TINY_L, 11), hf_tower(TINY_G, 12)
    state = {
        **with_prefix(keymap.UNET_PREFIX, unet_sd),
        **with_prefix(keymap.VAE_PREFIX, vae_sd_state(13)),
        **with_prefix(keymap.SDXL_CLIP_L_PREFIX, tower_state(clip_l)),
        **with_prefix(keymap.SDXL_CLIP_G_PREFIX, keymap.text_encoder_to_open_clip(tower_state(clip_g))),
        keymap.SDXL_CLIP_G_PREFIX + "logit_scale": torch.tensor(4.6),  # stored by open_clip, unused
    }
    path = tmp_path_factory.mktemp("sdxl") / "tiny_sdxl.safetensors"
    save_file({k: v.half() for k, v in state.items()}, str(path))  # an fp16 file, as most SDXL downloads are
    return path, ref_unet, {k: v.half().float() for k, v in state.items()}


@torch.no_grad()
def test_sdxl_single_file_matches_diffusers_converters(sdxl_file):
    path, ref_unet, checkpoint = sdxl_file
    model = load_family_checkpoint(path, device="cpu", dtype=torch.float32)
    assert (model.family, model.variant) == ("sdxl", "SDXL base")
    assert model.unet_config == TINY_SDXL
    assert model.vae_config.scaling_factor == 0.13025

    # diffusers' converter on the same file's tensors -> its UNet2DConditionModel.
    ref_unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(checkpoint, ref_unet.config), strict=True)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([900.0, 20.0])
    context, pooled = torch.randn(2, 7, 40), torch.randn(2, 16)
    numbers = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [512, 768, 0, 64, 1024, 1024]])
    ours_unet = model.unet
    expected = ref_unet(
        x, t, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": numbers}
    )
    got = ours_unet(x, t, context, sdxl_vector(pooled, numbers))
    assert torch.equal(got, expected.sample) or rel(got, expected.sample) <= 1e-5

    # The two towers, through diffusers' converters.
    ref_l = CLIPTextModel(hf_tower(TINY_L, 0).config).eval()
    ref_l.load_state_dict(
        {
            k.removeprefix("text_model."): v
            for k, v in sfu.convert_ldm_clip_checkpoint(checkpoint, remove_prefix=keymap.SDXL_CLIP_L_PREFIX).items()
            if not k.endswith("position_ids")
        },
        strict=False,
    )
    ref_g = CLIPTextModelWithProjection(hf_tower(TINY_G, 0).config).eval()
    ref_g.load_state_dict(
        sfu.convert_open_clip_checkpoint(ref_g, checkpoint, prefix=keymap.SDXL_CLIP_G_PREFIX), strict=False
    )
    ids_l, ids_g = ids(END), ids(0)
    context_ours, pooled_ours = model.text_encoder.encode(ids_l, ids_g)
    theirs_l = ref_l(ids_l, output_hidden_states=True)
    theirs_g = ref_g(ids_g, output_hidden_states=True)
    expected_context = torch.cat([theirs_l.hidden_states[-2], theirs_g.hidden_states[-2]], dim=-1)
    assert rel(context_ours, expected_context) <= 1e-5
    assert rel(pooled_ours, theirs_g.text_embeds) <= 1e-5


@torch.no_grad()
def test_sdxl_refiner_single_file(tmp_path):
    cfg = TINY_REFINER
    ref_unet, unet_sd = unet_and_sd_state(cfg, seed=20)
    clip_g = hf_tower(TextEncoderConfig(width=16, layers=2, heads=1, mlp_width=32, activation="gelu",
                                        projection_dim=16), 21)  # fmt: skip
    state = {
        **with_prefix(keymap.UNET_PREFIX, unet_sd),
        **with_prefix(keymap.VAE_PREFIX, vae_sd_state(22)),
        **with_prefix(keymap.REFINER_CLIP_G_PREFIX, keymap.text_encoder_to_open_clip(tower_state(clip_g))),
    }
    path = tmp_path / "tiny_refiner.safetensors"
    save_file(state, str(path))
    model = load_family_checkpoint(path, device="cpu", dtype=torch.float32)
    assert (model.family, model.variant) == ("sdxl", "SDXL base")  # y is 1296 wide here, not the refiner's 2560
    assert model.unet_config == cfg
    assert model.text_encoder.clip_l is None and model.text_encoder.context_dim == 16
    ref_unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(state, ref_unet.config), strict=True)
    x, context, pooled = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 16), torch.randn(1, 16)
    numbers = torch.tensor([[1024.0, 1024, 0, 0, 6.0]])
    expected = ref_unet(
        x, 500.0, encoder_hidden_states=context, added_cond_kwargs={"text_embeds": pooled, "time_ids": numbers}
    )
    assert rel(model.unet(x, 500.0, context, sdxl_vector(pooled, numbers)), expected.sample) <= 1e-5
    assert family_variant("sdxl", cfg.__class__(adm_in_channels=2560)) == "SDXL refiner"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_sd2_single_file_matches_diffusers_converters(tmp_path, dtype):
    ref_unet, unet_sd = unet_and_sd_state(TINY_SD2, seed=30)
    clip_h = hf_tower(TINY_H, 31)
    open_clip = keymap.text_encoder_to_open_clip(tower_state(clip_h))
    open_clip["text_projection"] = torch.randn(24, 24)  # SD 2.x files carry it; the UNet never reads it
    state = {
        **with_prefix(keymap.UNET_PREFIX, unet_sd),
        **with_prefix(keymap.VAE_PREFIX, vae_sd_state(32)),
        **with_prefix(keymap.SD2_TEXT_PREFIX, open_clip),
    }
    path = tmp_path / "tiny_sd2.safetensors"
    save_file({k: v.to(dtype) for k, v in state.items()}, str(path))
    state = {k: v.to(dtype).float() for k, v in state.items()}
    path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    model = load_family_checkpoint(path, device="cpu", dtype=torch.float32)
    assert (model.family, model.variant) == ("sd2", "SD2.x-v")
    assert model.unet_config == TINY_SD2

    ref_unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(state, ref_unet.config), strict=True)
    ours_unet = model.unet
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([900.0, 20.0]), torch.randn(2, 7, 24)
    assert rel(ours_unet(x, t, context), ref_unet(x, t, encoder_hidden_states=context).sample) <= 1e-5

    ref_h = CLIPTextModel(hf_tower(TINY_H, 0).config).eval()
    converted = sfu.convert_open_clip_checkpoint(ref_h, state, prefix=keymap.SD2_TEXT_PREFIX)
    ref_h.load_state_dict({k.removeprefix("text_model."): v for k, v in converted.items()}, strict=False)
    ids_ = ids(0)
    theirs = ref_h(ids_, output_hidden_states=True)
    # SD 2.x's reading: the penultimate layer through the final LayerNorm.
    expected = ref_h.final_layer_norm(theirs.hidden_states[-2])
    assert rel(model.text_encoder.encode(ids_, clip_skip=2), expected) <= 1e-5


def test_detection_names_each_family():
    sdxl = {
        keymap.UNET_PREFIX + "label_emb.0.0.weight": (1280, 2816),
        keymap.SDXL_CLIP_G_PREFIX + "ln_final.weight": (1280,),
    }
    assert detect_family(sdxl)[0] == "sdxl"
    assert detect_family({keymap.SD2_TEXT_PREFIX + "ln_final.weight": (1024,)})[0] == "sd2"
    assert family_variant("sd1") == "SD1.x" and family_variant("sd2") == "SD2.x-base"


def test_open_clip_names_round_trip_and_refuse_strangers():
    state = tower_state(hf_tower(TINY_H, 40))
    there = keymap.text_encoder_to_open_clip(state)
    assert "transformer.resblocks.0.attn.in_proj_weight" in there and there["positional_embedding"].shape == (77, 24)
    back = keymap.text_encoder_from_open_clip(there, projection=False)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(CheckpointError, match=r"unexpected weight transformer\.resblocks\.0\.attn\.foo\.weight"):
        keymap.text_encoder_from_open_clip({"transformer.resblocks.0.attn.foo.weight": torch.zeros(1)}, False)


def test_full_size_sdxl_shapes_read_back_as_the_preset():
    from atelier.models.config import UNetConfig
    from atelier.models.unet import UNet

    for preset in (UNetConfig.sdxl(), UNetConfig.sdxl_refiner(), UNetConfig.sd2(prediction="eps")):
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in keymap.unet_to_sd(UNet(preset).state_dict(), preset).items()}
        assert infer_unet_config(shapes, preset.prediction) == preset


def test_atelier_info_names_the_variant_and_counts(sdxl_file):
    from atelier.models.info import describe_model

    path, ref_unet, _ = sdxl_file
    lines = describe_model(path).splitlines()
    unet_params = sum(p.numel() for p in ref_unet.parameters())
    assert lines[1] == "  kind          SDXL base (sdxl), predicts noise (eps)"
    assert lines[2] == f"  unet          {unet_params / 1e6:.2f} M parameters in {len(ref_unet.state_dict())} tensors"
    assert lines[4].startswith("  clip_l        CLIP ViT-L/14 text, ")
    assert lines[5].startswith("  clip_g        OpenCLIP ViT-bigG/14 text, ")
    assert lines[6].startswith("  file          ")


@torch.no_grad()
def test_sdxl_diffusers_folder_loads_to_the_same_outputs(tmp_path):
    ref_unet, _ = unet_and_sd_state(TINY_SDXL, seed=50)
    clip_l, clip_g = hf_tower(TINY_L, 51), hf_tower(TINY_G, 52)
    torch.manual_seed(53)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        scaling_factor=0.13025,
    )
    folder = tmp_path / "tiny-sdxl"
    ref_unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    clip_l.save_pretrained(folder / "text_encoder")
    clip_g.save_pretrained(folder / "text_encoder_2")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    model = load_family_checkpoint(folder, device="cpu", dtype=torch.float32)
    assert (model.family, model.variant, model.unet_config) == ("sdxl", "SDXL base", TINY_SDXL)
    assert model.vae_config.scaling_factor == 0.13025
    x, context, pooled = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 40), torch.randn(1, 16)
    numbers = torch.tensor([[768.0, 1024, 0, 0, 1024, 1024]])
    added = {"text_embeds": pooled, "time_ids": numbers}
    expected = ref_unet(x, 300.0, encoder_hidden_states=context, added_cond_kwargs=added).sample
    assert rel(model.unet(x, 300.0, context, sdxl_vector(pooled, numbers)), expected) <= 1e-5
    ids_l, ids_g = ids(END), ids(0)
    got_context, got_pooled = model.text_encoder.encode(ids_l, ids_g)
    theirs_l, theirs_g = clip_l(ids_l, output_hidden_states=True), clip_g(ids_g, output_hidden_states=True)
    assert rel(got_context, torch.cat([theirs_l.hidden_states[-2], theirs_g.hidden_states[-2]], -1)) <= 1e-5
    assert rel(got_pooled, theirs_g.text_embeds) <= 1e-5
