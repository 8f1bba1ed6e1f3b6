"""LoRA files in the layouts people share (kohya, diffusers/PEFT, LyCORIS), made here with random weights.

Parity: the same random LoRA loaded by diffusers (`lora_state_dict` + `load_lora_into_unet` /
`load_lora_into_text_encoder`, through PEFT) gives the same UNet and text-encoder outputs as ours patched in place.
LoCon, LoHa, LoKr, DoRA and full diffs are checked against the merged weight computed by hand from their formulas.
Patching is undone bit for bit.
"""

from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig, UNetConfig
from atelier.models.lora import WeightPatch, load_lora, patched
from atelier.models.unet import UNet
from tests.models.test_clip import file_state_dict, reference_config
from tests.models.test_unet import reference_unet

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")

UNET_CFG = UNetConfig.tiny()
TEXT_CFG = TextEncoderConfig.tiny()
RANK = 4
UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")  # fmt: skip
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


@functools.cache
def models() -> tuple[UNet, torch.nn.Module, CLIPTextEncoder, CLIPTextModel]:
    torch.manual_seed(0)
    ref_unet = reference_unet(UNET_CFG)
    unet = UNet(UNET_CFG).eval()
    unet.load_state_dict({k: v.clone() for k, v in ref_unet.state_dict().items()}, strict=True)
    ref_text = CLIPTextModel(reference_config(TEXT_CFG)).eval()
    text = CLIPTextEncoder(TEXT_CFG).eval()
    text.load_state_dict({k: v.clone() for k, v in file_state_dict(ref_text).items()}, strict=True)
    return unet, ref_unet, text, ref_text


def linear_modules(state: dict[str, torch.Tensor], targets: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Our module name -> (out, in) of every 2-D weight whose module ends with one of `targets`."""
    return {
        k.removesuffix(".weight"): tuple(v.shape)
        for k, v in state.items()
        if k.endswith(".weight") and v.ndim == 2 and k.removesuffix(".weight").endswith(targets)
    }


def random_lora(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """{our module name: {"up", "down", "alpha"}} for the attention and MLP layers of both networks."""
    unet, _, text, _ = models()
    g = torch.Generator().manual_seed(seed)
    out = {}
    modules = {**linear_modules(unet.state_dict(), UNET_TARGETS), **linear_modules(text.state_dict(), TEXT_TARGETS)}
    for module, (rows, cols) in modules.items():
        out[module] = {
            "up": torch.randn(rows, RANK, generator=g) * 0.2,
            "down": torch.randn(RANK, cols, generator=g) * 0.2,
            "alpha": torch.tensor(float(RANK) / 2),  # scale alpha / rank = 0.5
        }
    return out


def kohya_file(path, lora) -> None:
    tensors = {}
    for module, parts in lora.items():
        prefix = "lora_te_" if module.startswith("text_model.") else "lora_unet_"
        name = prefix + module.replace(".", "_")
        tensors[f"{name}.lora_up.weight"] = parts["up"]
        tensors[f"{name}.lora_down.weight"] = parts["down"]
        tensors[f"{name}.alpha"] = parts["alpha"]
    save_file(tensors, str(path))


def peft_file(path, lora) -> None:
    """diffusers' save_lora_weights layout: unet./text_encoder. prefixes, lora_A/lora_B, no alpha (scale 1)."""
    tensors = {}
    for module, parts in lora.items():
        prefix = "text_encoder." if module.startswith("text_model.") else "unet."
        tensors[f"{prefix}{module}.lora_B.weight"] = parts["up"] * 0.5
        tensors[f"{prefix}{module}.lora_A.weight"] = parts["down"]
    save_file(tensors, str(path))


def diffusers_with_lora(path):
    """Fresh copies of diffusers' UNet and transformers' CLIP with the file loaded through diffusers + PEFT."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as Mixin

    _, ref_unet, _, ref_text = models()
    torch.manual_seed(0)
    unet = reference_unet(UNET_CFG)
    unet.load_state_dict(ref_unet.state_dict())
    text = CLIPTextModel(reference_config(TEXT_CFG)).eval()
    text.load_state_dict(ref_text.state_dict())
    state, alphas = Mixin.lora_state_dict(str(path))
    Mixin.load_lora_into_unet(state, alphas, unet=unet, adapter_name="test")
    Mixin.load_lora_into_text_encoder(state, alphas, text_encoder=text, adapter_name="test")
    return unet.eval(), text.eval()


def unet_inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10.0, 500.0]), torch.randn(2, 7, 32, generator=g)


def text_ids():
    return torch.tensor([[49406, 320, 1125, 539, 49407, 49407, 49407], [49406, 2368, 7, 49407, 49407, 49407, 49407]])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_outputs_equal_diffusers_load_lora_weights(tmp_path, layout):
    unet, _, text, _ = models()
    path = tmp_path / f"{layout}.safetensors"
    (kohya_file if layout == "kohya" else peft_file)(path, random_lora(1))
    lora = load_lora(path, UNET_CFG, TEXT_CFG)
    assert lora.unmatched == ()
    assert len(lora.unet) == 7 * len(UNET_TARGETS)  # transformers: 2 down, 1 mid, 4 up
    assert len(lora.text_encoder) == TEXT_CFG.layers * len(TEXT_TARGETS)
    lora_unet, lora_text = diffusers_with_lora(path)
    x, t, context = unet_inputs()
    with torch.no_grad():
        base = unet(x, t, context)
        expected = lora_unet(x, t, encoder_hidden_states=context).sample
        with patched(unet, [WeightPatch(lora.unet, 1.0, lora.name)]):
            got = unet(x, t, context)
        assert relative(got, expected) < 1e-5
        assert relative(base, expected) > 1e-2  # the LoRA changes the output: the comparison means something
        ids = text_ids()
        expected_text = lora_text(ids).last_hidden_state
        with patched(text, [WeightPatch(lora.text_encoder, 1.0, lora.name)]):
            got_text = text(ids).last_hidden_state
        assert relative(got_text, expected_text) < 1e-5
        assert relative(text(ids).last_hidden_state, expected_text) > 1e-2


def test_unpatching_restores_the_original_bits_and_strengths_add_up(tmp_path):
    unet, _, _, _ = models()
    path = tmp_path / "k.safetensors"
    lora_parts = random_lora(2)
    kohya_file(path, lora_parts)
    lora = load_lora(path, UNET_CFG, TEXT_CFG)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    parts = lora_parts[name]
    for strength in (1.0, 0.3, -0.7):
        with patched(unet, [WeightPatch(lora.unet, strength, lora.name)]):
            merged = before[name + ".weight"] + strength * 0.5 * parts["up"] @ parts["down"]
            torch.testing.assert_close(unet.get_parameter(name + ".weight"), merged, rtol=0, atol=1e-6)
        assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    # Two LoRAs stacked: their changes add; an error inside the block restores too.
    with (
        pytest.raises(RuntimeError),
        patched(unet, [WeightPatch(lora.unet, 1.0, "a"), WeightPatch(lora.unet, 0.5, "b")]),
    ):
        merged = before[name + ".weight"] + 1.5 * 0.5 * parts["up"] @ parts["down"]
        torch.testing.assert_close(unet.get_parameter(name + ".weight"), merged, rtol=0, atol=1e-6)
        raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


def _patched_weight(tmp_path, tensors: dict[str, torch.Tensor], weight: str, strength: float = 1.0) -> torch.Tensor:
    unet, _, _, _ = models()
    save_file(tensors, str(tmp_path / "l.safetensors"))
    lora = load_lora(tmp_path / "l.safetensors", UNET_CFG, TEXT_CFG)
    with patched(unet, [WeightPatch(lora.unet, strength, lora.name)]):
        return unet.get_parameter(weight).detach().clone()


CONV = "down_blocks.0.resnets.0.conv1"  # (32, 32, 3, 3)


def test_locon_conv_and_tucker_equal_the_hand_merged_kernel(tmp_path):
    unet, _, _, _ = models()
    w = unet.get_parameter(CONV + ".weight").detach().clone()
    g = torch.Generator().manual_seed(4)
    up, down = torch.randn(32, 3, 1, 1, generator=g), torch.randn(3, 32, 3, 3, generator=g)
    name = "lora_unet_input_blocks_1_0_in_layers_2"  # the LDM spelling of the same conv
    got = _patched_weight(tmp_path, {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down,
                                     f"{name}.alpha": torch.tensor(1.5)}, CONV + ".weight", 0.8)  # fmt: skip
    expected = w + 0.8 * (1.5 / 3) * torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Tucker: down (r, in, 1, 1), mid (r, r, kh, kw): delta[o, i] = sum up[o, a] mid[a, b] down[b, i]
    mid, down1 = torch.randn(3, 3, 3, 3, generator=g), torch.randn(3, 32, 1, 1, generator=g)
    got = _patched_weight(tmp_path, {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down1,
                                     f"{name}.lora_mid.weight": mid}, CONV + ".weight")  # fmt: skip
    expected = w + torch.einsum("oa,abkl,bi->oikl", up[:, :, 0, 0], mid, down1[:, :, 0, 0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_loha_lokr_dora_and_diff_equal_their_formulas(tmp_path):
    unet, _, _, _ = models()
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # (32, 32)
    w = unet.get_parameter(q + ".weight").detach().clone()
    name = "lycoris_" + q.replace(".", "_")
    g = torch.Generator().manual_seed(5)
    a1, b1, a2, b2 = (torch.randn(s, generator=g) for s in [(32, 2), (2, 32), (32, 2), (2, 32)])
    got = _patched_weight(
        tmp_path,
        {
            f"{name}.hada_w1_a": a1,
            f"{name}.hada_w1_b": b1,
            f"{name}.hada_w2_a": a2,
            f"{name}.hada_w2_b": b2,
            f"{name}.alpha": torch.tensor(1.0),
        },
        q + ".weight",
    )
    torch.testing.assert_close(got, w + 0.5 * (a1 @ b1) * (a2 @ b2), rtol=1e-5, atol=1e-5)

    k1, k2a, k2b = torch.randn(4, 4, generator=g), torch.randn(8, 2, generator=g), torch.randn(2, 8, generator=g)
    got = _patched_weight(tmp_path, {f"{name}.lokr_w1": k1, f"{name}.lokr_w2_a": k2a, f"{name}.lokr_w2_b": k2b,
                                     f"{name}.alpha": torch.tensor(4.0)}, q + ".weight")  # fmt: skip
    torch.testing.assert_close(got, w + 2.0 * torch.kron(k1, k2a @ k2b), rtol=1e-5, atol=1e-5)

    up, down, magnitude = torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g), torch.rand(32, 1) + 0.5
    got = _patched_weight(tmp_path, {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down,
                                     f"{name}.dora_scale": magnitude}, q + ".weight", 0.5)  # fmt: skip
    merged = w + up @ down
    dora = magnitude * merged / merged.norm(dim=1, keepdim=True)  # DoRA: per-row magnitude times direction
    torch.testing.assert_close(got, w + 0.5 * (dora - w), rtol=1e-5, atol=1e-5)

    diff, diff_b = torch.randn(32, 32, generator=g), torch.randn(32, generator=g)
    out = q.replace("to_q", "to_out.0")
    b = unet.get_parameter(out + ".bias").detach().clone()
    got = _patched_weight(tmp_path, {f"{name}.diff": diff, f"lycoris_{out.replace('.', '_')}.diff_b": diff_b},
                          out + ".bias")  # fmt: skip
    torch.testing.assert_close(got, b + diff_b)


def test_unmatched_keys_are_reported_by_count_and_name(tmp_path, caplog):
    lora = random_lora(6)
    kohya_file(tmp_path / "k.safetensors", dict(list(lora.items())[:2]))
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "k.safetensors")
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"] = torch.zeros(32, 4)
    tensors["some_other_thing"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "k.safetensors"))
    loaded = load_lora(tmp_path / "k.safetensors", UNET_CFG, TEXT_CFG)
    assert loaded.unmatched == ("lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight", "some_other_thing")
    assert "2 key(s) fit nothing" in loaded.summary() and "some_other_thing" in caplog.text


K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4, 2)}, "for SDXL"),
        ({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4, 3, 3)}, "is not a LoRA"),
        ({"lora_unet_foo_bar.lora_up.weight": torch.zeros(4, 2)}, "names no layer"),
        (
            {  # SD2-like width: 64 wide where this model's cross-attention keys are 32 wide
                f"{K}.lora_up.weight": torch.zeros(32, 2),
                f"{K}.lora_down.weight": torch.zeros(2, 64),
            },
            "does not fit this model",
        ),
    ],
)
def test_files_for_other_models_are_refused_in_one_sentence(tmp_path, tensors, message):
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=message) as error:
        load_lora(tmp_path / "bad.safetensors", UNET_CFG, TEXT_CFG)
    assert "\n" not in str(error.value) and str(error.value).startswith("bad.safetensors")


def test_truncated_and_code_carrying_files_are_refused(tmp_path):
    kohya_file(tmp_path / "k.safetensors", dict(list(random_lora(7).items())[:1]))
    data = (tmp_path / "k.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) - 10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_lora(tmp_path / "t.safetensors", UNET_CFG, TEXT_CFG)

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"lora_unet_x.lora_up.weight": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="run code"):
        load_lora(tmp_path / "evil.pt", UNET_CFG, TEXT_CFG)


def test_every_spelling_names_the_same_module():
    names = keymap.lora_module_names(UNet(UNET_CFG).state_dict(), UNET_CFG, CLIPTextEncoder(TEXT_CFG).state_dict())
    q = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"
    for spelling in (
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_q",
        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_q",  # one ResNet per level: LDM block 3
        f"unet.{q}",
        f"lycoris_{q.replace('.', '_')}",
    ):
        assert names[spelling] == ("unet", q)
    fc1 = "text_model.encoder.layers.2.mlp.fc1"
    for spelling in ("lora_te_text_model_encoder_layers_2_mlp_fc1", "lora_te1_text_model_encoder_layers_2_mlp_fc1",
                     f"text_encoder.{fc1}"):  # fmt: skip
        assert names[spelling] == ("text_encoder", fc1)


def test_lokr_with_both_factors_low_rank_is_not_taken_for_loha(tmp_path):
    unet, _, _, _ = models()
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # (32, 32) = kron((4, 4), (8, 8))
    w = unet.get_parameter(q + ".weight").detach().clone()
    name = "lycoris_" + q.replace(".", "_")
    g = torch.Generator().manual_seed(8)
    a1, b1, a2, b2 = (torch.randn(s, generator=g) for s in [(4, 2), (2, 4), (8, 2), (2, 8)])
    tensors = {f"{name}.lokr_w1_a": a1, f"{name}.lokr_w1_b": b1, f"{name}.lokr_w2_a": a2, f"{name}.lokr_w2_b": b2,
               f"{name}.alpha": torch.tensor(1.0)}  # fmt: skip
    got = _patched_weight(tmp_path, tensors, q + ".weight")
    torch.testing.assert_close(got, w + 0.5 * torch.kron(a1 @ b1, a2 @ b2), rtol=1e-5, atol=1e-5)


def test_info_names_lora_files_and_embeddings(tmp_path):
    from atelier.models.info import describe_model

    kohya_file(tmp_path / "k.safetensors", random_lora(9))
    shown = describe_model(tmp_path / "k.safetensors")
    assert "a LoRA for Stable Diffusion 1.x or 2.x: 88 LoRA change(s)" in shown  # (tiny widths: no family's)
    assert "kohya (lora_unet_*, lora_te_*)" in shown and "70 in the UNet, 18 in the text encoder" in shown
    assert "rank          4" in shown and "alpha         2 (scale = alpha / rank)" in shown
    peft_file(tmp_path / "p.safetensors", random_lora(9))
    assert "diffusers / PEFT" in describe_model(tmp_path / "p.safetensors")
    save_file({"emb_params": torch.zeros(4, 768)}, str(tmp_path / "style.safetensors"))
    shown = describe_model(tmp_path / "style.safetensors")
    assert "a textual-inversion embedding for Stable Diffusion 1.x (CLIP ViT-L, 768 wide)" in shown
    assert "4 x 768" in shown and "embedding:style" in shown


def test_at_sd15_size_every_kohya_name_means_what_diffusers_converter_says():
    """Every kohya name (diffusers path) of an SD1.5 attention, MLP or projection layer, mapped by us and by
    diffusers' own kohya converter: the same module each time (shapes only, no weights are made)."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers

    from atelier.models.lora import _weight_shapes, split_key

    unet_cfg, text_cfg = UNetConfig(), TextEncoderConfig()
    names = keymap.lora_module_names(_weight_shapes(unet_cfg), unet_cfg, _weight_shapes(text_cfg))
    ldm = ("lora_unet_input_blocks", "lora_unet_middle_block", "lora_unet_output_blocks")
    kohya = [
        n
        for n in names
        if n.startswith(("lora_unet_", "lora_te_")) and not n.startswith(ldm)
        and any(part in n for part in ("attn", "proj_in", "proj_out", "ff_net", "mlp"))
    ]  # fmt: skip
    assert len(kohya) == 16 * 12 + 12 * 6  # 16 transformers x (4 + 4 + 2 + 2) layers, 12 CLIP layers x 6
    state = {}
    for n in kohya:
        state.update({f"{n}.lora_down.weight": torch.zeros(1, 1), f"{n}.lora_up.weight": torch.zeros(1, 1)})
    converted, _ = _convert_non_diffusers_lora_to_diffusers(state)
    theirs = {split_key(k)[0] for k in converted}  # diffusers' older processor spelling, read by our split_key
    ours = {f"{'unet' if c == 'unet' else 'text_encoder'}.{m}" for c, m in (names[n] for n in kohya)}
    assert theirs == ours
    # The LDM spelling of SD1.5's layers lands on the same modules (level 1's first transformer is input block 4).
    assert names["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_q"] == (
        "unet",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q",
    )
    assert names["lora_unet_output_blocks_11_1_proj_out"] == ("unet", "up_blocks.3.attentions.2.proj_out")
    assert names["lora_unet_middle_block_1_transformer_blocks_0_ff_net_2"] == (
        "unet",
        "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
    )
