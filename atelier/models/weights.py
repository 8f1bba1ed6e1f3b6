"""Reading weight files: `.safetensors` (checked against its own header first) and weights-only pickles.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON ({name: {dtype, shape,
data_offsets}, "__metadata__": {str: str}}), then the raw tensor bytes. The header alone says every tensor's name,
shape and dtype, so a model can be identified and checked before a single weight is read.

Pickles (`.ckpt`, `.pt`, `.pth`, `.bin`) can run arbitrary code when opened with plain `pickle`. They are opened
here only with `torch.load(weights_only=True)`, which accepts tensors and plain containers and refuses the rest.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from atelier.errors import CheckpointError

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip

# First bytes of files that are often given by mistake.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF media file (WebP, WAV or AVI)",
}


@dataclass(frozen=True)
class TensorIndex:
    """What a weights file holds, known before reading any weight: name -> shape and dtype, plus text metadata."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    metadata: dict[str, str]


class WeightsFile:
    """One `.safetensors` file or weights-only pickle. `index` lists its tensors; `read(names, dtype)` loads some.

    A safetensors file is an 8-byte little-endian header length N, N bytes of JSON ({name: {dtype, shape,
    data_offsets}, "__metadata__": {...}}), then the raw tensor bytes. The header is checked against the file size
    here, so a truncated download is reported before any weight is read.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_file():
            what = "a folder" if self.path.is_dir() else "missing"
            raise CheckpointError(f"{self.path} is {what}; expected a model file.")
        self._sniff()
        suffix = self.path.suffix.lower()
        self._pickled: dict[str, torch.Tensor] | None = None
        if suffix in SAFETENSORS_SUFFIXES:
            self.format = "safetensors"
            self.index = self._read_safetensors_header()
        elif suffix in PICKLE_SUFFIXES:
            self.format = "pickle"
            self._pickled = self._read_pickle()
            shapes = {k: tuple(v.shape) for k, v in self._pickled.items()}
            self.index = TensorIndex(shapes, {k: v.dtype for k, v in self._pickled.items()}, {})
        else:
            raise CheckpointError(
                f"{self.name} has the extension {suffix or '(none)'}; expected one of {', '.join(MODEL_SUFFIXES)}."
            )

    def _sniff(self) -> None:
        with open(self.path, "rb") as f:
            head = f.read(8)
        for magic, what in _MAGIC.items():
            if head.startswith(magic):
                raise CheckpointError(f"{self.name} is {what}, not a model file.")

    def _read_safetensors_header(self) -> TensorIndex:
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            first = f.read(8)
            if len(first) < 8:
                raise CheckpointError(f"{self.name} has only {size} bytes; it is not a safetensors file.")
            n = int.from_bytes(first, "little")
            if n > size - 8:
                raise CheckpointError(
                    f"{self.name} is not a valid safetensors file: its header claims {n} bytes but the file has "
                    f"{size} (truncated download or not safetensors)."
                )
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.name} has a corrupt safetensors header (not valid JSON).") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.name} has a corrupt safetensors header (not a JSON object).")
        metadata = header.pop("__metadata__", None) or {}
        data_size = size - 8 - n
        shapes, dtypes = {}, {}
        for name, entry in header.items():
            try:
                dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                shape = tuple(int(d) for d in entry["shape"])
                begin, end = (int(o) for o in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.name} has a corrupt safetensors header entry for {name!r}.") from None
            numel = 1
            for d in shape:
                numel *= d
            if end > data_size or end - begin != numel * dtype.itemsize:
                raise CheckpointError(
                    f"{self.name} is truncated or corrupt: tensor {name!r} should end at byte {end} of the data but "
                    f"the file holds {data_size} bytes of data."
                )
            shapes[name], dtypes[name] = shape, dtype
        return TensorIndex(shapes, dtypes, {str(k): str(v) for k, v in metadata.items()})

    def _read_pickle(self) -> dict[str, torch.Tensor]:
        log.warning(
            "%s is a pickle; opening it with torch.load(weights_only=True), which loads tensors only and never "
            "runs code from the file. Prefer .safetensors.",
            self.name,
        )
        try:
            # Zip-format pickles (torch >= 1.6) can be memory-mapped: tensors are read from disk when used.
            with open(self.path, "rb") as f:
                is_zip = f.read(4) == b"PK\x03\x04"
            obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable pickle"
            if "weights_only" in str(error) or "global" in str(error).lower():
                raise CheckpointError(
                    f"{self.name} needs to run code from the pickle to load, which Atelier refuses; convert it to "
                    ".safetensors with a tool you trust."
                ) from None
            raise CheckpointError(f"{self.name} is not a readable PyTorch checkpoint ({first_line}).") from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{self.name} is not a readable PyTorch checkpoint ({first_line}).") from None
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{self.name} holds a {type(obj).__name__}, not a dictionary of weights.")
        # Tensors at the top level, plus one nested level (textual-inversion files keep string_to_param: {...}).
        tensors = {}
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                tensors[str(key)] = value
            elif isinstance(value, dict):
                tensors.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
        return tensors

    def read(self, names: list[str], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The tensors `names`, floating-point ones converted to `dtype` (kept as stored when None)."""

        def convert(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t

        if self._pickled is not None:
            return {name: convert(self._pickled[name]) for name in names}
        out = {}
        try:
            with safe_open(self.path, framework="pt", device="cpu") as f:
                for name in names:
                    out[name] = convert(f.get_tensor(name))
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{self.name} could not be read ({str(error).strip()[:120]}).") from None
        return out
