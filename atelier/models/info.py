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
    if family not in detect.SUPPORTED_FAMILIES:
        lines.insert(1, _row("kind", f"{_family_label(family)} (found {evidence})"))
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
