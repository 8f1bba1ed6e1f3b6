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

_SPLIT_DETAILS = {
    "unet-diffusers": "re-save it in the original SD layout (input_blocks.*), or load the diffusers folder whole",
    "vae": "load it with VAELoader",
    "lora": "load it with LoraLoader",
}


def _require_split(family: str, evidence: str, name: str, what: str) -> None:
    """The one-sentence refusal of a split file whose family Atelier cannot run (or that is another kind)."""
    if family in SUPPORTED_FAMILIES:
        return
    whole = "Atelier loads SD 2.x and SDXL from whole checkpoints for now, split files for Stable Diffusion 1.x only"
    detail = _SPLIT_DETAILS.get(family, whole if family in ("sd2", "sdxl") else
                                "Atelier loads split files for Stable Diffusion 1.x only")  # fmt: skip
    raise CheckpointError(
        f"{name} is not {what} Atelier can load: it looks like {FAMILY_NAMES[family]} (found {evidence}); {detail}."
    )


def _part(names: list[str], prefix: str) -> list[str]:
    """The names of one network: those under `prefix` when the file is a whole checkpoint, else all of them."""
    under = [n for n in names if n.startswith(prefix)]
    return under or names


def read_diffusion_model(path: str | Path, dtype: torch.dtype | None = None) -> tuple[UNetConfig, dict, str]:
    """(config, weights in our names, family) of a diffusion model file (models/diffusion_models): the UNet's
    names in the SD layout, with or without `model.diffusion_model.` (a whole checkpoint gives its UNet)."""
    file = WeightsFile(path)
    names = _part(list(file.index.shapes), keymap.UNET_PREFIX)
    shapes = {n.removeprefix(keymap.UNET_PREFIX): file.index.shapes[n] for n in names}
    family, evidence = detect_diffusion_model(shapes, file.index.metadata)
    _require_split(family, evidence, file.name, "a diffusion model")
    config = metadata_config(UNetConfig, file.index.metadata, META_UNET, file.name) or infer_unet_config(
        shapes, prediction_type(file.path, file.index.shapes), f"{file.name}: the UNet"
    )
    state = {n.removeprefix(keymap.UNET_PREFIX): t for n, t in file.read(names, dtype).items()}
    return config, _renamed(file.name, keymap.unet_from_sd, state, config), family


# Tensors a CLIP file may carry that the text encoder does not use: CLIP's contrastive temperature.
_TEXT_EXTRAS = ("logit_scale",)


def read_text_encoder(path: str | Path, dtype: torch.dtype | None = None) -> tuple[TextEncoderConfig, dict, str]:
    """(config, weights in our names, family) of a text encoder file (models/text_encoders): a CLIP in the
    transformers layout (text_model.*), with or without `cond_stage_model.transformer.`."""
    file = WeightsFile(path)
    names = [n for n in _part(list(file.index.shapes), keymap.TEXT_PREFIX) if n not in _TEXT_EXTRAS]
    shapes = {n.removeprefix(keymap.TEXT_PREFIX): file.index.shapes[n] for n in names}
    family, evidence = detect_text_encoder(shapes, file.index.metadata)
    _require_split(family, evidence, file.name, "a text encoder")
    config = metadata_config(TextEncoderConfig, file.index.metadata, META_TEXT, file.name) or (
        infer_text_encoder_config(shapes, f"{file.name}: the text encoder")
    )
    state = {n.removeprefix(keymap.TEXT_PREFIX): t for n, t in file.read(names, dtype).items()}
    return config, _renamed(file.name, keymap.text_encoder_from_sd, state, config), family
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
    spread > 0.09 (output_blocks.11.1.transformer_blocks.0.norm1.bias), the base model's is tighter."""
    if prediction_type(file.path, shapes) == "v":
        return "v"
    probe = keymap.UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
    if probe in shapes:
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
