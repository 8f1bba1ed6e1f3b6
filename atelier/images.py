"""Image files in and out: PNG files that carry their generation parameters (tensor conversions: imaging.py).

A PNG written by Atelier holds the parameters twice, as the two tools people share images with expect:
- ComfyUI: tEXt `prompt` (the API graph, JSON) and `workflow` (the editor's UI graph, JSON), so dropping the file
  on the node editor reopens the exact graph;
- A1111: tEXt `parameters`, the plain-text block ("prompt / Negative prompt: ... / Steps: 20, Sampler: ...").
Files are written to a temporary name and renamed, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from atelier.errors import InputError
from atelier.imaging import bchw_signed_to_pil

# The old name of imaging.bchw_signed_to_pil, which atelier/world/eval_run.py imports.
tensor_to_pil = bchw_signed_to_pil


def load_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """Open an image file fully (decoded, file closed), or raise one clear sentence naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} {str(path)!r} does not exist; expected a path to a PNG, JPEG or WebP file.")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise InputError(f"The {what} {str(path)!r} is not a readable image ({exc}).") from None


def save_png(image: Image.Image, path: str | os.PathLike, text: dict[str, str] | None = None) -> Path:
    """Write `image` to `path` atomically, with each entry of `text` as a PNG tEXt chunk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info, compress_level=4)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def next_free_path(folder: str | os.PathLike, prefix: str) -> Path:
    """`<folder>/<prefix>_00001_.png`, numbered past every existing file: outputs are never overwritten."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(prefix).name
    taken = [p.name[len(stem) + 1 : len(stem) + 6] for p in folder.glob(f"{stem}_*_.png")]
    numbers = [int(t) for t in taken if t.isdigit()]
    return folder / f"{stem}_{max(numbers, default=0) + 1:05d}_.png"


def png_text(path: str | os.PathLike) -> dict[str, str]:
    """The tEXt/iTXt chunks of a PNG file (empty for other formats)."""
    img = load_image(path)  # decoded copy: its `info` holds the text chunks (a copy has no `.text`)
    return {k: v for k, v in img.info.items() if isinstance(v, str)}


def png_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The generation metadata of a PNG: `prompt` and `workflow` parsed as JSON, `parameters` as text."""
    text = png_text(path)
    meta: dict[str, Any] = {}
    for key in ("prompt", "workflow"):
        if key in text:
            try:
                meta[key] = json.loads(text[key])
            except json.JSONDecodeError:
                meta[key] = text[key]
    if "parameters" in text:
        meta["parameters"] = text["parameters"]
    return meta
