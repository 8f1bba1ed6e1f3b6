"""Textual-inversion embeddings: new "words" learned as vectors in the text encoder's input space.

Textual inversion (Gal et al. 2022, "An Image is Worth One Word") freezes the whole model and learns only one or a
few vectors (n_vectors, width) that, put where a word's token embedding would go, make the text encoder describe a
concept. A prompt names one with ComfyUI's syntax, `embedding:name` (weighted like any word:
`(embedding:name:1.2)`); the tokenizer puts its vectors in the window in place of tokens (tokenizer.py) and the
text encoder reads them instead of rows of its token table (clip.py).

Files, from models/embeddings (ComfyUI tries `name`, then `name.safetensors`, `.pt`, `.bin`):

    A1111 .pt          {"string_to_token": {"*": id}, "string_to_param": {"*": (n, width)}, "name", "step", ...}
                       a pickle: opened with torch.load(weights_only=True), never running code (weights.py)
    .safetensors       {"emb_params": (n, width)} (SD1.x); SDXL's {"clip_l": ..., "clip_g": ...} gives clip_l
    diffusers          learned_embeds.bin / .safetensors: {"<token>": (width,)}
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from atelier.errors import AtelierError, CheckpointError
from atelier.models.paths import ModelPaths
from atelier.models.weights import WeightsFile

SUFFIXES = ("", ".safetensors", ".pt", ".bin")


def embedding_vectors(tensors: Mapping[str, Tensor], width: int | None, name: str) -> Tensor:
    """The (n_vectors, width) float32 vectors of an embedding file's tensors, whichever layout wrote it (any width
    when `width` is None, e.g. to count the positions an embedding takes)."""
    params = [k for k in tensors if k.startswith("string_to_param.")]
    if params:
        key = params[0]
    elif "emb_params" in tensors:
        key = "emb_params"
    elif "clip_l" in tensors:
        key = "clip_l"
    elif len(tensors) == 1:  # diffusers: one token -> its vector
        key = next(iter(tensors))
    else:
        shown = ", ".join(sorted(tensors)[:3]) or "nothing"
        raise CheckpointError(
            f"{name} is not a textual-inversion embedding: it holds {shown} where string_to_param, emb_params, "
            "clip_l or a single token's vector was expected."
        )
    vectors = tensors[key].detach().float()
    vectors = vectors.reshape(1, -1) if vectors.ndim == 1 else vectors
    if vectors.ndim != 2 or (width is not None and vectors.shape[1] != width):
        raise CheckpointError(
            f"{name} holds vectors of shape {tuple(tensors[key].shape)}; this text encoder reads vectors {width} "
            "wide (is it an embedding for another model family?)."
        )
    return vectors


def read_embedding(path: str | Path, width: int | None) -> Tensor:
    """An embedding file -> its vectors (n_vectors, width), float32; one sentence on any problem."""
    file = WeightsFile(path)
    return embedding_vectors(file.read(list(file.index.shapes), torch.float32), width, file.name)


class EmbeddingFolder:
    """`embedding:name` -> vectors, looked up in the embeddings folders (a name cannot leave them, see paths.py).

    Calling it with a name returns the vectors, or None when no file has that name; files are read once and kept
    (the last `capacity`, keyed by path and modification time, so an edited file is read again).
    """

    def __init__(self, paths: ModelPaths, width: int | None, capacity: int = 32) -> None:
        self.paths, self.width, self.capacity = paths, width, capacity
        self._read: collections.OrderedDict[tuple[Path, int], Tensor] = collections.OrderedDict()

    def find(self, name: str) -> Path | None:
        for suffix in SUFFIXES:
            try:
                path = self.paths.resolve("embeddings", name + suffix)
            except AtelierError:  # no such file, or a name that would leave the folder
                continue
            if path.is_file():
                return path
        return None

    def __call__(self, name: str) -> Tensor | None:
        path = self.find(name)
        if path is None:
            return None
        key = (path, path.stat().st_mtime_ns)
        if key not in self._read:
            self._read[key] = read_embedding(path, self.width)
            while len(self._read) > self.capacity:
                self._read.popitem(last=False)
        self._read.move_to_end(key)
        return self._read[key]
