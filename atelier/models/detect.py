"""What a model is, read from its header before any weight: its family and the configs of its three networks.

A single file says what it is through the names and shapes of its tensors: SDXL carries `conditioner.embedders.*`,
SD 2.x an OpenCLIP text encoder 1024 wide, an inpainting UNet 9 input channels, a LoRA `lora_down`/`lora_up` pairs.
The configs come from Atelier's own metadata when Atelier wrote the file (checkpoint.save_checkpoint), else they are
read off the shapes: the UNet's `input_blocks.0.0.weight` is (C0, in, 3, 3), so it gives the first level's width and
the input channels.

Everything here is pure (names, shapes, metadata in; a family or a config out). The readers open the files
(single_file.py, diffusers_folder.py) and hand over a `Parts`; checkpoint.py builds the modules from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig, config_from_json

# Keys of the safetensors metadata (a str -> str dict in the header) where Atelier stores its configs.
META_UNET, META_VAE, META_TEXT = "atelier.unet_config", "atelier.vae_config", "atelier.text_encoder_config"


def metadata_config(cls: type, metadata: Mapping[str, str], key: str, name: str) -> Any:
    """The config of type `cls` stored under `key` in the file's metadata, or None when the file has none."""
    if key not in metadata:
        return None
    try:
        return config_from_json(cls, metadata[key])
    except (json.JSONDecodeError, TypeError, ValueError):
        raise CheckpointError(f"{name} has an unreadable {key} entry in its metadata.") from None


# --------------------------------------------------------------------------------------------------------------
# Which model family is this?
# --------------------------------------------------------------------------------------------------------------

SUPPORTED_FAMILIES = ("sd1", "sd1-inpaint")

FAMILY_NAMES = {
    "sd1": "a Stable Diffusion 1.x checkpoint",
    "sd1-inpaint": "a Stable Diffusion 1.x inpainting checkpoint",
    "sd2": "a Stable Diffusion 2.x checkpoint",
    "sdxl": "an SDXL checkpoint",
    "sd3": "a Stable Diffusion 3 checkpoint",
    "flux": "a Flux checkpoint",
    "controlnet": "a ControlNet",
    "upscaler": "an upscale model",
    "lora": "a LoRA",
    "embedding": "a textual-inversion embedding",
    "vae": "a standalone VAE",
    "unet": "a UNet without its CLIP text encoder",
    "unet-diffusers": "a diffusers-layout UNet file",
    "t5": "a T5 text encoder (Stable Diffusion 3, Flux)",
    "unknown": "an unknown kind of model",
}


def detect_family(shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(family, evidence) from the tensor names and shapes of a single file, e.g. ("sdxl", "conditioner.embedders.*").

    Checked in order from the most specific sign; SD1.x and SD2.x share the UNet layout and differ in the text
    encoder (CLIP ViT-L, 768 wide vs OpenCLIP ViT-H, 1024 wide), hence the cross-attention context width. A file
    written by Atelier (its UNet config in `metadata`) is SD1.x-shaped whatever its widths.
    """
    ours = metadata is not None and META_UNET in metadata
    names = list(shapes)

    def first(test: Callable[[str], bool]) -> str | None:
        return next((n for n in names if test(n)), None)

    lycoris = (".hada_w1_a", ".lokr_w1", ".lokr_w1_a")
    if found := first(lambda n: "lora_down" in n or "lora_up" in n or ".lora_A." in n or n.startswith("lora_")
                      or n.startswith("lycoris_") or n.endswith(lycoris)):  # fmt: skip
        return "lora", found
    if found := first(lambda n: n in ("string_to_param", "emb_params", "clip_l", "clip_g") or "string_to_param" in n):
        return "embedding", found
    if found := first(lambda n: "double_blocks." in n):
        return "flux", found
    if found := first(lambda n: "joint_blocks." in n):
        return "sd3", found
    if first(lambda n: n.startswith("conditioner.embedders.")):
        return "sdxl", "conditioner.embedders.*"
    if first(lambda n: n.startswith(keymap.UNET_PREFIX + "label_emb.")):
        return "sdxl", "model.diffusion_model.label_emb.*"
    if first(lambda n: n.startswith("control_model.") or "zero_convs." in n or "input_hint_block." in n):
        return "controlnet", "control_model.* / zero_convs.*"
    if first(lambda n: n.startswith("controlnet_cond_embedding.")):
        return "controlnet", "controlnet_cond_embedding.* (diffusers)"
    if first(lambda n: n.startswith("cond_stage_model.model.")):
        return "sd2", "an OpenCLIP text encoder, cond_stage_model.model.*"
    if first(lambda n: n.startswith(keymap.UNET_PREFIX)):
        context = next((s[1] for n, s in shapes.items() if n.endswith("attn2.to_k.weight") and len(s) == 2), None)
        if context == 1024 and not ours:
            return "sd2", "cross-attention context width 1024"
        if context in (1280, 2048) and not ours:
            return "sdxl", f"cross-attention context width {context}"
        if not first(lambda n: n.startswith(keymap.TEXT_PREFIX)):
            return "unet", "model.diffusion_model.* but no cond_stage_model.transformer.*"
        conv_in = shapes.get(keymap.UNET_PREFIX + "input_blocks.0.0.weight")
        if conv_in is not None and len(conv_in) == 4 and conv_in[1] == 9:
            return "sd1-inpaint", "a UNet with 9 input channels"
        return "sd1", "model.diffusion_model.* and cond_stage_model.transformer.*"
    if vae_names(names):
        return "vae", "encoder.* and decoder.* only"
    from atelier.models.upscale import layout_of, strip_container  # a leaf; imported here: detect runs on every file

    if layout := layout_of(strip_container(shapes)):
        return "upscaler", f"an upscale network's {layout} key layout"
    if first(lambda n: n.startswith("down_blocks.")) and first(lambda n: n.startswith("time_embedding.")):
        return "unet", "a diffusers UNet (down_blocks.*, time_embedding.*)"
    return "unknown", ", ".join(sorted(names)[:3]) or "no tensors"


# --------------------------------------------------------------------------------------------------------------
# Split files: one network per file, as ComfyUI's models/diffusion_models and models/text_encoders hold them
# --------------------------------------------------------------------------------------------------------------


def detect_diffusion_model(
    shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(family, evidence) of a file that holds a diffusion model alone (UNETLoader), its names in the SD layout
    with or without `model.diffusion_model.`, or diffusers' names. The family rules are detect_family's, the
    UNet's signs being enough: its cross-attention context width (768 for SD1.x), its input channels (9:
    inpainting), label_emb (SDXL), Linear projections into its transformers (SD 2.x, whatever its widths); a
    file written by Atelier (its UNet config in `metadata`) is SD1.x-shaped whatever its widths."""
    names = list(shapes)
    if any(n.startswith("down_blocks.") for n in names) and "conv_in.weight" in shapes:
        return _diffusers_unet_family(shapes)
    prefixed = {n if n.startswith(keymap.UNET_PREFIX) else keymap.UNET_PREFIX + n: s for n, s in shapes.items()}
    family, evidence = detect_family(prefixed, metadata)
    if family == "unet" and _linear_projections(shapes) and not (metadata and META_UNET in metadata):
        return "sd2", "a UNet with linear projections into its transformers (SD1.x's are 1x1 convolutions)"
    if family == "unet":  # what detect_family says of an SD1.x-shaped UNet with no text encoder beside it
        conv_in = prefixed.get(keymap.UNET_PREFIX + "input_blocks.0.0.weight")
        if conv_in is not None and len(conv_in) == 4 and conv_in[1] == 9:
            return "sd1-inpaint", "a UNet with 9 input channels and 768-wide cross-attention"
        return "sd1", "a UNet with 768-wide cross-attention"
    return family, evidence


def _diffusers_unet_family(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, str]:
    """(family, evidence) of a diffusers-layout UNet file (diffusion_pytorch_model.safetensors): SDXL has the
    vector y's MLP (add_embedding.*), SD 2.x linear projections; SD1.x ones are still refused."""
    if "add_embedding.linear_1.weight" in shapes:
        return "sdxl", "a diffusers UNet with add_embedding.* (SDXL's vector y)"
    if _linear_projections(shapes):
        return "sd2", "a diffusers UNet with linear projections into its transformers, as SD 2.x's"
    return "unet-diffusers", "a diffusers UNet (down_blocks.*, conv_in.weight)"


def _linear_projections(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether the UNet's transformers project in with Linear layers (C, C), as every SD 2.x and SDXL UNet does,
    rather than SD1.x's 1x1 convolutions (C, C, 1, 1): the SD 2.x sign that does not depend on the widths."""
    return any(n.endswith("proj_in.weight") and len(s) == 2 for n, s in shapes.items())


# The VAE scaling factor each family's latents use, for a diffusion model loaded without its VAE (ComfyUI keeps
# it in the model's latent format): SD1.x and SD2.x 0.18215 (Rombach et al. 2022, sec. 4.3.2), SDXL 0.13025.
LATENT_SCALES = {"sd1": 0.18215, "sd1-inpaint": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}


def latent_scale(family: str, metadata: Mapping[str, str]) -> float:
    """The latent scale of a diffusion model file: its VAE config's, when Atelier stored one, else its family's."""
    stored = metadata_config(VAEConfig, metadata, META_VAE, "the diffusion model")
    return stored.scaling_factor if stored is not None else LATENT_SCALES[family]


# CLIP text encoders by the width of their token embedding: which family's text side each one is.
_TEXT_ENCODER_WIDTHS = {
    768: ("sd1", "a CLIP ViT-L/14 text encoder (768 wide)"),
    1024: ("sd2", "an OpenCLIP ViT-H/14 text encoder (1024 wide)"),
    1280: ("sdxl", "an OpenCLIP ViT-bigG/14 text encoder (1280 wide)"),
}


def detect_text_encoder(
    shapes: Mapping[str, tuple[int, ...]], metadata: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(family, evidence) of a file that holds a text encoder alone (CLIPLoader): a CLIP in the transformers
    layout, with or without `cond_stage_model.transformer.`; a T5 (`encoder.block.*`: SD3, Flux) is "t5"."""
    names = list(shapes)
    if metadata is not None and META_TEXT in metadata:
        return "sd1", "Atelier's text encoder config in the file's metadata"
    if any("encoder.block." in n for n in names):
        return "t5", "a T5 text encoder (encoder.block.*)"
    width = next((s[1] for n, s in shapes.items() if n.endswith("token_embedding.weight") and len(s) == 2), None)
    if width is None:
        return "unknown", ", ".join(sorted(names)[:3]) or "no tensors"
    return _TEXT_ENCODER_WIDTHS.get(width, ("unknown", f"a text encoder {width} wide"))


# The parts of a VAE file, and what VAE training files may carry besides (the GAN/LPIPS loss, EMA copies).
_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_VAE_EXTRAS = ("loss.", "model_ema.")


def vae_names(names: list[str]) -> list[str]:
    """The names of a standalone VAE's weights among `names`, or [] when the file is more (or less) than a VAE."""
    vae = [n for n in names if n.removeprefix(keymap.VAE_PREFIX).startswith(_VAE_PARTS)]
    vae_set = set(vae)
    others = [n for n in names if n not in vae_set and not n.startswith(_VAE_EXTRAS)]
    has_both = any(".encoder." in "." + n for n in vae) and any(".decoder." in "." + n for n in vae)
    return vae if has_both and not others else []


def require_supported(family: str, evidence: str, name: str) -> None:
    """Raise the one-sentence error for a family Atelier cannot run."""
    if family in SUPPORTED_FAMILIES:
        return
    if family == "vae":
        raise CheckpointError(
            f"{name} looks like a standalone VAE (found {evidence}); load it as the VAE of a full checkpoint "
            "(vae_path / --vae)."
        )
    raise CheckpointError(
        f"{name} looks like {FAMILY_NAMES[family]} (found {evidence}); Atelier reads Stable Diffusion 1.x, "
        "2.x and SDXL checkpoints."
    )


# --------------------------------------------------------------------------------------------------------------
# Configs read off the shapes of an SD-layout file (component prefixes removed)
# --------------------------------------------------------------------------------------------------------------


def _shape(shapes: Mapping[str, tuple[int, ...]], name: str, what: str) -> tuple[int, ...]:
    if name not in shapes:
        raise CheckpointError(
            f"{what} is missing the weight {name}; the file is incomplete or of a family Atelier does not read."
        )
    return shapes[name]


def _count(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> int:
    """How many consecutive i make `pattern.format(i)` a key, from 0."""
    i = 0
    while pattern.format(i) in shapes:
        i += 1
    return i


def infer_unet_config(shapes: Mapping[str, tuple[int, ...]], prediction: str = "eps", what: str = "") -> UNetConfig:
    """A UNet config from SD-layout shapes (SD1.x, SD 2.x, SDXL base and refiner).

    The number of attention heads is not visible in the shapes. SD1.x (1x1-conv projections) uses 8 heads
    everywhere; SD 2.x and SDXL (linear projections) 64-wide heads, as their LDM configs say
    (num_head_channels: 64). GroupNorm with 32 groups is assumed. Transformer depths are counted per level, and
    SDXL's `label_emb` gives the width of its vector y.
    """
    what = what or "The UNet"
    conv_in = _shape(shapes, "input_blocks.0.0.weight", what)  # (C0, in, 3, 3)
    blocks = 1 + max((int(n.split(".")[1]) for n in shapes if n.startswith("input_blocks.")), default=0)
    levels = 1 + sum(f"input_blocks.{i}.0.op.weight" in shapes for i in range(blocks))
    n = blocks // levels - 1
    if n < 1 or levels * (n + 1) != blocks:
        raise CheckpointError(f"{what} has {blocks} input blocks for {levels} levels, which is not an SD UNet layout.")
    firsts = [1 + level * (n + 1) for level in range(levels)]  # the first ResNet of each level
    channels = tuple(_shape(shapes, f"input_blocks.{i}.0.out_layers.3.weight", what)[0] for i in firsts)
    attention = tuple(f"input_blocks.{i}.1.proj_in.weight" in shapes for i in firsts)
    depths = tuple(_count(shapes, f"input_blocks.{i}.1.transformer_blocks.{{}}.attn1.to_q.weight") for i in firsts)
    first_attention = next((f"input_blocks.{i}.1" for i, a in zip(firsts, attention, strict=True) if a), None)
    context_dim, linear = 768, False
    if first_attention is not None:
        context_dim = _shape(shapes, f"{first_attention}.transformer_blocks.0.attn2.to_k.weight", what)[1]
        linear = len(_shape(shapes, f"{first_attention}.proj_in.weight", what)) == 2  # (C, C) not (C, C, 1, 1)
    mid = _count(shapes, "middle_block.1.transformer_blocks.{}.attn1.to_q.weight")
    depth, mid_depth = _transformer_depths(depths, attention, mid)
    label = shapes.get("label_emb.0.0.weight")  # (4 * C0, adm_in_channels)
    head_dim = 64 if linear else None  # every SD 2.x and SDXL config: use_linear_in_transformer, num_head_channels 64
    return UNetConfig(
        in_channels=conv_in[1],
        out_channels=_shape(shapes, "out.2.weight", what)[0],
        block_channels=channels,
        layers_per_block=n,
        cross_attention_levels=attention,
        attention_heads=8,
        attention_head_dim=head_dim,
        transformer_depth=depth,
        mid_transformer_depth=mid_depth,
        linear_projection=linear,
        context_dim=context_dim,
        adm_in_channels=label[1] if label is not None else None,
        prediction=prediction,
    )


def _transformer_depths(
    depths: tuple[int, ...], attention: tuple[bool, ...], mid: int
) -> tuple[int | tuple[int, ...], int | None]:
    """(transformer_depth, mid_transformer_depth) from the blocks counted per level and in the middle."""
    used = {d for d, a in zip(depths, attention, strict=True) if a}  # depths of the levels with transformers
    uniform = next(iter(used)) if len(used) == 1 else None
    if uniform is not None and mid == uniform:
        return uniform, None  # SD1.x, SD 2.x: 1 everywhere; SDXL refiner: 4 everywhere
    if not used:
        return mid or 1, None  # transformers in the middle only
    return depths, None if mid == depths[-1] else mid  # SDXL base: 0, 2, 10 per level, and 10 in the middle


def infer_diffusers_unet_config(
    shapes: Mapping[str, tuple[int, ...]], prediction: str = "eps", what: str = ""
) -> UNetConfig:
    """A UNet config from the shapes of a diffusers-layout SD 2.x or SDXL UNet file (down_blocks.*, no config.json
    beside it): the same reading as `infer_unet_config`, on diffusers' names (which are Atelier's). 64-wide heads
    and 256 values per size number in SDXL's y are assumed, as every SD 2.x and SDXL config has them."""
    what = what or "The UNet"
    conv_in = _shape(shapes, "conv_in.weight", what)  # (C0, in, 3, 3)
    levels = _count(shapes, "down_blocks.{}.resnets.0.conv1.weight")
    n = _count(shapes, "down_blocks.0.resnets.{}.conv1.weight")
    if levels < 1 or n < 1:
        raise CheckpointError(f"{what} has no down_blocks.N.resnets.M, which is not a diffusers UNet layout.")
    channels = tuple(_shape(shapes, f"down_blocks.{i}.resnets.0.conv2.weight", what)[0] for i in range(levels))
    attention = tuple(f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes for i in range(levels))
    depths = tuple(
        _count(shapes, f"down_blocks.{i}.attentions.0.transformer_blocks.{{}}.attn1.to_q.weight") for i in range(levels)
    )
    mid = _count(shapes, "mid_block.attentions.0.transformer_blocks.{}.attn1.to_q.weight")
    first = next((i for i, a in enumerate(attention) if a), None)
    context_dim, linear = 768, False
    if first is not None:
        block = f"down_blocks.{first}.attentions.0"
        context_dim = _shape(shapes, f"{block}.transformer_blocks.0.attn2.to_k.weight", what)[1]
        linear = len(_shape(shapes, f"{block}.proj_in.weight", what)) == 2
    depth, mid_depth = _transformer_depths(depths, attention, mid)
    label = shapes.get("add_embedding.linear_1.weight")  # (4 * C0, adm_in_channels)
    return UNetConfig(
        in_channels=conv_in[1],
        out_channels=_shape(shapes, "conv_out.weight", what)[0],
        block_channels=channels,
        layers_per_block=n,
        cross_attention_levels=attention,
        attention_head_dim=64 if linear else None,
        transformer_depth=depth,
        mid_transformer_depth=mid_depth,
        linear_projection=linear,
        context_dim=context_dim,
        adm_in_channels=label[1] if label is not None else None,
        prediction=prediction,
    )


def family_variant(family: str, unet: UNetConfig | None = None) -> str:
    """The name people use for what was found: "SD1.x", "SD2.x-v", "SD2.x-base", "SDXL base", "SDXL refiner".

    SD 2.x's 768-v and 512-base share every shape; only the prediction target tells them apart. SDXL's refiner
    is told from the base by its vector y: 2560 wide (pooled + 5 numbers, one the aesthetic score) vs 2816.
    """
    if family == "sd1":
        return "SD1.x"
    if family == "sd1-inpaint":
        return "SD1.x inpainting"
    if family == "sd2":
        return "SD2.x-v" if unet is not None and unet.prediction == "v" else "SD2.x-base"
    if family == "sdxl":
        return "SDXL refiner" if unet is not None and unet.adm_in_channels == 2560 else "SDXL base"
    return FAMILY_NAMES.get(family, family)


def infer_vae_config(shapes: Mapping[str, tuple[int, ...]], what: str = "") -> VAEConfig:
    """A VAE config from SD-layout shapes (GroupNorm with 32 groups and the SD1.x scaling factor are assumed)."""
    what = what or "The VAE"
    levels = _count(shapes, "encoder.down.{}.block.0.conv1.weight")
    n = _count(shapes, "encoder.down.0.block.{}.conv1.weight")
    if levels == 0 or n == 0:
        raise CheckpointError(f"{what} is missing the weight encoder.down.0.block.0.conv1.weight; it is not a VAE.")
    return VAEConfig(
        in_channels=_shape(shapes, "encoder.conv_in.weight", what)[1],
        latent_channels=_shape(shapes, "decoder.conv_in.weight", what)[1],
        block_channels=tuple(_shape(shapes, f"encoder.down.{i}.block.0.conv2.weight", what)[0] for i in range(levels)),
        layers_per_block=n,
    )


def infer_text_encoder_config(
    shapes: Mapping[str, tuple[int, ...]], what: str = "", activation: str = "quick_gelu"
) -> TextEncoderConfig:
    """A CLIP text config from shapes (our names). Heads are 64 wide in every CLIP model, so heads = width / 64.
    The activation is not in the shapes: OpenAI's towers use quick_gelu, OpenCLIP's (ViT-H, bigG) exact "gelu"."""
    what = what or "The text encoder"
    shapes = keymap.text_encoder_names(shapes)
    vocab, width = _shape(shapes, "text_model.embeddings.token_embedding.weight", what)
    projection = shapes.get("text_projection.weight")
    return TextEncoderConfig(
        vocab_size=vocab,
        max_positions=_shape(shapes, "text_model.embeddings.position_embedding.weight", what)[0],
        width=width,
        layers=_count(shapes, "text_model.encoder.layers.{}.self_attn.q_proj.weight"),
        heads=max(1, width // 64),
        mlp_width=_shape(shapes, "text_model.encoder.layers.0.mlp.fc1.weight", what)[0],
        projection_dim=projection[0] if projection is not None else None,
        activation=activation,
    )


def infer_diffusers_vae_config(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """A VAE config from the shapes of a diffusers-named VAE file (no config.json beside it)."""
    levels = _count(shapes, "encoder.down_blocks.{}.resnets.0.conv1.weight")
    return VAEConfig(
        in_channels=shapes["encoder.conv_in.weight"][1],
        latent_channels=shapes["decoder.conv_in.weight"][1],
        block_channels=tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] for i in range(levels)),
        layers_per_block=_count(shapes, "encoder.down_blocks.0.resnets.{}.conv1.weight"),
    )


def parameter_counts(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Number of values in tensors of these shapes."""
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


# --------------------------------------------------------------------------------------------------------------
# What a reader hands over
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configs:
    """The three configs of a model and where they were found."""

    unet: UNetConfig
    vae: VAEConfig | None  # None when the file holds no VAE
    text_encoder: TextEncoderConfig
    origin: str  # "file metadata", "tensor shapes" or "config.json files"


@dataclass
class Parts:
    """Weights in our names and their configs, before any module is built."""

    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor] | None
    text_encoder: dict[str, torch.Tensor]
    unet_config: UNetConfig
    vae_config: VAEConfig | None
    text_encoder_config: TextEncoderConfig
    family: str
    tokenizer_dir: Path | None = None


@dataclass
class FamilyParts:
    """An SD 2.x or SDXL single file read into our names: one UNet, one VAE, and one or two text towers.

    text_encoders / text_encoder_configs are keyed by tower: "clip_h" (SD 2.x's OpenCLIP ViT-H), or "clip_l" and
    "clip_g" (SDXL base; the refiner has "clip_g" only).
    """

    family: str  # "sd2" or "sdxl"
    variant: str  # family_variant's name: "SD2.x-v", "SDXL base", ...
    unet: dict[str, torch.Tensor]
    unet_config: UNetConfig
    vae: dict[str, torch.Tensor] | None
    vae_config: VAEConfig | None
    text_encoders: dict[str, dict[str, torch.Tensor]]
    text_encoder_configs: dict[str, TextEncoderConfig]


def infer_open_clip_config(
    shapes: Mapping[str, tuple[int, ...]], projection: bool, what: str = ""
) -> TextEncoderConfig:
    """An OpenCLIP text tower's config from its open_clip-layout shapes (prefix removed). Exact GELU, 64-wide heads."""
    what = what or "The OpenCLIP text encoder"
    vocab, width = _shape(shapes, "token_embedding.weight", what)
    proj = shapes.get("text_projection")  # (W, P)
    return TextEncoderConfig(
        vocab_size=vocab,
        max_positions=_shape(shapes, "positional_embedding", what)[0],
        width=width,
        layers=_count(shapes, "transformer.resblocks.{}.attn.in_proj_weight"),
        heads=max(1, width // 64),
        mlp_width=_shape(shapes, "transformer.resblocks.0.mlp.c_fc.weight", what)[0],
        activation="gelu",
        projection_dim=proj[1] if projection and proj is not None else None,
    )
