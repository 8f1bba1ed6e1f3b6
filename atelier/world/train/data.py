"""Data: each rank renders its own slice of the world once and keeps it in memory as uint8 (on the GPU when there
is one). The data set is never read from disk, and is the same for a given seed, whatever the number of ranks."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import torch

from atelier.imaging import uint8_to_signed
from atelier.models.tokenizer import CLIPTokenizer
from atelier.world.train.ranks import Ranks


@dataclasses.dataclass
class WorldData:
    images: torch.Tensor  # (N, 3, H, W) uint8
    tokens: torch.Tensor  # (N, K, 77) int32: K captions per image (English and French, varied wording)

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` pairs drawn with replacement: images (n, 3, H, W) in [-1, 1] and one of each image's captions (n, 77)."""
        idx = torch.randint(0, self.images.shape[0], (n,), generator=gen, device="cpu").to(self.images.device)
        pick = torch.randint(0, self.tokens.shape[1], (n,), generator=gen, device="cpu").to(self.images.device)
        images = uint8_to_signed(self.images[idx])
        return images, self.tokens[idx, pick].long()


def _tokenize_chunk(captions: list[list[str]]) -> np.ndarray:
    tok = CLIPTokenizer.from_default()
    return np.array([[tok(c) for c in per_image] for per_image in captions], dtype=np.int32)


def tokenize_all(captions: list[list[str]], workers: int) -> np.ndarray:
    """Every caption -> its 77 token ids, (N, K, 77) int32, with a pool of processes (BPE in Python is ~0.3 ms)."""
    step = max(1, -(-len(captions) // max(1, workers)))
    chunks = [captions[i : i + step] for i in range(0, len(captions), step)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            return np.concatenate(list(pool.map(_tokenize_chunk, chunks)))
    return _tokenize_chunk(captions)


def render_world(
    n: int, seed: int, ranks: Ranks, size: int, captions_per_image: int, workers: int, world: str = "v1"
) -> WorldData:
    """This rank's slice: images [rank*n, (rank+1)*n) of `world` drawn from `seed` (training split only)."""
    from atelier.world.dataset import render_dataset

    start = time.time()
    images, captions = render_dataset(
        seed=seed,
        start=ranks.rank * n,
        count=n,
        size=size,
        captions_per_image=captions_per_image,
        workers=workers,
        world=world,
    )
    ids = torch.from_numpy(tokenize_all(captions, workers))  # (N, K, 77)
    data = WorldData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(ranks.device), ids.to(ranks.device))
    if ranks.main:
        print(f"[data] {n} images x {ranks.world} ranks rendered in {time.time() - start:.1f} s", flush=True)
    return data
