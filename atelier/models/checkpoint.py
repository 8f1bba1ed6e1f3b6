"""Loading and saving Stable Diffusion models (1.x; 2.x and SDXL base and refiner through
`load_family_checkpoint`, which `load_checkpoint` hands them to): files in, ready-to-run Atelier modules out.

Three ways a model arrives:
    single file      `.safetensors` (or a legacy pickle `.ckpt/.pt/.pth/.bin`) in the original SD layout, the
                     format A1111 and ComfyUI share: model.diffusion_model.* (UNet), first_stage_model.* (VAE),
                     cond_stage_model.transformer.* (CLIP text encoder)
    diffusers folder model_index.json + unet/ vae/ text_encoder/ tokenizer/ subfolders, each with config.json
    standalone VAE   a VAE alone (e.g. vae-ft-mse-840000-ema-pruned.safetensors) replacing a checkpoint's VAE

Loading goes: read the header (names, shapes, dtypes; no weights yet) -> say which model family it is -> work out
the configs (stored in our metadata, or read off the shapes) -> read only the weights needed, converted to the
target dtype -> rename to our layout (keymap.py) -> check every name and shape against freshly built modules ->
hand the weights over. Nothing is returned half-loaded: any problem raises CheckpointError before a module is
given out.

Pickles: `.ckpt` files are Python pickles, which can run arbitrary code when opened. Atelier opens them only with
`torch.load(weights_only=True)` (weights.py), which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from atelier import device as devices
from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig, config_to_json
from atelier.models.detect import META_TEXT, META_UNET, META_VAE
from atelier.models.diffusers_folder import (
    read_diffusers_folder,
    read_family_diffusers_folder,
    text_encoder_config_from_diffusers,
    unet_config_from_diffusers,
    vae_config_from_diffusers,
)
from atelier.models.single_file import (
    read_diffusion_model,
    read_family_single_file,
    read_single_file,
    read_text_encoder,
    read_vae,
)


@dataclass
class Checkpoint:
    """A loaded model: the three networks (eval mode), the tokenizer, their configs and where they came from."""

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    unet_config: UNetConfig
    vae_config: VAEConfig
    text_encoder_config: TextEncoderConfig
    family: str  # "sd1", "sd1-inpaint", "sd2" or "sdxl"
    source: Path
    dtype: torch.dtype
    device: torch.device
    variant: str = ""  # detect.family_variant's name, e.g. "SDXL base" (set by load_family_checkpoint)
    # The text encoder layer the family reads, counted from the end (1: the last; SD 2.x and SDXL: 2, the
    # penultimate; an SD 2.x diffusers folder stores ViT-H without its last layer, so 1 there).
    clip_skip: int = 1


# --------------------------------------------------------------------------------------------------------------
# Building modules: fresh modules, every name and shape checked, then the weights handed over
# --------------------------------------------------------------------------------------------------------------


def check_state(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], what: str, name: str
) -> None:
    """Raise CheckpointError naming the first missing, unexpected or misshaped weights (and how many there are)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k]))
    if missing:
        raise CheckpointError(f"{name}: {what} is missing {len(missing)} weight(s): {keymap.first_names(missing)}.")
    if unexpected:
        raise CheckpointError(
            f"{name}: {what} has {len(unexpected)} unexpected weight(s): {keymap.first_names(unexpected)}."
        )
    if misshaped:
        k = misshaped[0]
        raise CheckpointError(
            f"{name}: {what} has {len(misshaped)} weight(s) of the wrong shape, e.g. {k} is "
            f"{tuple(state[k].shape)} where {tuple(expected[k])} was expected."
        )


def build_module(
    make: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], device: torch.device, what: str, name: str
) -> nn.Module:
    """`make()` built, checked against `state`, then given the tensors of `state` (already in the target dtype)
    moved to `device`. Returns the module in eval mode.

    Large networks are built on the meta device, small ones normally (`devices.building` says why).
    """
    try:
        with devices.building(sum(t.numel() for t in state.values())):
            module = make()
    except (ValueError, AssertionError, RuntimeError) as error:  # e.g. channels that GroupNorm cannot divide
        raise CheckpointError(f"{name}: {what} cannot be built from its config ({error}).") from None
    check_state(state, {k: tuple(v.shape) for k, v in module.state_dict().items()}, what, name)
    state = {k: v.to(device) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in module.buffers()):
        # A buffer that is computed at construction, not stored (e.g. position ids): build the module for real.
        with torch.device(device):
            module = make()
        module.to(next(iter(state.values())).dtype).load_state_dict(state, strict=True)
    return module.eval()


def _new_unet(config: UNetConfig) -> Callable[[], nn.Module]:
    from atelier.models.unet import UNet

    return lambda: UNet(config)


def _new_vae(config: VAEConfig) -> Callable[[], nn.Module]:
    from atelier.models.vae import VAE

    return lambda: VAE(config)


def _new_text_encoder(config: TextEncoderConfig) -> Callable[[], nn.Module]:
    from atelier.models.clip import CLIPTextEncoder

    return lambda: CLIPTextEncoder(config)


def _pick(
    device: str | torch.device | None, dtype: str | torch.dtype | None, path: Path | None = None
) -> tuple[torch.device, torch.dtype]:
    """The device and dtype to load in; on a GPU the default dtype depends on the size of `path`'s UNet (device.py)."""
    dev = device if isinstance(device, torch.device) else devices.pick_device(device)
    if isinstance(dtype, torch.dtype):
        return dev, dtype
    by_size = path is not None and dev.type == "cuda" and dtype in (None, "auto")
    parameters = unet_parameters(path) if by_size else None
    return dev, devices.pick_dtype(dev, dtype, parameters)


_UNET_PREFIX = "model.diffusion_model."  # a whole checkpoint's UNet, in the original (and ComfyUI's) layout


def unet_parameters(path: Path) -> int | None:
    """How many numbers the UNet of a checkpoint, a UNet-only file or a diffusers folder holds, from the safetensors
    headers the loader will read; None when that cannot be told without reading weights (a pickle, a .bin) or the
    path is no model."""
    from atelier.models.diffusers_folder import diffusers_weights_file
    from atelier.models.weights import SAFETENSORS_SUFFIXES, WeightsFile

    try:
        file = diffusers_weights_file(path, "unet") if path.is_dir() else path
        if file.suffix.lower() not in SAFETENSORS_SUFFIXES:
            return None
        shapes = WeightsFile(file).index.shapes
    except CheckpointError:
        return None  # the load that follows names what is wrong with the path
    unet = {k: v for k, v in shapes.items() if k.startswith(_UNET_PREFIX)} or shapes  # or a UNet-only file
    return sum(math.prod(shape) for shape in unet.values())


# --------------------------------------------------------------------------------------------------------------
# The public entry points
# --------------------------------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    vae_path: str | Path | None = None,
) -> Checkpoint:
    """Load a Stable Diffusion model (1.x, 2.x or SDXL base or refiner) from a single file or a diffusers folder,
    ready to run; SD 2.x and SDXL go through `load_family_checkpoint`.

    `device`/`dtype`: names ("cuda", "fp16") or torch objects; by default the best device and its dtype (fp32 on
    the CPU), see atelier/device.py. `vae_path` replaces the checkpoint's VAE with a standalone one (which keeps
    the family's latent scale: a VAE file does not say it).
    Pickled files (.ckpt/.pt/.pth/.bin) are opened with torch.load(weights_only=True) only, never running code.
    Raises CheckpointError (one sentence naming the file) on any problem; nothing is returned half-loaded.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; expected a .safetensors file or a diffusers model folder.")
    device, dtype = _pick(device, dtype, path)
    if checkpoint_family(path) in ("sd2", "sdxl"):
        ckpt = load_family_checkpoint(path, device, dtype)
        if vae_path is None:
            return ckpt
        vae_config, vae_state = read_vae(vae_path, dtype)
        vae_config = dataclasses.replace(vae_config, scaling_factor=ckpt.vae_config.scaling_factor)
        vae = build_module(_new_vae(vae_config), vae_state, device, "the VAE", Path(vae_path).name)
        return dataclasses.replace(ckpt, vae=vae, vae_config=vae_config)
    need_vae = vae_path is None
    read = read_diffusers_folder if path.is_dir() else read_single_file
    parts = read(path, dtype, need_vae)

    if vae_path is not None:
        vae_config, vae_state = read_vae(vae_path, dtype)
    else:
        assert parts.vae is not None and parts.vae_config is not None
        vae_config, vae_state = parts.vae_config, parts.vae
    name = path.name
    vae_name = Path(vae_path).name if vae_path is not None else name
    unet = build_module(_new_unet(parts.unet_config), parts.unet, device, "the UNet", name)
    vae = build_module(_new_vae(vae_config), vae_state, device, "the VAE", vae_name)
    text_encoder = build_module(
        _new_text_encoder(parts.text_encoder_config), parts.text_encoder, device, "the text encoder", name
    )
    return Checkpoint(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(parts.tokenizer_dir),
        unet_config=parts.unet_config,
        vae_config=vae_config,
        text_encoder_config=parts.text_encoder_config,
        family=parts.family,
        source=path,
        dtype=dtype,
        device=device,
    )


def checkpoint_family(path: Path) -> str:
    """The family of a model file or diffusers folder, from its header or config files alone: "sd1",
    "sd1-inpaint", "sd2", "sdxl", or what detect.detect_family names (the readers refuse those with a sentence).

    A diffusers folder is SD 2.x or SDXL when its pipeline class says XL, its UNet reads a vector y
    (addition_embed_type) or projects into its transformers with Linear layers (use_linear_projection), as every
    SD 2.x and SDXL UNet does and no SD1.x one."""
    if path.is_dir():
        index, unet = path / "model_index.json", path / "unet" / "config.json"
        try:
            pipeline = str(json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""))
            config = json.loads(unet.read_text(encoding="utf-8"))
        except (OSError, ValueError, AttributeError):
            return "sd1"  # the SD1.x reader explains what is missing or unreadable
        if "XL" in pipeline or config.get("addition_embed_type"):
            return "sdxl"
        return "sd2" if config.get("use_linear_projection") else "sd1"
    from atelier.models.detect import detect_family
    from atelier.models.weights import WeightsFile

    file = WeightsFile(path)
    return detect_family(file.index.shapes, file.index.metadata)[0]


def predicts_velocity(path: Path) -> bool:
    """Whether an SD 2.x file or folder is a v-prediction model (the 768-v family): the folder's scheduler config,
    or the single file's signs (single_file.sd2_prediction)."""
    if path.is_dir():
        scheduler = path / "scheduler" / "scheduler_config.json"
        try:
            return json.loads(scheduler.read_text(encoding="utf-8")).get("prediction_type") == "v_prediction"
        except (OSError, ValueError, AttributeError):
            return False
    from atelier.models.single_file import sd2_prediction
    from atelier.models.weights import WeightsFile

    file = WeightsFile(path)
    return sd2_prediction(file, file.index.shapes) == "v"


def load_family_checkpoint(
    path: str | Path, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> Checkpoint:
    """Load an SD 2.x or SDXL (base or refiner) single file or diffusers folder, ready to run; the same checks as
    `load_checkpoint`.

    The text encoder is a CLIPTextEncoder (SD 2.x's OpenCLIP ViT-H) or an SDXLTextEncoder (CLIP-L + bigG, or bigG
    alone for the refiner); `tokenizer` is one CLIPTokenizer (SD 2.x, padding with 0 as open_clip did) or the
    pair (CLIP-L's, bigG's) for SDXL; `text_encoder_config` is the widest tower's (ViT-H or bigG).
    """
    from atelier.models.clip import SDXLTextEncoder
    from atelier.models.tokenizer import CLIPTokenizer

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; expected an SD 2.x or SDXL .safetensors file or folder.")
    device, dtype = _pick(device, dtype, path)
    parts = read_family_diffusers_folder(path, dtype) if path.is_dir() else read_family_single_file(path, dtype)
    assert parts.vae is not None and parts.vae_config is not None
    name, configs = path.name, parts.text_encoder_configs
    unet = build_module(_new_unet(parts.unet_config), parts.unet, device, "the UNet", name)
    vae = build_module(_new_vae(parts.vae_config), parts.vae, device, "the VAE", name)
    tokenizer: Any
    if parts.family == "sd2":
        state, text_config = parts.text_encoders["clip_h"], configs["clip_h"]
        text_encoder = build_module(_new_text_encoder(text_config), state, device, "the text encoder", name)
        tokenizer = CLIPTokenizer.from_default(pad_with_end=False)
    else:
        state = {
            f"{tower}.{k}": v for tower, tower_state in parts.text_encoders.items() for k, v in tower_state.items()
        }
        text_config = configs["clip_g"]
        text_encoder = build_module(
            lambda: SDXLTextEncoder(configs.get("clip_l"), configs["clip_g"]), state, device, "the text encoders", name
        )
        tokenizer = (CLIPTokenizer.from_default(), CLIPTokenizer.from_default(pad_with_end=False))
    return Checkpoint(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet_config=parts.unet_config,
        vae_config=parts.vae_config,
        text_encoder_config=text_config,
        family=parts.family,
        source=path,
        dtype=dtype,
        device=device,
        variant=parts.variant,
        clip_skip=1 if parts.family == "sd2" and path.is_dir() else 2,
    )


def _tokenizer(folder: Path | None) -> Any:
    from atelier.models.tokenizer import CLIPTokenizer

    if folder is not None and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CLIPTokenizer.from_files(folder / "vocab.json", folder / "merges.txt")
    return CLIPTokenizer.from_default()


def load_vae(
    path: str | Path, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> nn.Module:
    """A standalone VAE file as an Atelier VAE module (eval mode); see `read_vae` for the layouts accepted."""
    device, dtype = _pick(device, dtype)
    config, state = read_vae(path, dtype)
    return build_module(_new_vae(config), state, device, "the VAE", Path(path).name)


def save_checkpoint(
    path: str | Path,
    unet: nn.Module,
    vae: nn.Module,
    text_encoder: nn.Module,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the three networks as one `.safetensors` file in the original SD layout, which A1111, ComfyUI and
    diffusers' from_single_file read, with our configs as JSON in the metadata so it reloads exactly.

    The modules may be Atelier's or diffusers'/transformers' (same weight names). The file is written to a
    temporary name and renamed into place, so a crash never leaves a half-written model behind.
    """
    path = Path(path)
    state, meta = checkpoint_state(unet, vae, text_encoder, metadata)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def checkpoint_state(
    unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, metadata: Mapping[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What `save_checkpoint` writes: the SD-layout tensors (on the CPU) and the metadata with our configs; hand
    both to safetensors' `save` for the bytes of a single-file checkpoint (CheckpointSave writes them itself)."""
    unet_config, vae_config, text_config = (
        _config_of(unet, "unet"),
        _config_of(vae, "vae"),
        _config_of(text_encoder, "text"),
    )
    state = keymap.join_checkpoint(
        keymap.unet_to_sd(unet.state_dict(), unet_config),
        keymap.vae_to_sd(vae.state_dict(), vae_config),
        keymap.text_encoder_to_sd(keymap.text_encoder_names(text_encoder.state_dict()), text_config),
    )
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[META_UNET], meta[META_VAE], meta[META_TEXT] = (
        config_to_json(c) for c in (unet_config, vae_config, text_config)
    )
    return state, meta


_CONFIG_TYPES = {"unet": UNetConfig, "vae": VAEConfig, "text": TextEncoderConfig}


def _config_of(module: nn.Module, kind: str) -> Any:
    """Our config for an Atelier module (its `.config`), or one translated from a diffusers/transformers model."""
    config = getattr(module, "config", None)
    if config is not None and not isinstance(config, UNetConfig | VAEConfig | TextEncoderConfig):
        if hasattr(config, "to_dict"):  # transformers
            config = text_encoder_config_from_diffusers(dict(config.to_dict(), architectures=[type(module).__name__]))
        elif isinstance(config, Mapping):  # diffusers' FrozenDict
            config = unet_config_from_diffusers(config) if kind == "unet" else vae_config_from_diffusers(config)
    if not isinstance(config, _CONFIG_TYPES[kind]):
        raise TypeError(f"save_checkpoint got a {type(module).__name__} where a {kind} model belongs")
    return config


# --------------------------------------------------------------------------------------------------------------
# Split files: one network per file (UNETLoader, CLIPLoader)
# --------------------------------------------------------------------------------------------------------------


def load_diffusion_model(
    path: str | Path, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> tuple[nn.Module, UNetConfig, str]:
    """A diffusion model file alone (models/diffusion_models) as an Atelier UNet: (module, config, family)."""
    device, dtype = _pick(device, dtype, Path(path))
    config, state, family = read_diffusion_model(path, dtype)
    return build_module(_new_unet(config), state, device, "the UNet", Path(path).name), config, family


def load_text_encoder(
    path: str | Path, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> tuple[nn.Module, Any, TextEncoderConfig]:
    """A text encoder file alone (models/text_encoders): (CLIP text encoder module, its tokenizer, config).
    CLIP's tokenizer is the same for every CLIP text encoder (Radford et al. 2021: one BPE vocabulary)."""
    device, dtype = _pick(device, dtype)
    config, state, _ = read_text_encoder(path, dtype)
    module = build_module(_new_text_encoder(config), state, device, "the text encoder", Path(path).name)
    return module, _tokenizer(None), config


def load_family_text_encoder(
    paths: Mapping[str, str | Path], device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> tuple[nn.Module, Any, TextEncoderConfig]:
    """SD 2.x's or SDXL's text side from split files: `paths` {"clip_h": file} (SD 2.x), {"clip_l": file,
    "clip_g": file} (SDXL base) or {"clip_g": file} (the refiner's bigG alone). Returns (module, tokenizer,
    config of the widest tower): the very modules and tokenizers `load_family_checkpoint` builds from a whole
    file (see single_file.read_text_tower for the layouts read)."""
    from atelier.models.clip import SDXLTextEncoder
    from atelier.models.single_file import read_text_tower
    from atelier.models.tokenizer import CLIPTokenizer

    device, dtype = _pick(device, dtype)
    read = {tower: read_text_tower(path, tower, dtype) for tower, path in paths.items()}
    name = " + ".join(Path(p).name for p in paths.values())
    if set(read) == {"clip_h"}:
        config, state = read["clip_h"]
        module = build_module(_new_text_encoder(config), state, device, "the text encoder", name)
        return module, CLIPTokenizer.from_default(pad_with_end=False), config
    if set(read) not in ({"clip_l", "clip_g"}, {"clip_g"}):
        raise ValueError(f"load_family_text_encoder takes clip_h, clip_g or clip_l and clip_g; got {sorted(read)}")
    (l_config, l_state), (g_config, g_state) = read.get("clip_l", (None, {})), read["clip_g"]
    state = {**{f"clip_l.{k}": v for k, v in l_state.items()}, **{f"clip_g.{k}": v for k, v in g_state.items()}}
    module = build_module(lambda: SDXLTextEncoder(l_config, g_config), state, device, "the text encoders", name)
    return module, (CLIPTokenizer.from_default(), CLIPTokenizer.from_default(pad_with_end=False)), g_config
