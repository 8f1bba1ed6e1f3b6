"""Which model a name means: the embedded model, a file or folder path, or a name in the models folder.

The embedded model ships inside the package (atelier/assets/embedded.safetensors), so `--model` can be left out
on a laptop with no download. Its native image size and its latent-to-RGB preview map are stored in its metadata;
SD1.x checkpoints get 512 and a map fitted on first use.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from atelier.errors import CheckpointError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_NAME = "embedded.safetensors"
EMBEDDED_PATH = ASSETS / EMBEDDED_NAME
EMBEDDED_EXTRAS_PATH = ASSETS / "embedded-extras.safetensors"


def embedded_model_path() -> Path:
    """The shipped model, or one clear sentence when this checkout lacks it."""
    if not EMBEDDED_PATH.is_file():
        raise CheckpointError(
            f"The embedded model {EMBEDDED_PATH} is missing from this installation; pass --model with a "
            "Stable Diffusion 1.x checkpoint, or train one with `atelier train`."
        )
    return EMBEDDED_PATH


def resolve_model(name: str | None, models_root: Path | None = None) -> Path:
    """None or "embedded" -> the embedded model; an existing path -> itself; else a name in models/checkpoints."""
    if name in (None, "", "embedded", EMBEDDED_NAME):
        return embedded_model_path()
    path = Path(name).expanduser()
    if path.exists():
        return path
    if models_root is not None:
        from atelier.models.paths import ModelPaths

        return ModelPaths(models_root).resolve("checkpoints", name)
    raise CheckpointError(
        f"Model {name!r} was not found; expected a checkpoint file, a diffusers folder or 'embedded'."
    )


def file_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata of a single-file model ({} for folders and other formats)."""
    if path.is_dir() or path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # the loader reports unreadable files with a proper sentence
        return {}


# The image side each family was trained at (its last, longest stage): SD1.x 512 (Rombach et al. 2022), SD 2.x
# 768 for the 768-v model and 512 for 512-base, SDXL 1024 (Podell et al. 2023: about a megapixel, many aspect ratios).
NATIVE_SIZES = {"sd1": 512, "sd1-inpaint": 512, "sd2-v": 768, "sd2": 512, "sdxl": 1024}


def native_size(path: Path) -> int:
    """The image side the model was trained at: from our metadata (the embedded model: 128), else its family's
    (SDXL 1024, SD 2.x 768-v 768, SD1.x and SD 2.x base 512), read from the file's header (and, for SD 2.x, the
    sign that tells v-prediction). 512 for what the loader will refuse anyway."""
    value = file_metadata(path).get("atelier.native_size")
    if value and value.isdigit():
        return int(value)
    from atelier.models.checkpoint import checkpoint_family, predicts_velocity

    try:
        family = checkpoint_family(path)
        if family == "sd2" and predicts_velocity(path):
            family = "sd2-v"
    except (CheckpointError, OSError):
        return 512
    return NATIVE_SIZES.get(family, 512)


def latent_rgb(path: Path) -> list[list[float]] | None:
    """The stored (5, 3) latent-to-RGB preview map, if the file has one."""
    value = file_metadata(path).get("atelier.latent_rgb")
    return json.loads(value) if value else None
