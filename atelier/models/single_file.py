"""Reading a single-file model: `.safetensors`, or a legacy pickle `.ckpt/.pt/.pth/.bin`, in the original SD layout.

This is the format A1111 and ComfyUI share. One file holds the three networks under the names of the CompVis/LDM
code (Rombach et al. 2022), each under its prefix:

    model.diffusion_model.*           the UNet
    first_stage_model.*               the VAE (a checkpoint may leave it out: then a VAE file is given beside it)
    cond_stage_model.transformer.*    the CLIP text encoder
    model_ema.*, alphas_cumprod, ...  EMA copies and noise-schedule buffers, not read

The header is read first (names, shapes, dtypes; weights.py), then only the tensors needed, converted to the target
dtype, then renamed to our layout (keymap.py). A standalone VAE (vae-ft-mse-840000-ema-pruned, or a diffusers
AutoencoderKL file) is read by `read_vae`.

Pickles: `.ckpt` files are Python pickles, which can run arbitrary code when opened. Atelier opens them only with
`torch.load(weights_only=True)` (weights.py), which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.detect import (
    FAMILY_NAMES,
    META_TEXT,
    META_UNET,
    META_VAE,
    SUPPORTED_FAMILIES,
    Configs,
    FamilyParts,
    Parts,
    detect_diffusion_model,
    detect_family,
    detect_text_encoder,
    family_variant,
    infer_diffusers_unet_config,
    infer_diffusers_vae_config,
    infer_open_clip_config,
    infer_text_encoder_config,
    infer_unet_config,
    infer_vae_config,
    metadata_config,
    require_supported,
    vae_names,
)
from atelier.models.weights import WeightsFile

log = logging.getLogger(__name__)


def prediction_type(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The prediction target: "v" when the model says it predicts velocity (Salimans & Ho 2022), else "eps".

    SD files do not record this in the weights; the signs used are a sibling .yaml (model.params.parameterization:
    "v", as A1111 reads it) and a `v_pred` marker tensor (as ComfyUI reads it)."""
    if "v_pred" in shapes:
        return "v"
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        import yaml

        try:
            data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
            if data["model"]["params"].get("parameterization") == "v":
                return "v"
        except (yaml.YAMLError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            log.warning("%s could not be read as an LDM config; assuming noise (eps) prediction.", yaml_path.name)
    return "eps"


def single_file_configs(file: WeightsFile) -> Configs:
    """Configs of an SD1.x single file: those in our metadata where present, else read off the tensor shapes."""
    shapes, meta, name = file.index.shapes, file.index.metadata, file.name
    split = keymap.split_checkpoint(shapes)
    unet = metadata_config(UNetConfig, meta, META_UNET, name) or infer_unet_config(
        split["unet"], prediction_type(file.path, shapes), f"{name}: the UNet"
    )
    text = metadata_config(TextEncoderConfig, meta, META_TEXT, name) or infer_text_encoder_config(
        split["text_encoder"], f"{name}: the text encoder"
    )
    vae = None
    if split["vae"]:
        vae = metadata_config(VAEConfig, meta, META_VAE, name) or infer_vae_config(split["vae"], f"{name}: the VAE")
    return Configs(unet, vae, text, "file metadata" if META_UNET in meta else "tensor shapes")


def read_single_file(path: Path, dtype: torch.dtype, need_vae: bool) -> Parts:
    """The weights (in `dtype`, our names) and configs of an SD1.x single file; the VAE only when `need_vae`."""
    file = WeightsFile(path)
    family, evidence = detect_family(file.index.shapes, file.index.metadata)
    require_supported(family, evidence, file.name)
    configs = single_file_configs(file)
    if need_vae and configs.vae is None:
        raise CheckpointError(f"{file.name} has no VAE (first_stage_model.*); give a VAE file with vae_path / --vae.")

    prefixes = (keymap.UNET_PREFIX, keymap.TEXT_PREFIX) + ((keymap.VAE_PREFIX,) if need_vae else ())
    tensors = keymap.split_checkpoint(file.read([n for n in file.index.shapes if n.startswith(prefixes)], dtype))
    return Parts(
        unet=_renamed(file.name, keymap.unet_from_sd, tensors["unet"], configs.unet),
        vae=_renamed(file.name, keymap.vae_from_sd, tensors["vae"], configs.vae) if need_vae else None,
        text_encoder=_renamed(file.name, keymap.text_encoder_from_sd, tensors["text_encoder"], configs.text_encoder),
        unet_config=configs.unet,
        vae_config=configs.vae if need_vae else None,
        text_encoder_config=configs.text_encoder,
        family=family,
    )


def _renamed(name: str, rename: Callable[..., dict], *args: Any) -> dict:
    """`rename(*args)`, a keymap function, with the file's name put in front of its errors."""
    try:
        return rename(*args)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None


def read_vae(path: str | Path, dtype: torch.dtype | None = None) -> tuple[VAEConfig, dict[str, torch.Tensor]]:
    """A VAE file's config and weights (our names). Accepts the SD layout (encoder.*, decoder.*, as in
    vae-ft-mse-840000-ema-pruned), the same under first_stage_model., diffusers AutoencoderKL files
    (encoder.down_blocks.*), and a full SD1.x checkpoint (its VAE is taken)."""
    file = WeightsFile(path)
    names = vae_names(list(file.index.shapes))
    if not names:
        family, evidence = detect_family(file.index.shapes)
        if family not in SUPPORTED_FAMILIES:
            raise CheckpointError(f"{file.name} is not a VAE: it looks like {FAMILY_NAMES[family]} (found {evidence}).")
        names = [n for n in file.index.shapes if n.startswith(keymap.VAE_PREFIX)]
        if not names:
            raise CheckpointError(f"{file.name} has no VAE (first_stage_model.*).")
    shapes = _renamed(file.name, keymap.vae_without_prefix, {n: file.index.shapes[n] for n in names})
    state = keymap.vae_without_prefix(file.read(names, dtype))
    stored = metadata_config(VAEConfig, file.index.metadata, META_VAE, file.name)
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in shapes:  # diffusers names
        return stored or infer_diffusers_vae_config(shapes), keymap.vae_from_diffusers(state)
    config = stored or infer_vae_config(shapes, f"{file.name}: the VAE")
    return config, _renamed(file.name, keymap.vae_from_sd, state, config)


# --------------------------------------------------------------------------------------------------------------
# Split files: a diffusion model or a text encoder alone (UNETLoader, CLIPLoader)
# --------------------------------------------------------------------------------------------------------------

# The families whose networks Atelier loads from split files (UNETLoader, CLIPLoader, DualCLIPLoader).
SPLIT_FAMILIES = (*SUPPORTED_FAMILIES, "sd2", "sdxl")
_SPLIT_DETAILS = {
    "unet-diffusers": "re-save it in the original SD layout (input_blocks.*), or load the diffusers folder whole",
    "vae": "load it with VAELoader",
    "lora": "load it with LoraLoader",
}


def _require_split(family: str, evidence: str, name: str, what: str) -> None:
    """The one-sentence refusal of a split file whose family Atelier cannot run (or that is another kind)."""
    if family in SPLIT_FAMILIES:
        return
    detail = _SPLIT_DETAILS.get(family, "Atelier loads split files of Stable Diffusion 1.x, 2.x and SDXL")
    raise CheckpointError(
        f"{name} is not {what} Atelier can load: it looks like {FAMILY_NAMES[family]} (found {evidence}); {detail}."
    )


def _part(names: list[str], prefix: str) -> list[str]:
    """The names of one network: those under `prefix` when the file is a whole checkpoint, else all of them."""
    under = [n for n in names if n.startswith(prefix)]
    return under or names


def read_diffusion_model(path: str | Path, dtype: torch.dtype | None = None) -> tuple[UNetConfig, dict, str]:
    """(config, weights in our names, family) of a diffusion model file (models/diffusion_models) of SD1.x, SD 2.x
    or SDXL (base or refiner), in the layouts people have: the UNet's SD names with or without
    `model.diffusion_model.` (ComfyUI's files; a whole checkpoint gives its UNet), or diffusers' names (a
    `diffusion_pytorch_model.safetensors` taken out of a diffusers folder, its config.json left behind).

    The prediction target is not in the weights. As ComfyUI does for a UNet-only file (comfy/sd.py
    load_diffusion_model -> model_detection -> supported_models.SD20.model_type): SD 2.x predicts velocity when a
    `v_pred` marker or a sibling .yaml says so, or when its last transformer's LayerNorm bias is spread wide
    (`sd2_velocity_by_norm`); otherwise noise. ModelSamplingDiscrete (v_prediction) overrides the guess."""
    file = WeightsFile(path)
    names = _part(list(file.index.shapes), keymap.UNET_PREFIX)
    shapes = {n.removeprefix(keymap.UNET_PREFIX): file.index.shapes[n] for n in names}
    family, evidence = detect_diffusion_model(shapes, file.index.metadata)
    _require_split(family, evidence, file.name, "a diffusion model")
    prediction = prediction_type(file.path, file.index.shapes)
    state = {n.removeprefix(keymap.UNET_PREFIX): t for n, t in file.read(names, dtype).items()}
    state.pop("v_pred", None)
    diffusers = "conv_in.weight" in shapes
    if diffusers:  # diffusers' names are Atelier's: only the config has to be read off the shapes
        config = infer_diffusers_unet_config(shapes, prediction, f"{file.name}: the UNet")
    else:
        config = metadata_config(UNetConfig, file.index.metadata, META_UNET, file.name) or infer_unet_config(
            shapes, prediction, f"{file.name}: the UNet"
        )
        state = _renamed(file.name, keymap.unet_from_sd, state, config)
    if family == "sd2" and prediction == "eps" and sd2_velocity_by_norm(state, config):
        config = dataclasses.replace(config, prediction="v")
    return config, state, family


def sd2_velocity_by_norm(state: Mapping[str, torch.Tensor], config: UNetConfig) -> bool:
    """ComfyUI's test for SD 2.x 768-v (comfy/supported_models.py, SD20.model_type): the LayerNorm bias of the
    last transformer of the up path (LDM's output_blocks.11.1.transformer_blocks.0.norm1.bias, ours
    up_blocks.3.attentions.2...) has a spread (population std) above 0.09 in the v model, below in the base."""
    levels, n = len(config.block_channels), config.layers_per_block
    bias = state.get(f"up_blocks.{levels - 1}.attentions.{n}.transformer_blocks.0.norm1.bias")
    return bias is not None and torch.std(bias.float(), unbiased=False).item() > 0.09


# Tensors a CLIP file may carry that the text encoder does not use: CLIP's contrastive temperature.
_TEXT_EXTRAS = ("logit_scale",)


def read_text_encoder(path: str | Path, dtype: torch.dtype | None = None) -> tuple[TextEncoderConfig, dict, str]:
    """(config, weights in our names, family) of a text encoder file (models/text_encoders): a CLIP in the
    transformers layout (text_model.*), with or without `cond_stage_model.transformer.`."""
    file = WeightsFile(path)
    names = [n for n in _part(list(file.index.shapes), keymap.TEXT_PREFIX) if n not in _TEXT_EXTRAS]
    shapes = {n.removeprefix(keymap.TEXT_PREFIX): file.index.shapes[n] for n in names}
    family, evidence = detect_text_encoder(shapes, file.index.metadata)
    if family in ("sd2", "sdxl"):
        raise CheckpointError(
            f"{file.name} is not a Stable Diffusion 1.x text encoder: it looks like {FAMILY_NAMES[family]} (found "
            f"{evidence}); load it with CLIPLoader's type sd2 (ViT-H) or DualCLIPLoader's type sdxl (bigG)."
        )
    _require_split(family, evidence, file.name, "a text encoder")
    config = metadata_config(TextEncoderConfig, file.index.metadata, META_TEXT, file.name) or (
        infer_text_encoder_config(shapes, f"{file.name}: the text encoder")
    )
    state = {n.removeprefix(keymap.TEXT_PREFIX): t for n, t in file.read(names, dtype).items()}
    return config, _renamed(file.name, keymap.text_encoder_from_sd, state, config), family


# The text towers of SD 2.x and SDXL as split files (CLIPLoader type sd2, DualCLIPLoader type sdxl). ComfyUI ships
# them in transformers' names (clip_l.safetensors: CLIPTextModel; clip_g.safetensors: CLIPTextModelWithProjection,
# `text_projection.weight`); a tower cut out of a checkpoint keeps open_clip's names (transformer.resblocks.*).
# The prefixes a whole checkpoint puts in front of a tower, removed when present.
_TOWER_PREFIXES = (
    keymap.SD2_TEXT_PREFIX,
    keymap.SDXL_CLIP_G_PREFIX,
    keymap.REFINER_CLIP_G_PREFIX,
    keymap.SDXL_CLIP_L_PREFIX,
    keymap.TEXT_PREFIX,
)
_OPEN_CLIP_SIGN = "transformer.resblocks.0.attn.in_proj_weight"
# Each tower: the family detect_text_encoder names for its width, and what it is called in an error.
_TOWER_FAMILIES = {
    "clip_h": ("sd2", "the OpenCLIP ViT-H/14 text encoder of SD 2.x"),
    "clip_g": ("sdxl", "the OpenCLIP ViT-bigG/14 text encoder of SDXL"),
    "clip_l": ("sd1", "the CLIP ViT-L/14 text encoder of SDXL"),
}


def _tower_names(names: list[str]) -> dict[str, str]:
    """{name in the file: name without the tower's prefix} for the one tower a text encoder file holds."""
    for prefix in _TOWER_PREFIXES:
        under = [n for n in names if n.startswith(prefix)]
        if under:
            return {n: n.removeprefix(prefix) for n in under if n.removeprefix(prefix) not in _TEXT_EXTRAS}
    return {n: n for n in names if n not in _TEXT_EXTRAS}


def text_tower_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shapes of the tower a text encoder file holds, its prefix removed (for telling CLIP-L from bigG)."""
    file = WeightsFile(path)
    return {short: file.index.shapes[n] for n, short in _tower_names(list(file.index.shapes)).items()}


def is_big_g(shapes: Mapping[str, tuple[int, ...]]) -> bool | None:
    """Whether a tower is SDXL's OpenCLIP bigG (True), OpenAI's CLIP-L (False), or its shapes do not say (None).
    ComfyUI tells them by depth (a 31st layer says bigG's 32: comfy/sdxl_clip.py, SDXLClipModel.load_sd); widths
    1280 and 768, and open_clip's names (only bigG ships in them), say it too."""
    if _OPEN_CLIP_SIGN in shapes:
        return True
    shapes = keymap.text_encoder_names(shapes)
    width = next((s[1] for n, s in shapes.items() if n.endswith("token_embedding.weight") and len(s) == 2), None)
    if width == 1280 or "text_model.encoder.layers.30.mlp.fc1.weight" in shapes:
        return True
    return False if width == 768 else None


def is_vit_h(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether a tower is SD 2.x's OpenCLIP ViT-H/14: 1024 wide, or 24 layers deep (ComfyUI: a 23rd layer and no
    31st, comfy/sd.py detect_te_model)."""
    names = keymap.text_encoder_names(shapes)
    width = next((s[1] for n, s in shapes.items() if n.endswith("token_embedding.weight") and len(s) == 2), None)
    deep = "text_model.encoder.layers.22.mlp.fc1.weight" in names
    return width == 1024 or (deep and "text_model.encoder.layers.30.mlp.fc1.weight" not in names)


def read_text_tower(
    path: str | Path, tower: str, dtype: torch.dtype | None = None
) -> tuple[TextEncoderConfig, dict[str, torch.Tensor]]:
    """(config, weights in our names) of one text tower file of SD 2.x or SDXL: "clip_h" (SD 2.x's OpenCLIP
    ViT-H), "clip_g" (SDXL's bigG, with the projection of its pooled vector) or "clip_l" (SDXL's CLIP-L), in
    open_clip's names or transformers', with or without a whole checkpoint's prefix. ViT-H and bigG use exact
    GELU, CLIP-L quick GELU; ViT-H's projection is dropped, as the whole checkpoint's is (SD 2.x never reads the
    pooled vector)."""
    file = WeightsFile(path)
    renames = _tower_names(list(file.index.shapes))
    shapes = {short: file.index.shapes[n] for n, short in renames.items()}
    family, evidence = detect_text_encoder(shapes)
    if family not in ("sd1", "sd2", "sdxl", "unknown"):  # "unknown": a width no published tower has (test sizes)
        _require_split(family, evidence, file.name, "a text encoder")
    expected = _TOWER_FAMILIES[tower]
    if family in ("sd1", "sd2", "sdxl") and family != expected[0]:
        raise CheckpointError(f"{file.name} is not {expected[1]}: it looks like {evidence}.")
    state = {renames[n]: t for n, t in file.read(list(renames), dtype).items()}
    what = f"{file.name}: the text encoder {tower}"
    projection = tower == "clip_g"
    if _OPEN_CLIP_SIGN in shapes:
        config = infer_open_clip_config(shapes, projection, what)
        return config, _renamed(file.name, keymap.text_encoder_from_open_clip, state, projection)
    state = keymap.text_encoder_names(state)
    if not projection:
        state.pop("text_projection.weight", None)  # CLIP-L's and ViT-H's: the UNet never reads their pooled vector
    activation = "quick_gelu" if tower == "clip_l" else "gelu"
    config = infer_text_encoder_config({k: tuple(v.shape) for k, v in state.items()}, what, activation)
    if projection and config.projection_dim is None:
        raise CheckpointError(f"{what} has no text_projection; SDXL's bigG needs it for its pooled vector.")
    return config, _renamed(file.name, keymap.text_encoder_from_sd, state, config)


# --------------------------------------------------------------------------------------------------------------
# SD 2.x and SDXL single files
# --------------------------------------------------------------------------------------------------------------

SDXL_SCALING_FACTOR = 0.13025  # SDXL's VAE: same network as SD's, retrained; its latents need this scale
# Where each family keeps its text towers, and in which layout: "hf" (transformers' names) or "open_clip".
_TOWERS = {
    "sd2": {"clip_h": (keymap.SD2_TEXT_PREFIX, "open_clip")},
    "sdxl": {"clip_l": (keymap.SDXL_CLIP_L_PREFIX, "hf"), "clip_g": (keymap.SDXL_CLIP_G_PREFIX, "open_clip")},
    "sdxl-refiner": {"clip_g": (keymap.REFINER_CLIP_G_PREFIX, "open_clip")},
}


def _towers(family: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[str, str]]:
    refiner = family == "sdxl" and not any(n.startswith(keymap.SDXL_CLIP_G_PREFIX) for n in shapes)
    return _TOWERS["sdxl-refiner" if refiner else family]


def family_prefixes(family: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """Component -> prefix in an SD 2.x / SDXL file: "unet", "vae", then "clip_h" or "clip_l"/"clip_g"."""
    towers = {tower: prefix for tower, (prefix, _) in _towers(family, shapes).items()}
    return {"unet": keymap.UNET_PREFIX, "vae": keymap.VAE_PREFIX, **towers}


def sd2_prediction(file: WeightsFile, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """SD 2.x 768-v vs 512-base: a .yaml or a v_pred marker when there is one; else ComfyUI's test
    (comfy/supported_models.py, SD20.model_type): the 768-v model's last transformer has a LayerNorm bias of
    spread > 0.09 (output_blocks.11.1.transformer_blocks.0.norm1.bias), the base model's is tighter. The last
    output block with a transformer is probed (11 in every real SD 2.x; smaller test models have fewer)."""
    if prediction_type(file.path, shapes) == "v":
        return "v"
    template = keymap.UNET_PREFIX + "output_blocks.{}.1.transformer_blocks.0.norm1.bias"
    last = max((i for i in range(64) if template.format(i) in shapes), default=None)
    if last is not None:
        probe = template.format(last)
        bias = file.read([probe], torch.float32)[probe]
        if torch.std(bias, unbiased=False).item() > 0.09:
            return "v"
    return "eps"


def read_family_single_file(path: Path, dtype: torch.dtype, need_vae: bool = True) -> FamilyParts:
    """The weights (in `dtype`, our names) and configs of an SD 2.x or SDXL (base or refiner) single file."""
    file = WeightsFile(path)
    shapes = file.index.shapes
    family, evidence = detect_family(shapes, file.index.metadata)
    if family not in _TOWERS:
        raise CheckpointError(
            f"{file.name} looks like {FAMILY_NAMES[family]} (found {evidence}); expected an SD 2.x or SDXL checkpoint."
        )
    towers = _towers(family, shapes)
    prefixes = family_prefixes(family, shapes)
    if not need_vae:
        del prefixes["vae"]
    split_shapes = keymap.split_by_prefix(shapes, prefixes)
    prediction = sd2_prediction(file, shapes) if family == "sd2" else prediction_type(file.path, shapes)
    unet_config = infer_unet_config(split_shapes["unet"], prediction, f"{file.name}: the UNet")

    vae_config = None
    if need_vae:
        if not split_shapes["vae"]:
            raise CheckpointError(f"{file.name} has no VAE (first_stage_model.*); give a VAE file beside it.")
        vae_config = infer_vae_config(split_shapes["vae"], f"{file.name}: the VAE")
        if family == "sdxl":
            vae_config = dataclasses.replace(vae_config, scaling_factor=SDXL_SCALING_FACTOR)

    wanted = [n for n in shapes if n.startswith(tuple(prefixes.values()))]
    tensors = keymap.split_by_prefix(file.read(wanted, dtype), prefixes)
    texts, text_configs = {}, {}
    for tower, (_, layout) in towers.items():
        what = f"{file.name}: the text encoder {tower}"
        if layout == "open_clip":
            projection = tower == "clip_g"  # bigG's pooled vector is projected for SDXL; SD 2.x never reads it
            text_configs[tower] = infer_open_clip_config(split_shapes[tower], projection, what)
            texts[tower] = _renamed(file.name, keymap.text_encoder_from_open_clip, tensors[tower], projection)
        else:
            text_configs[tower] = infer_text_encoder_config(split_shapes[tower], what)
            texts[tower] = _renamed(file.name, keymap.text_encoder_from_sd, tensors[tower], text_configs[tower])
    return FamilyParts(
        family=family,
        variant=family_variant(family, unet_config),
        unet=_renamed(file.name, keymap.unet_from_sd, tensors["unet"], unet_config),
        unet_config=unet_config,
        vae=_renamed(file.name, keymap.vae_from_sd, tensors["vae"], vae_config) if need_vae else None,
        vae_config=vae_config,
        text_encoders=texts,
        text_encoder_configs=text_configs,
    )
