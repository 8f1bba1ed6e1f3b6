"""Model folders: where checkpoints, VAEs, LoRAs and embeddings live, and safe lookup of a model by name.

The layout is ComfyUI's, so an existing ComfyUI install can be pointed at directly:

    <root>/models/checkpoints/   full models (.safetensors, .ckpt, ... or diffusers folders)
    <root>/models/vae/           standalone VAEs
    <root>/models/loras/         LoRAs
    <root>/models/embeddings/    textual-inversion embeddings
    <root>/models/diffusion_models/  a diffusion model (UNet) alone (UNETLoader); ComfyUI's older name, unet/, too
    <root>/models/text_encoders/     a text encoder alone (CLIPLoader); ComfyUI's older name, clip/, too
    <root>/models/upscale_models/  super-resolution networks (ESRGAN, Real-ESRGAN)
    <root>/models/controlnet/    ControlNets

More folders come from an `extra_model_paths.yaml` in ComfyUI's format, e.g. to share an A1111 install:

    a1111:
        base_path: /home/me/stable-diffusion-webui/
        checkpoints: models/Stable-diffusion
        vae: models/VAE
        loras: |
            models/Lora
            models/LyCORIS
        embeddings: embeddings

Each top-level section has an optional `base_path` (relative folders are joined to it; without one they are taken
relative to the yaml file), an optional `is_default: true` (its folders are searched first), and one entry per kind
with one folder per line.

Names are what a user or a workflow passes ("sd15/dreamshaper.safetensors"): always relative to one of the
folders. `resolve` refuses absolute paths, `..` and symbolic links that lead outside the folder, so that a name
sent to the server can never reach another file on the machine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from atelier.errors import AtelierError, CheckpointError, InputError
from atelier.models.weights import MODEL_SUFFIXES

log = logging.getLogger(__name__)

DEFAULT_FOLDERS = {
    "checkpoints": "models/checkpoints",
    "vae": "models/vae",
    "loras": "models/loras",
    "embeddings": "models/embeddings",
    "diffusion_models": "models/diffusion_models",
    "text_encoders": "models/text_encoders",
    "upscale_models": "models/upscale_models",
    "controlnet": "models/controlnet",
}
# ComfyUI's earlier folder names, searched after the current ones (its folder_paths does the same).
LEGACY_FOLDERS = {"diffusion_models": "models/unet", "text_encoders": "models/clip"}


class ModelPaths:
    """The model folders of each kind, searched in order."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.folders: dict[str, list[Path]] = {kind: [self.root / rel] for kind, rel in DEFAULT_FOLDERS.items()}
        for kind, rel in LEGACY_FOLDERS.items():
            self.folders[kind].append(self.root / rel)

    def add_folder(self, kind: str, folder: str | Path, first: bool = False) -> None:
        """Search `folder` for models of `kind` too (before the others when `first`)."""
        folders = self.folders.setdefault(kind, [])
        folder = Path(folder)
        if folder in folders:
            return
        if first:
            folders.insert(0, folder)
        else:
            folders.append(folder)

    def folders_for(self, kind: str) -> list[Path]:
        if kind not in self.folders:
            raise InputError(f"Model kind {kind!r} is unknown; expected one of {', '.join(sorted(self.folders))}.")
        return list(self.folders[kind])

    # -- listing ------------------------------------------------------------------------------------------------

    def list(self, kind: str) -> list[str]:
        """Names of all models of `kind` (relative to their folder, '/'-separated, sorted, no duplicates).

        Model files have one of the MODEL_SUFFIXES; a folder holding model_index.json (diffusers) counts as one
        model. Hidden files and links leading outside the folder are left out.
        """
        names: set[str] = set()
        for folder in self.folders_for(kind):
            if folder.is_dir():
                names.update(_models_in(folder))
        return sorted(names)

    # -- lookup -------------------------------------------------------------------------------------------------

    def resolve(self, kind: str, name: str) -> Path:
        """The file (or diffusers folder) of the model `name`, searched in the folders of `kind` in order."""
        parts = _name_parts(kind, name)
        folders = self.folders_for(kind)
        for folder in folders:
            candidate = folder.joinpath(*parts)
            if not candidate.exists():
                continue
            real = candidate.resolve()
            if not _inside(real, folder.resolve()):
                raise InputError(
                    f"Model name {name!r} is a link that leads outside the {kind} folder {folder}; add its real "
                    "folder with extra_model_paths.yaml instead."
                )
            if _is_model(real):
                return real
        where = ", ".join(str(f) for f in folders)
        raise CheckpointError(f"No {kind} model named {name!r} was found in {where}.")

    # -- extra_model_paths.yaml -----------------------------------------------------------------------------------

    def add_extra_paths_yaml(self, path: str | Path) -> list[tuple[str, Path]]:
        """Add the folders of a ComfyUI `extra_model_paths.yaml`; returns the (kind, folder) pairs added."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AtelierError(f"{path} does not exist; expected an extra_model_paths.yaml file.") from None
        except (yaml.YAMLError, UnicodeDecodeError):
            raise AtelierError(f"{path.name} is not valid YAML.") from None
        if data is None:
            return []
        if not isinstance(data, dict):
            raise AtelierError(f"{path.name} should hold named sections (like a1111:), each a set of folders.")
        added = []
        for section_name, section in data.items():
            if section is None:
                continue  # an empty or fully commented-out section
            if not isinstance(section, dict):
                raise AtelierError(f"{path.name}: section {section_name!r} should map kinds to folders.")
            added += self._add_section(section, path, section_name)
        return added

    def _add_section(self, section: dict, yaml_path: Path, section_name: str) -> list[tuple[str, Path]]:
        section = dict(section)
        base = section.pop("base_path", None)
        first = bool(section.pop("is_default", False))
        yaml_dir = yaml_path.resolve().parent
        if base is not None:
            base = Path(os.path.expandvars(os.path.expanduser(str(base))))
            base = base if base.is_absolute() else yaml_dir / base
        added = []
        for kind, value in section.items():
            lines = value if isinstance(value, list) else str(value).split("\n")
            for line in (str(x).strip() for x in lines):
                if not line:
                    continue
                folder = Path(os.path.expandvars(os.path.expanduser(line)))
                if not folder.is_absolute():
                    folder = (base if base is not None else yaml_dir) / folder
                log.info("Model folder for %s from %s/%s: %s", kind, yaml_path.name, section_name, folder)
                self.add_folder(str(kind), folder, first=first)
                added.append((str(kind), folder))
        return added


# --------------------------------------------------------------------------------------------------------------


def _name_parts(kind: str, name: str) -> list[str]:
    """The parts of a model name, '/' or '\\' separated, refusing anything that could leave the folder."""
    bad = (
        not name or "\0" in name or name.startswith(("/", "\\", "~")) or (len(name) > 1 and name[1] == ":")  # C:\...
    )
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if bad or not parts or ".." in parts:
        raise InputError(
            f"Model name {name!r} is not allowed; expected a name relative to the {kind} folder, without '..'."
        )
    return parts


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_model(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in MODEL_SUFFIXES
    return (path / "model_index.json").is_file()


def _models_in(folder: Path) -> list[str]:
    """Relative names of the models under `folder`, following links only where they stay inside it."""
    real_root = folder.resolve()
    found, seen = [], {real_root}
    for current, dirs, files in os.walk(folder, followlinks=True):
        here = Path(current)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            real = sub.resolve()
            if d.startswith(".") or not _inside(real, real_root) or real in seen:
                continue  # hidden, leading outside, or a link back to a folder already walked
            seen.add(real)
            if (sub / "model_index.json").is_file():
                found.append(sub.relative_to(folder).as_posix())  # a diffusers folder is one model
            else:
                keep.append(d)
        dirs[:] = keep
        for f in files:
            file = here / f
            if f.startswith(".") or file.suffix.lower() not in MODEL_SUFFIXES:
                continue
            if _inside(file.resolve(), real_root):
                found.append(file.relative_to(folder).as_posix())
    return found
