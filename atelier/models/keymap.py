"""Weight names: the original single-file Stable Diffusion layout <-> Atelier's own names.

A Stable Diffusion 1.x `.safetensors` file stores the three networks under the names of the CompVis/LDM code that
trained them (Rombach et al. 2022):

    model.diffusion_model.input_blocks.4.1.proj_in.weight          the UNet   (ours: down_blocks.1.attentions.0...)
    first_stage_model.encoder.down.2.block.0.conv1.weight          the VAE    (ours: encoder.down_blocks.2.resnets.0...)
    cond_stage_model.transformer.text_model.encoder.layers.0...    CLIP text  (ours: text_model.encoder.layers.0...)

Atelier's modules use the diffusers / transformers names. Both layouts describe the same tensors, so converting is
only renaming, plus one reshape: the VAE's mid-block attention is stored as 1x1 convolutions (C, C, 1, 1) in SD
files and as linear layers (C, C) in ours.

The renaming is generated from the config: a table of (our module prefix, SD module prefix, leaf renames) rows, one
per ResNet block, attention block, resampler, ... Walking the table the other way gives the inverse, so the same
table loads a file and saves one. Every function here is pure (dicts in, dicts out) and checks that no key is lost,
left over or duplicated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from atelier.errors import CheckpointError
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig

T = TypeVar("T")  # a tensor, or only its shape

# Prefixes of the three networks inside a full single-file checkpoint.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
# SD 2.x: OpenCLIP ViT-H in open_clip's own names. SDXL (Stability's `sgm` code): a list of conditioners, the first
# OpenAI's CLIP-L in transformers' names, the second bigG in open_clip's (the refiner has bigG alone, as embedder 0).
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."


@dataclass(frozen=True)
class Row:
    """One module of the table: `ours` and `sd` are module paths; `leaves` renames the first part of what follows."""

    ours: str
    sd: str
    leaves: Mapping[str, str] = field(default_factory=dict)


# Inside a UNet ResNet block the LDM code wraps layers in nn.Sequential, hence the numeric names.
#   in_layers  = [GroupNorm, SiLU, Conv]          -> norm1 (0), conv1 (2)
#   emb_layers = [SiLU, Linear]                   -> time_emb_proj (1)
#   out_layers = [GroupNorm, SiLU, Dropout, Conv] -> norm2 (0), conv2 (3)
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",  # 1x1 conv, only where the channel count changes
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}  # norm1/conv1/norm2/conv2 keep their names
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# The spatial transformers (norm, proj_in, transformer_blocks.*, proj_out) have the same names in both layouts.
SAME: Mapping[str, str] = {}


# --------------------------------------------------------------------------------------------------------------
# Tables generated from the configs
# --------------------------------------------------------------------------------------------------------------


def unet_table(config: UNetConfig) -> list[Row]:
    """The UNet's rows. LDM numbers its blocks in one flat list per path; diffusers groups them by level.

    Down path, levels l = 0..L-1 with n = layers_per_block ResNets each:
        input_blocks.0                  conv_in
        input_blocks.1 + l(n+1) + j     ResNet j of level l (.0) and its transformer (.1), j < n
        input_blocks.1 + l(n+1) + n     the level's downsampler (.0.op), except after the last level
    Up path, levels u = 0..L-1 (u = 0 is the lowest resolution) with n + 1 ResNets each:
        output_blocks.u(n+1) + j        ResNet (.0), transformer (.1), and after the last ResNet the upsampler
                                        (.1.conv, or .2.conv when a transformer takes .1)
    """
    levels, n = len(config.block_channels), config.layers_per_block
    rows = [
        Row("time_embedding.linear_1", "time_embed.0"),
        Row("time_embedding.linear_2", "time_embed.2"),
        Row("conv_in", "input_blocks.0.0"),
    ]
    if config.adm_in_channels is not None:  # SDXL's vector y: label_emb = Sequential(Sequential(Linear, SiLU, Linear))
        rows += [Row("add_embedding.linear_1", "label_emb.0.0"), Row("add_embedding.linear_2", "label_emb.0.2")]
    for level in range(levels):
        has_attention = config.cross_attention_levels[level]
        for j in range(n):
            i = 1 + level * (n + 1) + j
            rows.append(Row(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{i}.0", UNET_RESNET))
            if has_attention:
                rows.append(Row(f"down_blocks.{level}.attentions.{j}", f"input_blocks.{i}.1", SAME))
        if level < levels - 1:
            i = 1 + level * (n + 1) + n
            rows.append(Row(f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{i}.0.op"))
    rows += [
        Row("mid_block.resnets.0", "middle_block.0", UNET_RESNET),
        Row("mid_block.attentions.0", "middle_block.1", SAME),
        Row("mid_block.resnets.1", "middle_block.2", UNET_RESNET),
    ]
    for up in range(levels):
        has_attention = config.cross_attention_levels[levels - 1 - up]
        for j in range(n + 1):
            i = up * (n + 1) + j
            rows.append(Row(f"up_blocks.{up}.resnets.{j}", f"output_blocks.{i}.0", UNET_RESNET))
            if has_attention:
                rows.append(Row(f"up_blocks.{up}.attentions.{j}", f"output_blocks.{i}.1", SAME))
        if up < levels - 1:
            i = up * (n + 1) + n
            slot = 2 if has_attention else 1
            rows.append(Row(f"up_blocks.{up}.upsamplers.0.conv", f"output_blocks.{i}.{slot}.conv"))
    rows += [Row("conv_norm_out", "out.0"), Row("conv_out", "out.2")]
    return rows


def vae_table(config: VAEConfig) -> list[Row]:
    """The VAE's rows. The SD decoder numbers its levels from the lowest resolution up, diffusers from the top down:
    our decoder.up_blocks.u is SD's decoder.up.(L-1-u)."""
    levels, n = len(config.block_channels), config.layers_per_block
    rows = [Row("quant_conv", "quant_conv"), Row("post_quant_conv", "post_quant_conv")]
    for part in ("encoder", "decoder"):
        rows += [
            Row(f"{part}.conv_in", f"{part}.conv_in"),
            Row(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET),
            Row(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION),
            Row(f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET),
            Row(f"{part}.conv_norm_out", f"{part}.norm_out"),
            Row(f"{part}.conv_out", f"{part}.conv_out"),
        ]
    for level in range(levels):
        for j in range(n):
            rows.append(Row(f"encoder.down_blocks.{level}.resnets.{j}", f"encoder.down.{level}.block.{j}", VAE_RESNET))
        if level < levels - 1:
            rows.append(
                Row(f"encoder.down_blocks.{level}.downsamplers.0.conv", f"encoder.down.{level}.downsample.conv")
            )
    for up in range(levels):
        sd_level = levels - 1 - up
        for j in range(n + 1):
            rows.append(Row(f"decoder.up_blocks.{up}.resnets.{j}", f"decoder.up.{sd_level}.block.{j}", VAE_RESNET))
        if up < levels - 1:
            rows.append(Row(f"decoder.up_blocks.{up}.upsamplers.0.conv", f"decoder.up.{sd_level}.upsample.conv"))
    return rows


def text_encoder_table(config: TextEncoderConfig) -> list[Row]:
    """CLIP keeps the transformers names inside the SD file; only the `cond_stage_model.transformer.` prefix differs,
    which `split_checkpoint` removes. The table is therefore the identity on the two top-level modules."""
    rows = [Row("text_model", "text_model")]
    if config.projection_dim is not None:
        rows.append(Row("text_projection", "text_projection"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# OpenCLIP's text tower (SD 2.x's ViT-H, SDXL's bigG) <-> transformers' names
# --------------------------------------------------------------------------------------------------------------

# Inside transformer.resblocks.N (open_clip) = text_model.encoder.layers.N (ours); in_proj is split apart below.
OPEN_CLIP_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
OPEN_CLIP_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",  # a bare (77, W) parameter there
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
# Buffers and training-only parameters open_clip stores beside the tower: the causal mask, CLIP's temperature.
OPEN_CLIP_IGNORED = ("attn_mask", "logit_scale")


def text_encoder_from_open_clip(state: Mapping[str, torch.Tensor], projection: bool) -> dict[str, torch.Tensor]:
    """An OpenCLIP text tower (prefix removed) -> our CLIPTextEncoder's names.

    Two changes beyond renaming: open_clip packs the attention's q, k and v into one `in_proj_weight` (3W, W), cut
    here into three (W, W) blocks in that order; and it stores `text_projection` as (W, P) for `x @ P`, which is a
    Linear's weight transposed. `projection=False` drops the projection (SD 2.x's UNet never reads it).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in OPEN_CLIP_TOP:
            out[OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection":
            if projection:
                out["text_projection.weight"] = value.T.contiguous()  # (W, P) -> (P, W)
        elif key.startswith("transformer.resblocks."):
            n, rest = key.removeprefix("transformer.resblocks.").split(".", 1)
            layer = f"text_model.encoder.layers.{n}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                leaf = rest.rsplit("_", 1)[1]  # weight / bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}self_attn.{name}.{leaf}"] = part.contiguous()  # (W, W) or (W,)
                continue
            module, leaf = rest.rsplit(".", 1)
            if module not in OPEN_CLIP_LAYER:
                raise CheckpointError(f"The OpenCLIP text encoder has an unexpected weight {key}.")
            out[f"{layer}{OPEN_CLIP_LAYER[module]}.{leaf}"] = value
        elif key not in OPEN_CLIP_IGNORED:
            raise CheckpointError(f"The OpenCLIP text encoder has an unexpected weight {key}.")
    return out


def text_encoder_to_open_clip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> an OpenCLIP text tower's names (the inverse of `text_encoder_from_open_clip`, as files store it)."""
    top = {ours: theirs for theirs, ours in OPEN_CLIP_TOP.items()}
    layer_names = {ours: theirs for theirs, ours in OPEN_CLIP_LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            n, rest = key.removeprefix("text_model.encoder.layers.").split(".", 1)
            module, leaf = rest.rsplit(".", 1)
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                if module == "self_attn.q_proj":  # written once, from the three: (3W, W) = [q; k; v]
                    parts = [state[f"text_model.encoder.layers.{n}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
                    out[f"transformer.resblocks.{n}.attn.in_proj_{leaf}"] = torch.cat(parts, dim=0)
                continue
            out[f"transformer.resblocks.{n}.{layer_names[module]}.{leaf}"] = value
        else:
            raise CheckpointError(f"The text encoder has a weight {key} that OpenCLIP's layout has no place for.")
    return out


def split_by_prefix(state: Mapping[str, T], prefixes: Mapping[str, str]) -> dict[str, dict[str, T]]:
    """{part: {name without the prefix: value}} for each (part, prefix), everything else under "ignored"."""
    parts: dict[str, dict[str, T]] = {name: {} for name in [*prefixes, "ignored"]}
    for key, value in state.items():
        for name, prefix in prefixes.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix) :]] = value
                break
        else:
            parts["ignored"][key] = value
    return parts


# --------------------------------------------------------------------------------------------------------------
# Renaming with a table
# --------------------------------------------------------------------------------------------------------------


def _rename_key(key: str, index: Mapping[str, tuple[str, Mapping[str, str]]]) -> str | None:
    """`key` renamed by the row whose source prefix it starts with (longest match), or None when no row matches."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in index:
            target, leaves = index[prefix]
            rest = ".".join(parts[cut:])
            for old, new in leaves.items():
                if rest == old or rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            return f"{target}.{rest}"
    return None


def rename(state: Mapping[str, torch.Tensor], rows: Iterable[Row], to_sd: bool, what: str) -> dict[str, torch.Tensor]:
    """Every key of `state` renamed through `rows` (ours -> SD when `to_sd`, else SD -> ours).

    Raises CheckpointError naming the first few keys that no row covers; the result has exactly as many keys as
    the input. `what` names the component in messages ("the UNet").
    """
    index: dict[str, tuple[str, Mapping[str, str]]] = {}
    for row in rows:
        if to_sd:
            index[row.ours] = (row.sd, row.leaves)
        else:
            index[row.sd] = (row.ours, {new: old for old, new in row.leaves.items()})
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        new_key = _rename_key(key, index)
        if new_key is None:
            unknown.append(key)
        else:
            out[new_key] = tensor
    if unknown:
        raise CheckpointError(
            f"{what} has {len(unknown)} weight(s) that do not fit its layout: {first_names(unknown)}; "
            "is it a Stable Diffusion 1.x model?"
        )
    if len(out) != len(state):
        raise CheckpointError(f"{what} has weights whose names collide after renaming ({len(state) - len(out)} lost).")
    return out


def first_names(keys: Iterable[str], count: int = 3) -> str:
    """The first `count` of `keys` in sorted order, comma-separated, with "..." when there are more."""
    keys = sorted(keys)
    shown = ", ".join(keys[:count])
    return shown + (", ..." if len(keys) > count else "")


# --------------------------------------------------------------------------------------------------------------
# The VAE mid-block attention: 1x1 convolution in SD files, linear layer in ours
# --------------------------------------------------------------------------------------------------------------


def _is_vae_attention_weight(key: str) -> bool:
    return ".mid_block.attentions.0.to_" in key and key.endswith(".weight")


def vae_attention_to_linear(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(C, C, 1, 1) conv weights of q, k, v and the output projection -> (C, C) linear weights (our names)."""
    out = dict(state)
    for key, tensor in state.items():
        if _is_vae_attention_weight(key) and tensor.ndim == 4:
            if tensor.shape[2:] != (1, 1):
                raise CheckpointError(f"the VAE attention weight {key} has shape {tuple(tensor.shape)}; expected 1x1.")
            out[key] = tensor[:, :, 0, 0]
    return out


def vae_attention_to_conv(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse: (C, C) linear weights -> (C, C, 1, 1), as the SD layout stores them (our names)."""
    out = dict(state)
    for key, tensor in state.items():
        if _is_vae_attention_weight(key) and tensor.ndim == 2:
            out[key] = tensor[:, :, None, None]
    return out


# Some diffusers VAE files written before 2023 still use the old attention names.
_OLD_DIFFUSERS_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_old_diffusers_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers VAE attention names (query/key/value/proj_attn) -> current ones (to_q/to_k/to_v/to_out.0)."""
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if ".mid_block.attentions.0." in key and len(parts) >= 2 and parts[-2] in _OLD_DIFFUSERS_ATTENTION:
            parts[-2] = _OLD_DIFFUSERS_ATTENTION[parts[-2]]
        out[".".join(parts)] = tensor
    if len(out) != len(state):
        lost = len(state) - len(out)
        raise CheckpointError(f"the VAE has attention weights under both old and new diffusers names ({lost} lost).")
    return out


def vae_from_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers VAE state dict in our names, whatever diffusers version wrote it: old attention names renamed,
    attention stored as 1x1 convolutions reshaped to linear weights."""
    return vae_attention_to_linear(vae_old_diffusers_names(state))


# --------------------------------------------------------------------------------------------------------------
# Whole checkpoints: split a single file into components and join them back
# --------------------------------------------------------------------------------------------------------------


def text_encoder_names(state: Mapping[str, T]) -> dict[str, T]:
    """CLIP names made uniform: `text_model.embeddings...` etc. Files saved with transformers < 4.20, and
    transformers 5's CLIPTextModel, leave out the `text_model.` level (`embeddings.*`); it is added. The
    `position_ids` buffer (0..76, not a weight) is dropped."""
    out = {}
    for key, value in state.items():
        if key.endswith("embeddings.position_ids"):
            continue
        if not key.startswith(("text_model.", "text_projection.")):
            key = "text_model." + key
        out[key] = value
    return out


def vae_without_prefix(state: Mapping[str, T]) -> dict[str, T]:
    """A standalone VAE's names with `first_stage_model.` removed where present: a VAE cut out of a full checkpoint
    keeps the prefix, vae-ft-mse-840000-ema-pruned does not."""
    out = {key.removeprefix(VAE_PREFIX): value for key, value in state.items()}
    if len(out) != len(state):
        raise CheckpointError(
            f"the VAE has weights both with and without the {VAE_PREFIX}* prefix ({len(state) - len(out)} lost)."
        )
    return out


def split_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A single-file SD state dict -> {"unet": ..., "vae": ..., "text_encoder": ..., "ignored": ...} with the
    component prefixes removed (names still in the SD layout). Everything else (EMA copies `model_ema.*`, the
    noise schedule buffers `betas`, `alphas_cumprod`, ...) lands in "ignored"."""
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text_encoder": {}, "ignored": {}}
    prefixes = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": TEXT_PREFIX}
    for key, tensor in state.items():
        for name, prefix in prefixes.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix) :]] = tensor
                break
        else:
            parts["ignored"][key] = tensor
    return parts


def unet_from_sd(state: Mapping[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """UNet weights, SD names (prefix removed) -> ours."""
    return rename(state, unet_table(config), to_sd=False, what="The UNet")


def unet_to_sd(state: Mapping[str, torch.Tensor], config: UNetConfig) -> dict[str, torch.Tensor]:
    """UNet weights, ours -> SD names (without the `model.diffusion_model.` prefix)."""
    return rename(state, unet_table(config), to_sd=True, what="The UNet")


def vae_from_sd(state: Mapping[str, torch.Tensor], config: VAEConfig) -> dict[str, torch.Tensor]:
    """VAE weights, SD names (prefix removed) -> ours, attention convs reshaped to linear weights."""
    return vae_attention_to_linear(rename(state, vae_table(config), to_sd=False, what="The VAE"))


def controlnet_table(config: UNetConfig, hint_convs: int) -> list[Row]:
    """A ControlNet's rows: the UNet's for the copied encoder (time embedding, input and middle blocks), plus

    input_hint_block.0            controlnet_cond_embedding.conv_in   (convs at even indices, SiLUs between)
    input_hint_block.2 ... 2k     controlnet_cond_embedding.blocks.0 ... k-1
    input_hint_block.{2n}         controlnet_cond_embedding.conv_out  (the last, a zero conv)
    zero_convs.i.0                controlnet_down_blocks.i            (one 1x1 zero conv per skip)
    middle_block_out.0            controlnet_mid_block
    """
    encoder = [r for r in unet_table(config) if not r.ours.startswith(("up_blocks.", "conv_norm_out", "conv_out"))]
    last = 2 * (hint_convs - 1)
    hint = [Row("controlnet_cond_embedding.conv_in", "input_hint_block.0")]
    hint += [
        Row(f"controlnet_cond_embedding.blocks.{k - 1}", f"input_hint_block.{2 * k}") for k in range(1, hint_convs - 1)
    ]
    hint.append(Row("controlnet_cond_embedding.conv_out", f"input_hint_block.{last}"))
    zeros = [
        Row(f"controlnet_down_blocks.{i}", f"zero_convs.{i}.0")
        for i in range(len(config.block_channels) * (config.layers_per_block + 1))
    ]
    return [*encoder, *hint, *zeros, Row("controlnet_mid_block", "middle_block_out.0")]


def controlnet_from_sd(state: Mapping[str, T], config: UNetConfig, name: str) -> dict[str, T]:
    """ControlNet weights in the original layout (`control_model.` removed) -> ours (= diffusers')."""
    hint_convs = sum(1 for k in state if k.startswith("input_hint_block.") and k.endswith(".weight"))
    return rename(state, controlnet_table(config, hint_convs), to_sd=False, what=name)


def vae_to_sd(state: Mapping[str, torch.Tensor], config: VAEConfig) -> dict[str, torch.Tensor]:
    """VAE weights, ours -> SD names (without the `first_stage_model.` prefix), attention stored as 1x1 convs."""
    return rename(vae_attention_to_conv(state), vae_table(config), to_sd=True, what="The VAE")


def text_encoder_from_sd(state: Mapping[str, torch.Tensor], config: TextEncoderConfig) -> dict[str, torch.Tensor]:
    """CLIP weights, SD names (prefix removed) -> ours."""
    return rename(text_encoder_names(state), text_encoder_table(config), to_sd=False, what="The text encoder")


def text_encoder_to_sd(state: Mapping[str, torch.Tensor], config: TextEncoderConfig) -> dict[str, torch.Tensor]:
    """CLIP weights, ours -> SD names (without the `cond_stage_model.transformer.` prefix)."""
    return rename(state, text_encoder_table(config), to_sd=True, what="The text encoder")


def join_checkpoint(
    unet: Mapping[str, torch.Tensor], vae: Mapping[str, torch.Tensor], text_encoder: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Three component state dicts in SD names -> one single-file state dict with the component prefixes."""
    out = {UNET_PREFIX + k: v for k, v in unet.items()}
    out.update({VAE_PREFIX + k: v for k, v in vae.items()})
    out.update({TEXT_PREFIX + k: v for k, v in text_encoder.items()})
    if len(out) != len(unet) + len(vae) + len(text_encoder):
        raise CheckpointError("the three components have overlapping weight names; they cannot share one file.")
    return out


# --------------------------------------------------------------------------------------------------------------
# LoRA module names: every spelling a LoRA file uses for one of our weights
# --------------------------------------------------------------------------------------------------------------

UNET = "unet"
TEXT_ENCODER = "text_encoder"
# The kohya and diffusers prefixes of each text tower. SD1.x (and SD 2.x) has one tower, its names bare; SDXL's
# SDXLTextEncoder holds two, `clip_l.` (OpenAI's CLIP ViT-L, kohya's te1) and `clip_g.` (OpenCLIP bigG, kohya's te2,
# which kohya and diffusers both name as transformers' CLIPTextModelWithProjection does, like ours).
LORA_TEXT_PREFIXES = {
    "": ("lora_te_", "lora_te1_", "text_encoder."),
    "clip_l.": ("lora_te1_", "text_encoder."),
    "clip_g.": ("lora_te2_", "text_encoder_2."),
}


def lora_module_names(
    unet_weights: Iterable[str], unet_config: UNetConfig, text_weights: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """LoRA module name, as files spell it -> (component, our module name), for every weight of the two networks.

    A LoRA names the layer it changes, not the weight: `<module>.lora_up.weight` patches `<module>.weight`. The
    spellings, as ComfyUI's comfy/lora.py accepts them (`unet_weights` and `text_weights` are our weight names,
    ending in `.weight` or `.bias`; SDXL's text weights start with their tower, `clip_l.` or `clip_g.`):

        kohya, diffusers path   lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q
        kohya, LDM path         lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q
                                (SDXL: lora_unet_input_blocks_4_1_..., its first level has no transformer)
        diffusers / PEFT        unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q
        LyCORIS                 lycoris_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q
        text encoder, kohya     lora_te_text_model_encoder_layers_0_self_attn_q_proj   (lora_te1_: the same)
        text encoder, diffusers text_encoder.text_model.encoder.layers.0.self_attn.q_proj
        SDXL's CLIP-L           lora_te1_text_model_..., text_encoder.text_model...     -> clip_l.text_model...
        SDXL's bigG             lora_te2_text_model_..., text_encoder_2.text_model...   -> clip_g.text_model...

    The UNet's LDM path comes from the same table that loads single files (`unet_table`), so it follows the
    config: SDXL's three levels, transformer depths 0/2/10 and 10-deep middle need nothing of their own.
    """
    names: dict[str, tuple[str, str]] = {}
    modules = sorted({key.rsplit(".", 1)[0] for key in unet_weights})
    ldm = rename({m + ".weight": m for m in modules}, unet_table(unet_config), to_sd=True, what="The UNet")
    for ldm_key, module in ldm.items():
        names["lora_unet_" + ldm_key.removesuffix(".weight").replace(".", "_")] = (UNET, module)
    for module in modules:
        underscored = module.replace(".", "_")
        for spelling in (f"lora_unet_{underscored}", f"lycoris_{underscored}", f"unet.{module}", module):
            names[spelling] = (UNET, module)
    for module in sorted({key.rsplit(".", 1)[0] for key in text_weights}):
        tower = next((t for t in LORA_TEXT_PREFIXES if t and module.startswith(t)), "")
        inner = module.removeprefix(tower)  # text_model.encoder.layers.0.self_attn.q_proj
        kohya, diffusers = LORA_TEXT_PREFIXES[tower][:-1], LORA_TEXT_PREFIXES[tower][-1]
        for spelling in (*(p + inner.replace(".", "_") for p in kohya), diffusers + inner):
            names[spelling] = (TEXT_ENCODER, module)
    return names
