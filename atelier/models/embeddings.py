"""Textual-inversion embeddings: new "words" learned as vectors in the text encoder's input space.

Textual inversion (Gal et al. 2022, "An Image is Worth One Word") freezes the whole model and learns only one or a
few vectors (n_vectors, width) that, put where a word's token embedding would go, make the text encoder describe a
concept. A prompt names one with ComfyUI's syntax, `embedding:name` (weighted like any word:
`(embedding:name:1.2)`); the tokenizer puts its vectors in the window in place of tokens (tokenizer.py) and the
text encoder reads them instead of rows of its token table (clip.py).

Files, from models/embeddings (ComfyUI tries `name`, then `name.safetensors`, `.pt`, `.bin`):

    A1111 .pt          {"string_to_token": {"*": id}, "string_to_param": {"*": (n, width)}, "name", "step", ...}
                       a pickle: opened with torch.load(weights_only=True), never running code (weights.py)
    .safetensors       {"emb_params": (n, width)} (SD1.x); SDXL's {"clip_l": (n, 768), "clip_g": (n, 1280)}
    diffusers          learned_embeds.bin / .safetensors: {"<token>": (width,)}

SDXL has two text towers, CLIP-L (768 wide) and OpenCLIP bigG (1280 wide), and its context puts their outputs side
by side per token, so an SDXL embedding is one set of vectors per tower, stored under the tower's name (kohya's
sdxl_train_textual_inversion.py writes `clip_l` and `clip_g`; ComfyUI's sdxl_clip.py gives each tower the key of
its name; diffusers loads the two sets with two `load_textual_inversion` calls, one per text encoder). A
one-tower file (SD1.x layouts) is used on the tower whose width it fits; the other tower reads zero vectors at
its positions, so that both towers still hold the embedding at the same positions (`tower_vectors`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from atelier.errors import AtelierError, CheckpointError
from atelier.models.paths import ModelPaths
from atelier.models.weights import WeightsFile

SUFFIXES = ("", ".safetensors", ".pt", ".bin")
TOWER_NAMES = {"clip_l": "CLIP-L", "clip_g": "bigG"}  # SDXL's towers, as its embedding files name them

log = logging.getLogger(__name__)


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


def tower_vectors(tensors: Mapping[str, Tensor], widths: Mapping[str, int], name: str) -> dict[str, Tensor]:
    """An embedding file's tensors -> the vectors each SDXL tower reads: {tower: (n_vectors, tower's width)}.

    `widths`: the towers the text encoder has and their widths ({"clip_l": 768, "clip_g": 1280}; the refiner has
    bigG alone). An SDXL file gives each tower its own key. A one-tower file (string_to_param, emb_params, one
    token's vector) goes to every tower whose width it fits, and the others read zeros there: the same n positions
    in every tower, as the context concatenates the towers per position. A file that fits no tower is refused.
    """
    if any(tower in tensors for tower in TOWER_NAMES):  # SDXL's layout: one tensor per tower
        found = {tower: embedding_vectors({tower: tensors[tower]}, width, name)
                 for tower, width in widths.items() if tower in tensors}  # fmt: skip
    else:
        vectors = embedding_vectors(tensors, None, name)
        found = {tower: vectors for tower, width in widths.items() if vectors.shape[1] == width}
    if not found:
        shapes = ", ".join(f"{key} {tuple(tensors[key].shape)}" for key in sorted(tensors)[:3])
        each = [f"{width} ({TOWER_NAMES.get(tower, tower)})" for tower, width in widths.items()]
        raise CheckpointError(
            f"{name} holds {shapes}, which fits none of this checkpoint's text towers: they read vectors "
            f"{' or '.join(each)} wide (is it an embedding for another model family?).",
            key="embedding_fits_no_tower", name=name, shapes=shapes, expected=", ".join(each),
        )
    counts = {len(v) for v in found.values()}
    if len(counts) > 1:
        told = ", ".join(f"{TOWER_NAMES.get(tower, tower)} {len(v)}" for tower, v in found.items())
        raise CheckpointError(
            f"{name} holds a different number of vectors per tower ({told}); the towers must read the same count.",
            key="embedding_tower_counts", name=name, counts=told,
        )
    (n,) = counts
    missing = [tower for tower in widths if tower not in found]
    if missing:
        log.warning("%s has no vectors for the %s tower; it reads zeros at the embedding's positions", name,
                    ", ".join(TOWER_NAMES.get(tower, tower) for tower in missing))  # fmt: skip
    return {tower: found.get(tower, torch.zeros(n, width)) for tower, width in widths.items()}


def _read_tensors(path: str | Path) -> tuple[str, dict[str, Tensor]]:
    file = WeightsFile(path)
    return file.name, file.read(list(file.index.shapes), torch.float32)


def read_embedding(path: str | Path, width: int | None) -> Tensor:
    """An embedding file -> its vectors (n_vectors, width), float32; one sentence on any problem."""
    name, tensors = _read_tensors(path)
    return embedding_vectors(tensors, width, name)


def read_tower_embedding(path: str | Path, widths: Mapping[str, int]) -> dict[str, Tensor]:
    """An embedding file -> {tower: (n_vectors, width)} for SDXL's towers (see `tower_vectors`)."""
    name, tensors = _read_tensors(path)
    return tower_vectors(tensors, widths, name)


class EmbeddingFolder:
    """`embedding:name` -> vectors, looked up in the embeddings folders (a name cannot leave them, see paths.py).

    Calling it with a name returns the vectors, or None when no file has that name; files are read once and kept
    (the last `capacity`, keyed by path and modification time, so an edited file is read again).

    For SDXL, `towers` gives each tower's width ({"clip_l": 768, "clip_g": 1280}) and `tower(name)` the lookup one
    tower's tokenizer reads: the same file, its vectors for that tower (`tower_vectors`).
    """

    def __init__(
        self, paths: ModelPaths, width: int | None, capacity: int = 32, towers: Mapping[str, int] | None = None
    ) -> None:
        self.paths, self.width, self.capacity = paths, width, capacity
        self.towers = dict(towers) if towers is not None else None
        self._read: collections.OrderedDict[tuple[Path, int], object] = collections.OrderedDict()

    @classmethod
    def for_text_encoder(cls, paths: ModelPaths, text_encoder: object) -> EmbeddingFolder:
        """The folder as `text_encoder` reads it: one width (models/clip.CLIPTextEncoder), or one per SDXL tower
        (models/clip.SDXLTextEncoder; its refiner has bigG alone)."""
        clip_g = getattr(text_encoder, "clip_g", None)
        if clip_g is None:
            return cls(paths, text_encoder.config.width)  # type: ignore[attr-defined]
        clip_l = text_encoder.clip_l  # type: ignore[attr-defined]
        towers = {"clip_l": clip_l.config.width} if clip_l is not None else {}
        towers["clip_g"] = clip_g.config.width
        return cls(paths, None, towers=towers)

    def tower(self, tower: str) -> TowerEmbeddings:
        """What `embedding:name` gives one SDXL tower ("clip_l" or "clip_g")."""
        if self.towers is None or tower not in self.towers:
            raise ValueError(f"this embeddings folder reads no {tower!r} tower (towers: {self.towers})")
        return TowerEmbeddings(self, tower)

    def find(self, name: str) -> Path | None:
        for suffix in SUFFIXES:
            try:
                path = self.paths.resolve("embeddings", name + suffix)
            except AtelierError:  # no such file, or a name that would leave the folder
                continue
            if path.is_file():
                return path
        return None

    def _cached(self, name: str) -> object | None:
        """The file `name` names, read once (one-tower: its vectors; SDXL: {tower: vectors}); None: no file."""
        path = self.find(name)
        if path is None:
            return None
        key = (path, path.stat().st_mtime_ns)
        if key not in self._read:
            if self.towers is None:
                self._read[key] = read_embedding(path, self.width)
            else:
                self._read[key] = read_tower_embedding(path, self.towers)
            while len(self._read) > self.capacity:
                self._read.popitem(last=False)
        self._read.move_to_end(key)
        return self._read[key]

    def __call__(self, name: str) -> Tensor | None:
        if self.towers is not None:
            raise ValueError("an SDXL embeddings folder is read one tower at a time: use .tower('clip_l' or 'clip_g')")
        return self._cached(name)  # type: ignore[return-value]


class TowerEmbeddings:
    """One SDXL tower's view of an EmbeddingFolder: `embedding:name` -> the (n_vectors, width) this tower reads."""

    def __init__(self, folder: EmbeddingFolder, tower: str) -> None:
        self.folder, self.tower = folder, tower

    def __call__(self, name: str) -> Tensor | None:
        found = self.folder._cached(name)
        return None if found is None else found[self.tower]  # type: ignore[index]
