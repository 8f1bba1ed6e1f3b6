"""SDXL LoRAs: the UNet in kohya's LDM spelling (`lora_unet_input_blocks_4_1_...`) and in diffusers/PEFT's
(`unet.down_blocks.1...`), CLIP-L as `lora_te1_` / `text_encoder.` and bigG as `lora_te2_` / `text_encoder_2.`.

Parity: the same random LoRA loaded by diffusers (StableDiffusionXLLoraLoaderMixin: `lora_state_dict` with the
UNet config, which maps the LDM block numbers itself, then `load_lora_into_unet` / `load_lora_into_text_encoder`
through PEFT) gives the same UNet and tower outputs as ours patched in place, on tiny random SDXL weights. At the
real SDXL size, every kohya name of an attention layer means the module diffusers' converter says it means.
"""

from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import save_file

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.clip import SDXLTextEncoder
from atelier.models.config import TextEncoderConfig, UNetConfig
from atelier.models.lora import WeightPatch, _weight_shapes, load_lora, patched, split_key, text_configs
from atelier.models.unet import UNet, sdxl_vector
from tests.models.test_clip_families import TINY_G, TINY_L, pair, prompt_ids
from tests.models.test_unet_families import TINY_SDXL, reference_unet, size_numbers

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

RANK = 4
UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")  # fmt: skip
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
TOWERS = {"clip_l": TINY_L, "clip_g": TINY_G}


@functools.cache
def models():
    """Ours (UNet, SDXLTextEncoder) and the references (diffusers' UNet, transformers' CLIP-L and bigG with
    projection), sharing random weights."""
    torch.manual_seed(0)
    ref_unet = reference_unet(TINY_SDXL)
    unet = UNet(TINY_SDXL).eval()
    unet.load_state_dict({k: v.clone() for k, v in ref_unet.state_dict().items()}, strict=True)
    (ref_l, ours_l), (ref_g, ours_g) = pair(TINY_L, seed=1), pair(TINY_G, seed=2)
    text = SDXLTextEncoder(TINY_L, TINY_G).eval()
    state = {f"clip_l.{k}": v for k, v in ours_l.state_dict().items()}
    state.update({f"clip_g.{k}": v for k, v in ours_g.state_dict().items()})
    text.load_state_dict(state, strict=True)
    return unet, ref_unet, text, ref_l, ref_g


def random_lora(seed: int, unet=None, text=None) -> dict[str, dict[str, torch.Tensor]]:
    """{our module name: {"up", "down", "alpha"}} for `unet` and `text` (default: this file's `models()`); text
    modules start with their tower (clip_l., clip_g.)."""
    if unet is None:
        unet, _, text, _, _ = models()
    g = torch.Generator().manual_seed(seed)
    modules = {
        k.removesuffix(".weight"): tuple(v.shape)
        for state, targets in ((unet.state_dict(), UNET_TARGETS), (text.state_dict(), TEXT_TARGETS))
        for k, v in state.items()
        if k.endswith(".weight") and v.ndim == 2 and k.removesuffix(".weight").endswith(targets)
    }
    return {
        module: {
            "up": torch.randn(rows, RANK, generator=g) * 0.2,
            "down": torch.randn(RANK, cols, generator=g) * 0.2,
            "alpha": torch.tensor(float(RANK) / 2),  # scale alpha / rank = 0.5
        }
        for module, (rows, cols) in modules.items()
    }


def kohya_name(module: str) -> str:
    """kohya's sd-scripts SDXL spelling: the UNet in the original LDM names, te1 = CLIP-L, te2 = bigG."""
    for tower, prefix in (("clip_l.", "lora_te1_"), ("clip_g.", "lora_te2_")):
        if module.startswith(tower):
            return prefix + module.removeprefix(tower).replace(".", "_")
    [ldm] = keymap.unet_to_sd({module + ".weight": None}, TINY_SDXL)
    return "lora_unet_" + ldm.removesuffix(".weight").replace(".", "_")


def kohya_file(path, lora) -> None:
    tensors = {}
    for module, parts in lora.items():
        name = kohya_name(module)
        tensors.update({f"{name}.lora_up.weight": parts["up"], f"{name}.lora_down.weight": parts["down"],
                        f"{name}.alpha": parts["alpha"]})  # fmt: skip
    save_file(tensors, str(path))


def peft_file(path, lora) -> None:
    """diffusers' SDXL save_lora_weights layout: unet. / text_encoder. / text_encoder_2., lora_A/B, no alpha."""
    prefixes = {"clip_l.": "text_encoder.", "clip_g.": "text_encoder_2."}
    tensors = {}
    for module, parts in lora.items():
        tower = next((t for t in prefixes if module.startswith(t)), None)
        name = prefixes[tower] + module.removeprefix(tower) if tower else f"unet.{module}"
        tensors[f"{name}.lora_B.weight"] = parts["up"] * 0.5
        tensors[f"{name}.lora_A.weight"] = parts["down"]
    save_file(tensors, str(path))


def diffusers_with_lora(path):
    """Fresh copies of the three reference networks with the file loaded through diffusers' SDXL loader + PEFT."""
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin as Mixin

    _, ref_unet, _, ref_l, ref_g = models()
    unet = reference_unet(TINY_SDXL)
    unet.load_state_dict(ref_unet.state_dict())
    clip_l, clip_g = pair(TINY_L, seed=1)[0], pair(TINY_G, seed=2)[0]
    clip_l.load_state_dict(ref_l.state_dict())
    clip_g.load_state_dict(ref_g.state_dict())
    state, alphas = Mixin.lora_state_dict(str(path), unet_config=unet.config)
    Mixin.load_lora_into_unet(state, alphas, unet=unet, adapter_name="test")
    Mixin.load_lora_into_text_encoder(state, alphas, text_encoder=clip_l, prefix="text_encoder", adapter_name="test")
    Mixin.load_lora_into_text_encoder(state, alphas, text_encoder=clip_g, prefix="text_encoder_2",
                                      adapter_name="test")  # fmt: skip
    return unet.eval(), clip_l.eval(), clip_g.eval()


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("layout", ["kohya", "peft"])
@torch.no_grad()
def test_outputs_equal_diffusers_sdxl_lora_loader(tmp_path, layout):
    unet, _, text, _, _ = models()
    path = tmp_path / f"{layout}.safetensors"
    (kohya_file if layout == "kohya" else peft_file)(path, random_lora(1))
    lora = load_lora(path, TINY_SDXL, text_configs(text))
    assert lora.unmatched == ()
    transformers = 2 * 2 + 1 + 3 * 2  # blocks: down levels 1, 2 (2 each) + mid + up levels 0, 1 (3 each)
    blocks = 2 * 2 + 2 * 3 + 3 + 3 * 3 + 3 * 2  # depth 2 at level 1, 3 at level 2 and in the middle
    assert len(lora.unet) == transformers * 2 + blocks * 10  # proj_in/out, and 10 projections per block
    assert len(lora.text_encoder) == (TINY_L.layers + TINY_G.layers) * len(TEXT_TARGETS)
    ref_unet, ref_l, ref_g = diffusers_with_lora(path)

    # The UNet, with SDXL's vector y (pooled + size numbers).
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10.0, 500.0])
    context, pooled, numbers = torch.randn(2, 7, 40, generator=g), torch.randn(2, 16, generator=g), size_numbers(
        TINY_SDXL, 2)  # fmt: skip
    y = sdxl_vector(pooled, numbers, TINY_SDXL.size_embed_dim)
    added = {"text_embeds": pooled, "time_ids": numbers}
    expected = ref_unet(x, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
    base = unet(x, t, context, y)
    with patched(unet, [WeightPatch(lora.unet, 1.0, lora.name)]):
        got = unet(x, t, context, y)
    assert max_abs(got, expected) < 1e-4 * expected.abs().max().item()
    assert max_abs(base, expected) > 1e-2 * expected.abs().max().item()  # the LoRA changes the output

    # Each tower: its last hidden state, and bigG's projected pooled vector.
    ids = prompt_ids(pad=0)
    with patched(text, [WeightPatch(lora.text_encoder, 1.0, lora.name)]):
        got_l, got_g = text.clip_l(ids), text.clip_g(ids)
    want_l, want_g = ref_l(ids), ref_g(ids)
    assert max_abs(got_l.last_hidden_state, want_l.last_hidden_state) < 1e-4
    assert max_abs(got_g.last_hidden_state, want_g.last_hidden_state) < 1e-4
    assert max_abs(got_g.projected, want_g.text_embeds) < 1e-4
    assert max_abs(text.clip_l(ids).last_hidden_state, want_l.last_hidden_state) > 1e-2
    assert max_abs(text.clip_g(ids).last_hidden_state, want_g.last_hidden_state) > 1e-2


def test_merged_weights_equal_the_formula_and_are_restored(tmp_path):
    """W + strength * (alpha / r) * up @ down, computed by hand, for a layer in each place SDXL's names differ
    from SD1.x's: the deepest down transformer, the middle block's last one, an up block, and each tower."""
    unet, _, text, _, _ = models()
    parts = random_lora(2)
    kohya_file(tmp_path / "k.safetensors", parts)
    lora = load_lora(tmp_path / "k.safetensors", TINY_SDXL, text_configs(text))
    assert kohya_name("mid_block.attentions.0.transformer_blocks.2.attn2.to_k") == (
        "lora_unet_middle_block_1_transformer_blocks_2_attn2_to_k"
    )
    layers = {
        unet: ["down_blocks.2.attentions.1.transformer_blocks.2.attn1.to_q",  # input_blocks.8.1
               "mid_block.attentions.0.transformer_blocks.2.attn2.to_k",  # middle_block.1
               "up_blocks.1.attentions.2.proj_out"],  # output_blocks.5.1
        text: ["clip_l.text_model.encoder.layers.2.mlp.fc1", "clip_g.text_model.encoder.layers.0.self_attn.out_proj"],
    }  # fmt: skip
    before = {m: {k: v.clone() for k, v in m.state_dict().items()} for m in layers}
    for module, names in layers.items():
        adapters = lora.unet if module is unet else lora.text_encoder
        with patched(module, [WeightPatch(adapters, 0.8, lora.name)]):
            for name in names:
                p = parts[name]
                merged = before[module][name + ".weight"] + 0.8 * 0.5 * p["up"] @ p["down"]
                torch.testing.assert_close(module.get_parameter(name + ".weight"), merged, rtol=0, atol=1e-6)
        assert all(torch.equal(v, before[module][k]) for k, v in module.state_dict().items())


def test_at_sdxl_size_every_kohya_name_means_what_diffusers_converter_says():
    """Every kohya name (LDM path) of an SDXL base attention, MLP or projection layer, and every te1 / te2 name,
    mapped by us and by diffusers' own converter (its SGM block remapping, then its kohya renaming): the same
    module each time. Shapes only, no weights are made."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )

    unet_cfg = UNetConfig.sdxl()
    towers = {"clip_l": TextEncoderConfig(), "clip_g": TextEncoderConfig.open_clip_bigg()}
    text_shapes = {f"{t}.{k}": v for t, c in towers.items() for k, v in _weight_shapes(c).items()}
    names = keymap.lora_module_names(_weight_shapes(unet_cfg), unet_cfg, text_shapes)
    ldm = ("lora_unet_input_blocks", "lora_unet_middle_block", "lora_unet_output_blocks")
    layers = ("attn", "proj_in", "proj_out", "ff_net", "mlp")
    kohya = [n for n in names if (n.startswith(ldm) or n.startswith(("lora_te1_", "lora_te2_")))
             and any(part in n for part in layers)]  # fmt: skip
    # 70 transformer blocks (2 x 2 + 2 x 10 down, 10 mid, 3 x 2 + 3 x 10 up), 10 projections each, 2 per
    # transformer (11 transformers); CLIP-L's 12 layers and bigG's 32, 6 layers each.
    assert len(kohya) == 70 * 10 + 11 * 2 + (12 + 32) * 6
    state = {}
    for n in kohya:
        state.update({f"{n}.lora_down.weight": torch.zeros(1, 1), f"{n}.lora_up.weight": torch.zeros(1, 1)})
    config = type("Config", (), {"layers_per_block": unet_cfg.layers_per_block})()  # all diffusers reads of it
    converted, _ = _convert_non_diffusers_lora_to_diffusers(_maybe_map_sgm_blocks_to_diffusers(state, config))
    theirs = {split_key(k)[0] for k in converted}
    prefixes = {"clip_l.": "text_encoder.", "clip_g.": "text_encoder_2."}
    ours = set()
    for _, module in (names[n] for n in kohya):
        tower = next((t for t in prefixes if module.startswith(t)), None)
        ours.add(prefixes[tower] + module.removeprefix(tower) if tower else f"unet.{module}")
    assert theirs == ours
    assert names["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"] == (
        "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")  # fmt: skip
    assert names["lora_unet_output_blocks_2_1_transformer_blocks_9_ff_net_2"] == (
        "unet", "up_blocks.0.attentions.2.transformer_blocks.9.ff.net.2")  # fmt: skip


Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(64, 2),
          "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 32)},
         "is a LoRA for SD1.x or SD 2.x \\(it names lora_te_text_model"),
        ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 32)}, "this model is SDXL"),
        ({"lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(32, 2)}, "this model is SDXL"),
        (  # an SD1.x layer SDXL also has, but 768 wide where SDXL's context is 2048 (here 40)
            {f"unet.{Q}.lora_B.weight": torch.zeros(64, 2), f"unet.{Q}.lora_A.weight": torch.zeros(2, 24)},
            "does not fit this model.*another model family \\(SD1.x, SD2\\?\\)",
        ),
        ({"lora_unet_foo_bar.lora_up.weight": torch.zeros(4, 2)}, "names no layer of this SDXL model"),
    ],
)  # fmt: skip
def test_files_for_other_families_are_refused_on_sdxl_in_one_sentence(tmp_path, tensors, message):
    save_file(tensors, str(tmp_path / "sd15_style.safetensors"))
    with pytest.raises(CheckpointError, match=message) as error:
        load_lora(tmp_path / "sd15_style.safetensors", TINY_SDXL, {"clip_l": TINY_L, "clip_g": TINY_G})
    assert "\n" not in str(error.value) and str(error.value).startswith("sd15_style.safetensors")


def test_an_sdxl_lora_on_an_sd1_model_is_still_refused(tmp_path):
    kohya_file(tmp_path / "xl.safetensors", dict(list(random_lora(3).items())[-2:]))  # two bigG layers
    with pytest.raises(CheckpointError, match=r"is a LoRA for SDXL .*; this model is SD1.x"):
        load_lora(tmp_path / "xl.safetensors", UNetConfig.tiny(), TextEncoderConfig.tiny())


@pytest.mark.parametrize(("width", "family"), [(768, "Stable Diffusion 1.x"), (1024, "Stable Diffusion 2.x"),
                                               (2048, "SDXL"), (1280, "the SDXL refiner")])  # fmt: skip
def test_a_loras_family_is_read_from_its_cross_attention_width(width, family):
    from atelier.models.lora import lora_family

    key = "lora_unet_output_blocks_1_1_transformer_blocks_0_attn2_to_k.lora_down.weight"
    assert lora_family({key: (8, width), key.replace("down", "up"): (640, 8)}) == family
    peft = "unet.up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.lora_A.weight"
    assert lora_family({peft: (8, width)}) == family


def test_info_describes_an_sdxl_lora_as_sdxl_with_two_text_encoders(tmp_path):
    from atelier.models.info import describe_model

    kohya_file(tmp_path / "xl.safetensors", random_lora(3))
    shown = describe_model(tmp_path / "xl.safetensors")
    assert "a LoRA for SDXL:" in shown and "not loadable" not in shown
    assert "in the text encoders" in shown
