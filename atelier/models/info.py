"""`atelier info MODEL`: what a model file or diffusers folder holds, read from headers only (no weights loaded).

Example (SD1.5, fp16 single file):

    v1-5-pruned-emaonly.fp16.safetensors
      kind          Stable Diffusion 1.x checkpoint (sd1), predicts noise (eps)
      file          2.13 GB, safetensors, 1131 tensors: 1131 float16
      unet          859.52 M parameters in 686 tensors
      vae           83.65 M parameters in 248 tensors
      text encoder  123.06 M parameters in 196 tensors
      configs       from the tensor shapes (attention heads and norm groups are not stored: SD1.x values assumed)
        unet          UNetConfig(in_channels=4, ...)
        ...
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from atelier.errors import CheckpointError
from atelier.models import detect, diffusers_folder, keymap, single_file
from atelier.models.weights import WeightsFile

_COMPONENT_LABELS = {"unet": "unet", "vae": "vae", "text_encoder": "text encoder"}


def describe_model(path: str | Path) -> str:
    """A few lines of text describing the model at `path` (single file or diffusers folder).

    Unsupported families are described too (kind, size, tensors) with the sentence saying why they cannot be
    loaded. Raises CheckpointError when the path is missing or not a readable model.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; expected a model file or a diffusers model folder.")
    if path.is_dir() and not (path / "model_index.json").is_file() and (path / "config.json").is_file():
        from atelier.models.controlnet import controlnet_weights_file  # a diffusers ControlNet folder

        weights = controlnet_weights_file(path)
        lines = [path.name + "/", *_describe_file(weights)[1:]]
    else:
        lines = _describe_folder(path) if path.is_dir() else _describe_file(path)
    return "\n".join(lines)


def _describe_file(path: Path) -> list[str]:
    file = WeightsFile(path)
    shapes = file.index.shapes
    family, evidence = detect.detect_family(shapes, file.index.metadata)
    lines = [
        path.name,
        _row("file", f"{_size(path.stat().st_size)}, {file.format}, {_tensor_summary(file.index.dtypes)}"),
    ]
    if family == "lora":
        return lines[:1] + _describe_lora(file) + lines[1:]
    if family == "embedding":
        return lines[:1] + _describe_embedding(file) + lines[1:]
    if family in ("sd2", "sdxl") and keymap.UNET_PREFIX + "input_blocks.0.0.weight" in shapes:
        return lines[:1] + _describe_family(file, family) + lines[1:]
    if family == "upscaler":
        return lines[:1] + _describe_upscaler(file) + lines[1:]
    if family == "controlnet":
        return lines[:1] + _describe_controlnet(file) + lines[1:]
    if family not in detect.SUPPORTED_FAMILIES:
        lines.insert(1, _row("kind", f"{_family_label(family)} (found {evidence})"))
        if family in ("sd2", "sdxl"):  # read by Atelier, but this file lacks the UNet (tested just above)
            missing = keymap.UNET_PREFIX + "input_blocks.0.0.weight"
            lines.append(_row("note", f"{path.name} has no UNet weights ({missing}); the file is incomplete."))
            return lines
        try:
            detect.require_supported(family, evidence, path.name)
        except CheckpointError as error:
            lines.append(_row("note", str(error)))
        return lines

    configs = single_file.single_file_configs(file)
    lines.insert(1, _row("kind", f"{_family_label(family)} ({family}), {_prediction(configs.unet.prediction)}"))
    split = keymap.split_checkpoint(shapes)
    split["text_encoder"] = keymap.text_encoder_names(split["text_encoder"])  # position_ids is not a weight
    for component, label in _COMPONENT_LABELS.items():
        part = split[component]
        if part:
            lines.append(_row(label, _params(part)))
        else:
            lines.append(_row(label, "not in this file"))
    if split["ignored"]:
        lines.append(_row("other", _ignored(split["ignored"])))
    lines += _config_lines(configs)
    configs_keys = (detect.META_UNET, detect.META_VAE, detect.META_TEXT)
    extra = {k: v for k, v in file.index.metadata.items() if k not in configs_keys}
    if extra:
        lines.append(_row("metadata", ", ".join(f"{k}={_short(v)}" for k, v in sorted(extra.items()))))
    return lines


_TOWERS = {"clip_h": "OpenCLIP ViT-H/14 text", "clip_l": "CLIP ViT-L/14 text", "clip_g": "OpenCLIP ViT-bigG/14 text"}


def _describe_family(file: WeightsFile, family: str) -> list[str]:
    """SD 2.x / SDXL: the variant found (SD2.x-v, SDXL base, ...), then the parameters of each network."""
    shapes = file.index.shapes
    prefixes = single_file.family_prefixes(family, shapes)
    split = keymap.split_by_prefix(shapes, prefixes)
    if family == "sd2":
        prediction = single_file.sd2_prediction(file, shapes)
    else:
        prediction = single_file.prediction_type(file.path, shapes)
    unet = detect.infer_unet_config(split["unet"], prediction, f"{file.name}: the UNet")
    variant = detect.family_variant(family, unet)
    lines = [_row("kind", f"{variant} ({family}), {_prediction(prediction)}")]
    for component in prefixes:
        part = {k: v for k, v in split[component].items() if not k.endswith("position_ids")}
        text = _params(part) if part else "not in this file"
        lines.append(_row(component, f"{_TOWERS[component]}, {text}" if component in _TOWERS else text))
    if split["ignored"]:
        lines.append(_row("other", _ignored(split["ignored"])))
    return lines


def _describe_folder(folder: Path) -> list[str]:
    configs = diffusers_folder.diffusers_folder_configs(folder)
    family = diffusers_folder.folder_family(configs)
    lines = [
        folder.name + "/",
        _row("kind", f"{_family_label(family)} ({family}), {_prediction(configs.unet.prediction)}"),
    ]
    total_size = 0
    for component, label in _COMPONENT_LABELS.items():
        weights = diffusers_folder.diffusers_weights_file(folder, component)
        file = WeightsFile(weights)
        total_size += weights.stat().st_size
        where = f"{component}/{weights.name}, {_size(weights.stat().st_size)}, {_tensor_summary(file.index.dtypes)}"
        lines.append(_row(label, f"{_params(file.index.shapes)} ({where})"))
    lines.insert(2, _row("files", f"{_size(total_size)} of weights, diffusers folder"))
    return lines + _config_lines(configs)


def _describe_lora(file: WeightsFile) -> list[str]:
    """LoRA / LyCORIS: the spelling of its names, the kinds of change, ranks, alphas and what it targets."""
    from atelier.models.lora import lora_family, split_key

    modules: dict[str, set[str]] = {}
    unknown = []
    for key in file.index.shapes:
        found = split_key(key)
        if found is None:
            unknown.append(key)
        else:
            modules.setdefault(found[0], set()).add(found[1])
    names = list(modules)
    target = lora_family(file.index.shapes)
    text = sum(n.startswith(("lora_te", "text_encoder.", "text_encoder_2.")) for n in names)
    kinds = Counter(_change_kind(parts) for parts in modules.values())
    downs = (".lora_down.weight", ".lora_A.weight")
    ranks = sorted({shape[0] for key, shape in file.index.shapes.items() if key.endswith(downs)})
    if any(n.startswith(("unet.", "text_encoder.")) for n in names):
        spelling = "diffusers / PEFT (unet.*, text_encoder.*)"
    elif any(n.startswith("lycoris_") for n in names):
        spelling = "LyCORIS (lycoris_*)"
    else:
        spelling = "kohya (lora_unet_*, lora_te_*)"
    alphas = file.read([k for k in file.index.shapes if k.endswith(".alpha")])
    alpha_values = sorted({round(float(v.float().reshape(-1)[0]), 4) for v in alphas.values()})
    changes = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    lines = [
        _row("kind", f"a LoRA for {target}: {changes} change(s)"),
        _row("layout", spelling),
        _row("layers", f"{len(names) - text} in the UNet, {text} in the text encoder{'s' if 'SDXL' in target else ''}"),
    ]
    if ranks:
        lines.append(_row("rank", ", ".join(map(str, ranks))))
    if alpha_values:
        lines.append(_row("alpha", ", ".join(f"{a:g}" for a in alpha_values) + " (scale = alpha / rank)"))
    if unknown:
        lines.append(_row("unknown", f"{len(unknown)} tensor(s) that are no LoRA part: {keymap.first_names(unknown)}"))
    return lines


def _change_kind(parts: set[str]) -> str:
    """What one module's parts (lora.split_key's names) make: LoRA, DoRA, LoHa, LoKr or a full diff."""
    if "dora_scale" in parts:
        return "DoRA"
    if any(p.startswith("hada_") for p in parts):
        return "LoHa"
    if any(p.startswith("lokr_") for p in parts):
        return "LoKr"
    if "diff" in parts:
        return "full diff"
    return "LoCon (Tucker)" if "mid" in parts else "LoRA"


def _describe_embedding(file: WeightsFile) -> list[str]:
    """A textual-inversion embedding: how many vectors, how wide, and so which text encoder it is for."""
    shapes = file.index.shapes
    key = next((k for k in shapes if k.startswith("string_to_param.")), None)
    key = key or next((k for k in ("emb_params", "clip_l") if k in shapes), None) or next(iter(shapes))
    shape = shapes[key]
    count, width = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[-1])
    target = {768: "Stable Diffusion 1.x (CLIP ViT-L, 768 wide)", 1024: "SD 2.x (OpenCLIP ViT-H, 1024 wide)"}
    what = "SDXL (clip_l + clip_g)" if "clip_g" in shapes else target.get(width, f"a text encoder {width} wide")
    return [
        _row("kind", f"a textual-inversion embedding for {what}"),
        _row("vectors", f"{count} x {width} (it takes {count} of the prompt's 75 token positions)"),
        _row("use", f"embedding:{Path(file.name).stem} in a prompt, the file in models/embeddings"),
    ]


def _describe_controlnet(file: WeightsFile) -> list[str]:
    """A ControlNet: its layout, the UNet it copies, its hint encoder, what it adds to the UNet."""
    from atelier.models.controlnet import DIFFERENCE_KEY, describe_controlnet, skip_channels

    layout, config = describe_controlnet(file.index.shapes)
    lines = [_row("layout", layout)]
    if config is None:
        return [_row("kind", "a ControlNet whose shapes could not be read (incomplete file?)"), *lines]
    unet = config.unet
    lines.insert(0, _row("kind", f"a ControlNet for a Stable Diffusion 1.x UNet {unet.block_channels} wide "
                                 f"(context {unet.context_dim})"))  # fmt: skip
    widths = ", ".join(map(str, config.hint_block_channels))
    lines += [
        _row("hint", f"a {config.hint_channels}-channel image at the picture's size, encoded by convs {widths} wide"),
        _row("adds", f"{len(skip_channels(unet))} residuals to the UNet's skips and 1 to its middle block"),
        _row("params", _params(file.index.shapes)),
        _row("use", "Load ControlNet Model + Apply ControlNet, the file in models/controlnet"),
    ]
    if DIFFERENCE_KEY in file.index.shapes:  # stored minus an SD1.5 UNet (models/controlnet.py, add_base_weights)
        lines[0] = _row("kind", f"a difference ControlNet (stored minus the weights of an SD1.x UNet "
                                f"{unet.block_channels} wide)")  # fmt: skip
        lines[-1] = _row("use", "Load ControlNet Model (diff), given the model to add it to, + Apply ControlNet")
    return lines


def _describe_upscaler(file: WeightsFile) -> list[str]:
    """A super-resolution network: its architecture and key layout, factor and sizes."""
    from atelier.models.upscale import describe_upscaler

    architecture, config = describe_upscaler(file.index.shapes) or ("an unknown upscaler", "")
    return [
        _row("kind", f"an upscale model: {architecture}"),
        _row("config", config),
        _row("params", _params(file.index.shapes)),
        _row("use", "Load Upscale Model + Upscale Image (using Model), the file in models/upscale_models"),
    ]


# --------------------------------------------------------------------------------------------------------------


def _row(label: str, text: str) -> str:
    return f"  {label:<13} {text}"


def _family_label(family: str) -> str:
    label = detect.FAMILY_NAMES[family]
    label = label.removeprefix("an ").removeprefix("a ")
    return label[0].upper() + label[1:]


def _prediction(prediction: str) -> str:
    return "predicts velocity (v)" if prediction == "v" else "predicts noise (eps)"


def _params(shapes: dict[str, tuple[int, ...]]) -> str:
    count = detect.parameter_counts(shapes)
    return f"{count / 1e6:.2f} M parameters in {len(shapes)} tensors"


def _tensor_summary(dtypes: dict) -> str:
    counts = Counter(str(d).removeprefix("torch.") for d in dtypes.values())
    by_dtype = ", ".join(f"{n} {d}" for d, n in counts.most_common())
    return f"{len(dtypes)} tensor{'s' if len(dtypes) != 1 else ''}: {by_dtype}" if dtypes else "no tensors"


def _ignored(shapes: dict[str, tuple[int, ...]]) -> str:
    names = sorted(shapes)
    ema = sum(n.startswith("model_ema.") for n in names)
    what = f"{len(names)} tensor{'s' if len(names) != 1 else ''} not used"
    if ema:
        what += f", {ema} of them EMA copies (model_ema.*)"
    return what + f" (e.g. {names[0]})"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n} B"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_lines(configs: detect.Configs) -> list[str]:
    origin = configs.origin
    if origin == "tensor shapes":
        origin += " (attention heads and norm groups are not stored: SD1.x values assumed)"
    lines = [_row("configs", f"from the {origin}")]
    for label, config in (("unet", configs.unet), ("vae", configs.vae), ("text encoder", configs.text_encoder)):
        if config is not None:
            lines.append(f"    {label:<13} {config}")
    return lines
