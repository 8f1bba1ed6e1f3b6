"""Reading a diffusers model folder: configs from each component's config.json, weights already in our names.

    model_index.json                    which pipeline the folder holds (StableDiffusionPipeline for SD1.x)
    scheduler/scheduler_config.json     prediction_type: "epsilon" (noise) or "v_prediction" (velocity)
    unet/          config.json + diffusion_pytorch_model.safetensors (or .fp16.safetensors, .bin)
    vae/           config.json + diffusion_pytorch_model.safetensors
    text_encoder/  config.json + model.safetensors
    tokenizer/     vocab.json + merges.txt

Atelier's modules use the diffusers / transformers names, so no table is needed: only the names older diffusers and
transformers versions wrote are brought up to date (keymap.vae_from_diffusers, keymap.text_encoder_names). The
config.json fields are translated into Atelier's configs here, also for save_checkpoint, which takes diffusers
modules as well as ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.detect import Configs, FamilyParts, Parts, family_variant, require_supported
from atelier.models.weights import WeightsFile

# --------------------------------------------------------------------------------------------------------------
# config.json -> our configs
# --------------------------------------------------------------------------------------------------------------


def _single(value: Any, field: str, folder: str) -> int:
    """A diffusers field that may be one int or a list of them; Atelier's configs take one value for all levels."""
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise CheckpointError(
                f"{folder}/unet/config.json has {field}={value}; Atelier needs one value for all levels."
            )
        return int(value[0])
    return int(value)


def unet_config_from_diffusers(cfg: Mapping[str, Any], folder: str = "model", prediction: str = "eps") -> UNetConfig:
    """Our UNetConfig from a diffusers UNet2DConditionModel config.json (SD1.x settings only)."""
    context = cfg.get("cross_attention_dim", 768)
    if cfg.get("addition_embed_type") or context in (1280, 2048):
        require_supported("sdxl", f"cross_attention_dim {context} in unet/config.json", folder)
    if context == 1024 or cfg.get("use_linear_projection"):
        require_supported("sd2", f"cross_attention_dim {context} in unet/config.json", folder)
    for field in ("class_embed_type", "time_cond_proj_dim", "encoder_hid_dim", "num_class_embeds"):
        if cfg.get(field) is not None:
            raise CheckpointError(f"{folder}/unet/config.json sets {field}, which SD1.x UNets do not use.")
    # diffusers' `attention_head_dim` historically holds the number of heads for SD1.x; `num_attention_heads`
    # (newer files) says the same when present.
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    return UNetConfig(
        in_channels=cfg.get("in_channels", 4),
        out_channels=cfg.get("out_channels", 4),
        block_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=_single(cfg.get("layers_per_block", 2), "layers_per_block", folder),
        cross_attention_levels=tuple("CrossAttn" in t for t in cfg["down_block_types"]),
        attention_heads=_single(heads, "attention_head_dim", folder),
        transformer_depth=_single(cfg.get("transformer_layers_per_block", 1), "transformer_layers_per_block", folder),
        context_dim=context,
        norm_groups=cfg.get("norm_num_groups", 32),
        norm_eps=cfg.get("norm_eps", 1e-5),
        prediction=prediction,
    )


def vae_config_from_diffusers(cfg: Mapping[str, Any], folder: str = "model") -> VAEConfig:
    """Our VAEConfig from a diffusers AutoencoderKL config.json."""
    if cfg.get("out_channels", 3) != cfg.get("in_channels", 3):
        raise CheckpointError(
            f"{folder}: the VAE has different input and output channels, which Atelier does not support."
        )
    return VAEConfig(
        in_channels=cfg.get("in_channels", 3),
        latent_channels=cfg.get("latent_channels", 4),
        block_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg.get("layers_per_block", 2),
        norm_groups=cfg.get("norm_num_groups", 32),
        scaling_factor=cfg.get("scaling_factor", 0.18215),
    )


def text_encoder_config_from_diffusers(cfg: Mapping[str, Any]) -> TextEncoderConfig:
    """Our TextEncoderConfig from a transformers CLIPTextConfig config.json."""
    with_projection = any("WithProjection" in a for a in cfg.get("architectures") or [])
    return TextEncoderConfig(
        vocab_size=cfg.get("vocab_size", 49408),
        max_positions=cfg.get("max_position_embeddings", 77),
        width=cfg.get("hidden_size", 512),
        layers=cfg.get("num_hidden_layers", 12),
        heads=cfg.get("num_attention_heads", 8),
        mlp_width=cfg.get("intermediate_size", 2048),
        activation=cfg.get("hidden_act", "quick_gelu"),
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
        projection_dim=cfg.get("projection_dim", 512) if with_projection else None,
    )


# --------------------------------------------------------------------------------------------------------------
# The folder: its files, its configs, its weights
# --------------------------------------------------------------------------------------------------------------


def _read_json(path: Path, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder.name} has no {path.relative_to(folder)}; the diffusers folder is incomplete."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{folder.name}: {path.relative_to(folder)} is not valid JSON.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder.name}: {path.relative_to(folder)} is not a JSON object.")
    return data


def _weights_in(sub: Path, stem: str, folder: Path) -> Path:
    """The weights file of a diffusers component folder, preferring safetensors and full precision."""
    for suffix in (".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"):
        candidate = sub / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if (sub / f"{stem}.safetensors.index.json").is_file():
        raise CheckpointError(f"{folder.name}/{sub.name} holds sharded weights, which Atelier does not read yet.")
    raise CheckpointError(f"{folder.name}/{sub.name} has no weights file ({stem}.safetensors or .bin).")


# The weights file name (before .safetensors / .fp16.safetensors / .bin) in each component folder.
DIFFUSERS_WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def diffusers_weights_file(folder: Path, component: str) -> Path:
    """The weights file of `component` ("unet", "vae", "text_encoder") in a diffusers folder."""
    return _weights_in(folder / component, DIFFUSERS_WEIGHTS[component], folder)


def diffusers_folder_configs(folder: Path) -> Configs:
    """Configs of a diffusers folder, from model_index.json and each component's config.json."""
    if not (folder / "model_index.json").is_file():
        raise CheckpointError(f"{folder.name} is a folder without model_index.json; expected a diffusers model folder.")
    index = _read_json(folder / "model_index.json", folder)
    pipeline = str(index.get("_class_name", ""))
    if "XL" in pipeline or "StableDiffusion3" in pipeline or "Flux" in pipeline:
        raise CheckpointError(
            f"{folder.name} is a {pipeline} folder that this reader cannot take; Atelier reads Stable Diffusion "
            "1.x, 2.x and SDXL folders."
        )
    prediction = "eps"
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", folder)
        prediction = "v" if scheduler.get("prediction_type") == "v_prediction" else "eps"
    return Configs(
        unet=unet_config_from_diffusers(_read_json(folder / "unet" / "config.json", folder), folder.name, prediction),
        vae=vae_config_from_diffusers(_read_json(folder / "vae" / "config.json", folder), folder.name),
        text_encoder=text_encoder_config_from_diffusers(_read_json(folder / "text_encoder" / "config.json", folder)),
        origin="config.json files",
    )


def folder_family(configs: Configs) -> str:
    """A diffusers SD1.x folder's family: an inpainting UNet takes 9 input channels (latent, mask, masked image)."""
    return "sd1-inpaint" if configs.unet.in_channels == 9 else "sd1"


def read_diffusers_folder(folder: Path, dtype: torch.dtype, need_vae: bool) -> Parts:
    """The weights (in `dtype`, our names) and configs of a diffusers folder; the VAE only when `need_vae`."""
    configs = diffusers_folder_configs(folder)
    files = {c: WeightsFile(diffusers_weights_file(folder, c)) for c in DIFFUSERS_WEIGHTS if need_vae or c != "vae"}
    state = {c: f.read(list(f.index.shapes), dtype) for c, f in files.items()}
    return Parts(
        unet=state["unet"],
        vae=keymap.vae_from_diffusers(state["vae"]) if need_vae else None,
        text_encoder=keymap.text_encoder_names(state["text_encoder"]),
        unet_config=configs.unet,
        vae_config=configs.vae if need_vae else None,
        text_encoder_config=configs.text_encoder,
        family=folder_family(configs),
        tokenizer_dir=folder / "tokenizer",
    )


# --------------------------------------------------------------------------------------------------------------
# SD 2.x and SDXL folders
# --------------------------------------------------------------------------------------------------------------


def family_unet_config_from_diffusers(
    cfg: Mapping[str, Any], folder: str = "model", prediction: str = "eps"
) -> UNetConfig:
    """Our UNetConfig from the unet/config.json of an SD 2.x or SDXL folder.

    diffusers lists one `attention_head_dim` per level, which (its SD1 quirk again) holds head counts: SD 2.x's
    [5, 10, 20, 20] over channels [320, 640, 1280, 1280] are 64-wide heads, SDXL's [5, 10, 20] too.
    `addition_embed_type: "text_time"` is SDXL's vector y, `projection_class_embeddings_input_dim` its width.
    """
    channels = tuple(cfg["block_out_channels"])
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    widths = {c // h for c, h in zip(channels, heads, strict=True)}
    if len(widths) != 1:
        raise CheckpointError(f"{folder}/unet/config.json has heads {heads} of different widths; expected one width.")
    depth = cfg.get("transformer_layers_per_block", 1)
    adm = cfg.get("projection_class_embeddings_input_dim") if cfg.get("addition_embed_type") == "text_time" else None
    return UNetConfig(
        in_channels=cfg.get("in_channels", 4),
        out_channels=cfg.get("out_channels", 4),
        block_channels=channels,
        layers_per_block=_single(cfg.get("layers_per_block", 2), "layers_per_block", folder),
        cross_attention_levels=tuple("CrossAttn" in t for t in cfg["down_block_types"]),
        attention_head_dim=widths.pop(),
        transformer_depth=tuple(depth) if isinstance(depth, (list, tuple)) else int(depth),
        linear_projection=bool(cfg.get("use_linear_projection", False)),
        context_dim=cfg.get("cross_attention_dim", 1024),
        adm_in_channels=adm,
        size_embed_dim=cfg.get("addition_time_embed_dim") or 256,
        norm_groups=cfg.get("norm_num_groups", 32),
        norm_eps=cfg.get("norm_eps", 1e-5),
        prediction=prediction,
    )


def read_family_diffusers_folder(folder: Path, dtype: torch.dtype) -> FamilyParts:
    """An SD 2.x or SDXL diffusers folder (unet/, vae/, text_encoder/ and, for SDXL, text_encoder_2/) in our names.

    Note: diffusers' SD 2.x text_encoder/ keeps only 23 of ViT-H's 24 layers (the last is never read), so its
    last layer is SD 2.x's penultimate: read it with clip_skip 1 where a single file needs 2.
    """
    index = _read_json(folder / "model_index.json", folder)
    pipeline = str(index.get("_class_name", ""))
    prediction = "eps"
    if (folder / "scheduler" / "scheduler_config.json").is_file():
        scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", folder)
        prediction = "v" if scheduler.get("prediction_type") == "v_prediction" else "eps"
    unet_config = family_unet_config_from_diffusers(
        _read_json(folder / "unet" / "config.json", folder), folder.name, prediction
    )
    family = "sdxl" if unet_config.adm_in_channels is not None or "XL" in pipeline else "sd2"
    vae_config = vae_config_from_diffusers(_read_json(folder / "vae" / "config.json", folder), folder.name)
    towers = {"text_encoder": "clip_h"} if family == "sd2" else {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
    if family == "sdxl" and not (folder / "text_encoder").is_dir():
        towers = {"text_encoder_2": "clip_g"}  # the refiner: bigG alone
    texts, text_configs = {}, {}
    for sub, tower in towers.items():
        text_configs[tower] = text_encoder_config_from_diffusers(_read_json(folder / sub / "config.json", folder))
        file = WeightsFile(_weights_in(folder / sub, "model", folder))
        texts[tower] = keymap.text_encoder_names(file.read(list(file.index.shapes), dtype))
    unet_file = WeightsFile(diffusers_weights_file(folder, "unet"))
    vae_file = WeightsFile(diffusers_weights_file(folder, "vae"))
    return FamilyParts(
        family=family,
        variant=family_variant(family, unet_config),
        unet=unet_file.read(list(unet_file.index.shapes), dtype),
        unet_config=unet_config,
        vae=keymap.vae_from_diffusers(vae_file.read(list(vae_file.index.shapes), dtype)),
        vae_config=vae_config,
        text_encoders=texts,
        text_encoder_configs=text_configs,
    )
