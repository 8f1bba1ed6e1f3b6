"""Loading and saving checkpoints, with tiny random models standing in for real ones.

"Real single-file checkpoints load right without having one": tiny diffusers / transformers models are written in
the original SD single-file layout, then that file is loaded (a) by Atelier and (b) by diffusers' own single-file
converter (convert_ldm_*_checkpoint, given the LDM config as a dict so nothing is fetched), and all three
components are compared with the models the file was made from.
"""

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as ref
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.checkpoint import load_checkpoint, load_vae, save_checkpoint
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.detect import META_UNET, detect_family
from atelier.models.info import describe_model
from atelier.models.unet import UNet
from atelier.models.vae import VAE

TOL = 1e-5
# Shapes whose configs can be read back from the file alone: SD1.x's 8 heads and 32 GroupNorm groups.
UNET = UNetConfig(block_channels=(32, 64), layers_per_block=1, cross_attention_levels=(True, False), context_dim=32)
VAE_CFG = VAEConfig(block_channels=(32, 64), layers_per_block=1)
TEXT = TextEncoderConfig(width=128, layers=2, heads=2, mlp_width=256)  # CLIP heads are 64 wide


def make_diffusers_models(seed: int = 0):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=UNET.block_channels,
        layers_per_block=UNET.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=UNET.context_dim,
        attention_head_dim=UNET.attention_heads,
        sample_size=8,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=VAE_CFG.block_channels,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16,
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
    ).eval()
    # GroupNorm/LayerNorm start at weight 1, bias 0; randomise them too so that a swapped norm would show.
    with torch.no_grad():
        for model in (unet, vae, text):
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))
    return unet, vae, text


@pytest.fixture(scope="module")
def models():
    return make_diffusers_models()


@pytest.fixture(scope="module")
def sd_file(models, tmp_path_factory) -> Path:
    """A single-file checkpoint in the SD layout with our configs in its metadata."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", *models)


def strip_metadata(src: Path, dst: Path, edit=None) -> Path:
    """A copy of `src` without our metadata, as a file from A1111 or Civitai would be; `edit` may change tensors."""
    state = load_file(src)
    if edit is not None:
        edit(state)
    save_file(state, dst)
    return dst


# -- inputs ---------------------------------------------------------------------------------------------------

X = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
T = torch.tensor([10.0, 700.0])
CTX = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
IMAGES = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
LATENTS = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
IDS = torch.tensor([[49406, 320, 1125, 539, 49407, 49407]])


@torch.no_grad()
def diffusers_outputs(unet, vae, text):
    last = text(IDS).last_hidden_state
    return unet(X, T, CTX).sample, vae.encode(IMAGES).latent_dist.mean, vae.decode(LATENTS).sample, last


@torch.no_grad()
def our_outputs(ckpt):
    return (
        ckpt.unet(X, T, CTX),
        ckpt.vae.encode(IMAGES).mean,
        ckpt.vae.decode(LATENTS),
        ckpt.text_encoder(IDS).last_hidden_state,
    )


def max_diffs(a, b):
    return [(x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True)]


# -- single files -----------------------------------------------------------------------------------------------


def ldm_config() -> dict:
    """The original LDM yaml (v1-inference.yaml) of the tiny models, as diffusers' converter reads it."""
    unet = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "channel_mult": [1, 2],
            "attention_resolutions": [1], "num_res_blocks": 1, "context_dim": 32, "num_heads": 8,
            "transformer_depth": 1}  # fmt: skip
    ddconfig = {"in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 4}
    params = {"unet_config": {"params": unet}, "first_stage_config": {"params": {"ddconfig": ddconfig}}}
    return {"model": {"params": params}}


def test_single_file_matches_source_models_and_diffusers_converter(models, sd_file, tmp_path):
    plain = strip_metadata(sd_file, tmp_path / "plain.safetensors")  # configs must now come from the shapes
    ckpt = load_checkpoint(plain, device="cpu")
    assert ckpt.family == "sd1"
    assert ckpt.unet_config == UNET
    assert ckpt.vae_config == VAE_CFG
    assert ckpt.text_encoder_config == TEXT
    assert isinstance(ckpt.unet, UNet) and isinstance(ckpt.vae, VAE) and isinstance(ckpt.text_encoder, CLIPTextEncoder)
    assert not ckpt.unet.training and ckpt.dtype == torch.float32

    # diffusers' own converter, on the same file, into fresh diffusers models.
    state = load_file(plain)
    config = ref.create_unet_diffusers_config_from_ldm(ldm_config(), state)
    ref_unet = UNet2DConditionModel(**config).eval()
    ref_unet.load_state_dict(ref.convert_ldm_unet_checkpoint(state, config), strict=True)
    vae_config = ref.create_vae_diffusers_config_from_ldm(ldm_config(), state)
    ref_vae = AutoencoderKL(**vae_config).eval()
    ref_vae.load_state_dict(ref.convert_ldm_vae_checkpoint(state, vae_config), strict=True)
    ref_text = CLIPTextModel(models[2].config).eval()
    clip_state = ref.convert_ldm_clip_checkpoint(state)  # text_model.* names; transformers 5 drops that level
    ref_text.load_state_dict({k.removeprefix("text_model."): v for k, v in clip_state.items()}, strict=True)

    source = diffusers_outputs(*models)
    converted = diffusers_outputs(ref_unet, ref_vae, ref_text)
    ours = our_outputs(ckpt)
    # unet, vae encode, vae decode, text encoder
    assert max(max_diffs(converted, source)) <= TOL
    assert max(max_diffs(ours, source)) <= TOL
    assert max(max_diffs(ours, converted)) <= TOL
    assert max(max_diffs(our_outputs(load_checkpoint(sd_file, device="cpu")), source)) <= TOL  # with metadata


def test_metadata_round_trip_with_our_modules(tmp_path):
    """Our own modules with configs the shapes cannot reveal (2 heads, 8 GroupNorm groups) reload exactly, here
    with the embedded model's particulars: a text projection, attention at the lowest level, context width 1024
    (which in a file without our metadata would mean SD 2.x)."""
    unet_config = dataclasses.replace(UNetConfig.tiny(), cross_attention_levels=(False, True), context_dim=1024)
    text_config = dataclasses.replace(
        TextEncoderConfig.tiny(), width=1024, mlp_width=64, projection_dim=16, vocab_size=1000
    )
    unet, vae, text = UNet(unet_config), VAE(VAEConfig.tiny()), CLIPTextEncoder(text_config)
    path = save_checkpoint(tmp_path / "ours.safetensors", unet, vae, text, metadata={"note": "hello"})
    assert sorted(os.listdir(tmp_path)) == ["ours.safetensors"]  # no temporary file left behind
    ckpt = load_checkpoint(path, device="cpu")
    assert (ckpt.unet_config, ckpt.vae_config, ckpt.text_encoder_config) == (unet.config, vae.config, text.config)
    for mine, loaded in ((unet, ckpt.unet), (vae, ckpt.vae), (text, ckpt.text_encoder)):
        a, b = mine.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ckpt.tokenizer("a cat")[:1] == [49406]


def test_save_refuses_mismatched_modules_and_leaves_no_file(tmp_path, models):
    unet, vae, _ = models
    with pytest.raises(TypeError, match="got a UNet where a text model belongs"):
        save_checkpoint(tmp_path / "bad.safetensors", unet, vae, UNet(UNetConfig.tiny()))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_files_load_and_convert(models, tmp_path, dtype):
    half = [m.to(dtype) for m in make_diffusers_models()]
    path = save_checkpoint(tmp_path / "half.safetensors", *half)
    stored = load_file(path)
    assert {t.dtype for t in stored.values()} == {dtype}
    as_fp32 = load_checkpoint(path, device="cpu")  # CPU default: fp32
    assert as_fp32.dtype == torch.float32
    assert {p.dtype for p in as_fp32.unet.parameters()} == {torch.float32}
    ours = keymap.unet_to_sd(as_fp32.unet.state_dict(), UNET)
    assert all(torch.equal(ours[k], stored[keymap.UNET_PREFIX + k].float()) for k in ours)  # exact upcast
    as_half = load_checkpoint(path, device="cpu", dtype=dtype)
    assert {p.dtype for p in as_half.vae.parameters()} == {dtype}
    assert as_half.vae.decode(LATENTS.to(dtype)).dtype == dtype


def test_standalone_vae_replaces_the_checkpoint_vae(sd_file, tmp_path):
    other = make_diffusers_models(seed=5)[1]
    sd_names = keymap.vae_to_sd(other.state_dict(), VAE_CFG)  # encoder.*/decoder.*, as vae-ft-mse-840000 has
    layouts = {
        "sd.safetensors": sd_names,
        "prefixed.safetensors": {keymap.VAE_PREFIX + k: v for k, v in sd_names.items()},
        "diffusers.safetensors": other.state_dict(),
        "full-checkpoint.safetensors": load_file(save_checkpoint(tmp_path / "donor.safetensors", *models_with(other))),
        # A VAE training checkpoint: the LPIPS/GAN loss weights ride along and are left out.
        "with-loss.ckpt": {
            **sd_names,
            "loss.discriminator.main.0.weight": torch.zeros(2),
            "loss.logvar": torch.zeros(()),
        },
    }
    with torch.no_grad():
        expected = other.decode(LATENTS).sample
    for name, state in layouts.items():
        state = {k: v.contiguous() for k, v in state.items()}
        if name.endswith(".ckpt"):
            torch.save({"state_dict": state}, tmp_path / name)
        else:
            save_file(state, tmp_path / name)
        ckpt = load_checkpoint(sd_file, device="cpu", vae_path=tmp_path / name)
        assert ckpt.vae_config == VAE_CFG
        with torch.no_grad():
            assert (ckpt.vae.decode(LATENTS) - expected).abs().max().item() <= TOL, name
        assert isinstance(load_vae(tmp_path / name, device="cpu"), VAE)


def models_with(vae):
    unet, _, text = make_diffusers_models(seed=6)
    return unet, vae, text


def test_a_vae_path_must_hold_a_vae(sd_file, tmp_path):
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2)}, tmp_path / "lora.safetensors")
    with pytest.raises(
        CheckpointError, match=r"^lora\.safetensors is not a VAE: it looks like a LoRA \(found lora_unet_x"
    ):
        load_checkpoint(sd_file, device="cpu", vae_path=tmp_path / "lora.safetensors")


def test_v_prediction_from_sibling_yaml(sd_file, tmp_path):
    plain = strip_metadata(sd_file, tmp_path / "vmodel.safetensors")
    assert load_checkpoint(plain, device="cpu").unet_config.prediction == "eps"
    (tmp_path / "vmodel.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert load_checkpoint(plain, device="cpu").unet_config.prediction == "v"


def test_inpainting_checkpoint_loads_with_nine_channels(sd_file, tmp_path):
    def widen(state):
        w = state[keymap.UNET_PREFIX + "input_blocks.0.0.weight"]
        state[keymap.UNET_PREFIX + "input_blocks.0.0.weight"] = torch.cat([w, torch.randn(32, 5, 3, 3)], dim=1)

    path = strip_metadata(sd_file, tmp_path / "inpaint.safetensors", widen)
    ckpt = load_checkpoint(path, device="cpu")
    assert ckpt.family == "sd1-inpaint" and ckpt.unet_config.in_channels == 9
    assert ckpt.unet(torch.zeros(1, 9, 8, 8), T[:1], CTX[:1]).shape == (1, 4, 8, 8)


# -- diffusers folders ------------------------------------------------------------------------------------------


def write_diffusers_folder(root: Path, models, variant: str | None = None, prediction: str = "epsilon") -> Path:
    unet, vae, text = models
    unet.save_pretrained(root / "unet", variant=variant)
    vae.save_pretrained(root / "vae", variant=variant)
    text.save_pretrained(root / "text_encoder")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def test_diffusers_folder(models, tmp_path):
    folder = write_diffusers_folder(tmp_path / "sd", models, prediction="v_prediction")
    ckpt = load_checkpoint(folder, device="cpu")
    assert ckpt.unet_config == dataclasses.replace(UNET, prediction="v")
    assert ckpt.vae_config == VAE_CFG and ckpt.text_encoder_config == TEXT and ckpt.family == "sd1"
    assert max(max_diffs(our_outputs(ckpt), diffusers_outputs(*models))) <= TOL


def test_diffusers_folder_fp16_variant(tmp_path):
    half = [m.half() for m in make_diffusers_models(seed=3)]
    folder = write_diffusers_folder(tmp_path / "sd16", half, variant="fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    ckpt = load_checkpoint(folder, device="cpu", dtype="fp16")
    a, b = ckpt.unet.state_dict(), half[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


# -- errors: one sentence naming the file -----------------------------------------------------------------------


def test_missing_file_and_folder_without_index(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty is a folder without model_index\.json"):
        load_checkpoint(tmp_path / "empty", device="cpu")


def test_damaged_files(sd_file, tmp_path):
    data = sd_file.read_bytes()
    cases = {
        "truncated.safetensors": (data[: len(data) // 2], "truncated or corrupt"),
        "short.safetensors": (data[:5], "not a safetensors file"),
        "huge_header.safetensors": ((10**9).to_bytes(8, "little") + b"{}", "header claims 1000000000 bytes"),
        "bad_json.safetensors": ((6).to_bytes(8, "little") + b"{oops}", "not valid JSON"),
        "picture.safetensors": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "is a PNG image, not a model file"),
        "model.onnx": (data, "extension .onnx"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as error:
            load_checkpoint(tmp_path / name, device="cpu")
        assert str(error.value).startswith(name), str(error.value)


def test_missing_and_misshaped_weights(sd_file, tmp_path):
    def drop(state):
        for k in [k for k in state if "input_blocks.1.1.transformer_blocks.0.ff" in k]:
            del state[k]

    path = strip_metadata(sd_file, tmp_path / "holes.safetensors", drop)
    with pytest.raises(CheckpointError, match=r"holes\.safetensors: the UNet is missing 4 weight\(s\): down_blocks"):
        load_checkpoint(path, device="cpu")

    def reshape(state):
        key = keymap.UNET_PREFIX + "out.2.bias"
        state[key] = torch.zeros(7)

    path = strip_metadata(sd_file, tmp_path / "shapes.safetensors", reshape)
    with pytest.raises(CheckpointError, match=r"shapes\.safetensors: the UNet has 1 weight\(s\) of the wrong shape"):
        load_checkpoint(path, device="cpu")


def test_checkpoint_without_vae_needs_one(sd_file, tmp_path):
    def drop_vae(state):
        for k in [k for k in state if k.startswith(keymap.VAE_PREFIX)]:
            del state[k]

    path = strip_metadata(sd_file, tmp_path / "novae.safetensors", drop_vae)
    with pytest.raises(CheckpointError, match=r"novae\.safetensors has no VAE"):
        load_checkpoint(path, device="cpu")


# SD 2.x and SDXL are read (tests/models/test_single_file_families.py): a file of theirs that lacks its weights is
# refused as incomplete (test_an_incomplete_family_file_names_the_missing_weight).
INCOMPLETE = {
    "sdxl": {"conditioner.embedders.0.transformer.text_model.final_layer_norm.bias": (768,),
             "model.diffusion_model.label_emb.0.0.weight": (1280, 2816)},
    "sd2": {"cond_stage_model.model.ln_final.bias": (1024,), "model.diffusion_model.out.2.bias": (4,)},
}  # fmt: skip
UNSUPPORTED = {
    "sd3": ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (4, 4)}, "a Stable Diffusion 3"),
    "flux": ({"double_blocks.0.img_attn.qkv.weight": (4, 4)}, "a Flux checkpoint"),
    "lora": ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 4)}, "a LoRA"),
    "embedding": ({"emb_params": (2, 768)}, "a textual-inversion embedding"),
    "vae": ({"encoder.conv_in.weight": (4, 3, 3, 3), "decoder.conv_in.weight": (4, 4, 3, 3)}, "a standalone VAE"),
    "unet": ({"model.diffusion_model.out.2.bias": (4,), "first_stage_model.encoder.conv_in.bias": (4,)},
             "a UNet without its CLIP text encoder (found model.diffusion_model.* but no cond_stage_model"),
    "unknown": ({"weird.tensor": (1,)}, "an unknown kind of model"),
}  # fmt: skip


@pytest.mark.parametrize("family", list(UNSUPPORTED))
def test_unsupported_families_get_one_sentence(family, tmp_path):
    shapes, message = UNSUPPORTED[family]
    assert detect_family(shapes)[0] == family
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, path)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"model.safetensors looks like {message}")) as error:
        load_checkpoint(path, device="cpu")
    assert str(error.value).count(". ") == 0  # one sentence


@pytest.mark.parametrize("family", list(INCOMPLETE))
def test_an_incomplete_family_file_names_the_missing_weight(family, tmp_path):
    shapes = INCOMPLETE[family]
    assert detect_family(shapes)[0] == family
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, path)
    incomplete = r"^model\.safetensors: .* is missing the weight .*; the file is incomplete"
    with pytest.raises(CheckpointError, match=incomplete):
        load_checkpoint(path, device="cpu")


def test_sd2_by_context_width():
    shapes = {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.transformer.text_model.final_layer_norm.bias": (1024,),
    }
    assert detect_family(shapes) == ("sd2", "cross-attention context width 1024")


def test_corrupt_metadata_config(sd_file, tmp_path):
    state = load_file(sd_file)
    save_file(state, tmp_path / "meta.safetensors", metadata={META_UNET: "{not json"})
    with pytest.raises(CheckpointError, match=r"meta\.safetensors has an unreadable atelier\.unet_config"):
        load_checkpoint(tmp_path / "meta.safetensors", device="cpu")


# -- pickles ----------------------------------------------------------------------------------------------------


def test_weights_only_pickle_loads(models, sd_file, tmp_path):
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(sd_file), "global_step": 470000}, path)
    ckpt = load_checkpoint(path, device="cpu")
    assert max(max_diffs(our_outputs(ckpt)[:3], diffusers_outputs(*models)[:3])) <= TOL


class Exploit:
    """A pickle payload: unpickling it with plain pickle would create a file."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"^evil\.ckpt needs to run code from the pickle"):
        load_checkpoint(path, device="cpu")
    assert not marker.exists()


# -- describe_model (atelier info) ------------------------------------------------------------------------------


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_describe_single_file(models, sd_file, tmp_path):
    unet, vae, text = models

    def add_ema(state):
        state["model_ema.decay"] = torch.tensor(0.9999)

    plain = strip_metadata(sd_file, tmp_path / "described.safetensors", add_ema)
    lines = describe_model(plain).splitlines()
    assert lines[0] == "described.safetensors"
    assert lines[1] == "  kind          Stable Diffusion 1.x checkpoint (sd1), predicts noise (eps)"
    n = len(load_file(plain))
    assert lines[2] == f"  file          {plain.stat().st_size / 1e6:.2f} MB, safetensors, {n} tensors: {n} float32"
    assert lines[3] == f"  unet          {count(unet) / 1e6:.2f} M parameters in {len(unet.state_dict())} tensors"
    assert lines[4] == f"  vae           {count(vae) / 1e6:.2f} M parameters in {len(vae.state_dict())} tensors"
    assert lines[5] == f"  text encoder  {count(text) / 1e6:.2f} M parameters in {len(text.state_dict())} tensors"
    assert lines[6] == "  other         1 tensor not used, 1 of them EMA copies (model_ema.*) (e.g. model_ema.decay)"
    assert lines[7].startswith("  configs       from the tensor shapes")
    assert lines[8] == f"    unet          {UNET}"


def test_describe_unsupported_and_folder(models, tmp_path):
    save_file({"conditioner.embedders.0.x": torch.zeros(2, dtype=torch.float16)}, tmp_path / "xl.safetensors")
    assert describe_model(tmp_path / "xl.safetensors").splitlines()[1:] == [
        "  kind          SDXL checkpoint (found conditioner.embedders.*)",
        f"  file          {(tmp_path / 'xl.safetensors').stat().st_size} B, safetensors, 1 tensor: 1 float16",
        "  note          xl.safetensors has no UNet weights (model.diffusion_model.input_blocks.0.0.weight); the "
        "file is incomplete.",
    ]
    folder = write_diffusers_folder(tmp_path / "sdfolder", models)
    text = describe_model(folder)
    assert text.splitlines()[1] == "  kind          Stable Diffusion 1.x checkpoint (sd1), predicts noise (eps)"
    assert f"{count(models[0]) / 1e6:.2f} M parameters in" in text
    assert "(unet/diffusion_pytorch_model.safetensors, " in text and "configs       from the config.json files" in text
    with pytest.raises(CheckpointError, match="does not exist"):
        describe_model(tmp_path / "gone.safetensors")


# -- full size (run on purpose: pytest -m slow) -----------------------------------------------------------------


@pytest.mark.slow
def test_full_size_sd15_layout_round_trip(tmp_path):
    """SD1.5-sized random models -> fp16 single file (1130 tensors, ~2.1 GB) -> Atelier (fp32) -> same outputs."""
    import time

    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64).eval()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    ).eval()
    for model in (unet, vae, text):  # fp16-representable weights, so the fp16 file holds them exactly
        model.half().float()
    path = save_checkpoint(tmp_path / "sd15.safetensors", *[m.half() for m in (unet, vae, text)])
    for model in (unet, vae, text):
        model.float()
    plain = strip_metadata(path, tmp_path / "plain.safetensors")  # configs from the shapes, as for a real file
    path.unlink()
    assert len(load_file(plain)) == 686 + 248 + 196

    start = time.perf_counter()
    ckpt = load_checkpoint(plain, device="cpu")
    seconds = time.perf_counter() - start
    assert ckpt.unet_config == UNetConfig() and ckpt.vae_config == VAEConfig()
    assert ckpt.text_encoder_config == TextEncoderConfig()
    x, ctx = torch.randn(1, 4, 32, 32), torch.randn(1, 77, 768)
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])
    with torch.no_grad():
        diffs = [
            (ckpt.unet(x, T[:1], ctx) - unet(x, T[:1], ctx).sample).abs().max().item(),
            (ckpt.vae.decode(LATENTS) - vae.decode(LATENTS).sample).abs().max().item(),
            (ckpt.text_encoder(ids).last_hidden_state - text(ids).last_hidden_state).abs().max().item(),
        ]
    print(f"\nfull-size load: {seconds:.1f} s from {plain.stat().st_size / 1e9:.2f} GB; max abs diffs {diffs}")
    assert max(diffs) <= 1e-4


def test_diffusers_folder_problems(models, tmp_path):
    folder = write_diffusers_folder(tmp_path / "sd2ish", models)
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 1024}))
    with pytest.raises(CheckpointError, match=r"^sd2ish looks like a Stable Diffusion 2\.x checkpoint \(found cross_"):
        load_checkpoint(folder, device="cpu")
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"^sd2ish/vae has no weights file"):
        load_checkpoint(folder, device="cpu")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    with pytest.raises(CheckpointError, match=r"^sd2ish is a StableDiffusion3Pipeline folder"):
        load_checkpoint(folder, device="cpu")
