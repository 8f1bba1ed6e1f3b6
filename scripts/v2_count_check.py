"""Does the text encoder tell counts apart? The clip stage's check in docs/world-v2.md's plan.

For each of three kinds (cat, boat, star) and each count k = 1..4, 8 renders of k objects on a white backdrop are
matched with the nearest of the captions "one cat", "two cats", "three cats", "four cats" (French: "un chat",
"deux chats", ...) by the cosine of the image tower and the text tower, as CLIP ranks captions. Prints the share
right and the confusion matrix (rows: the count drawn, columns: the count chosen) for each folder of towers.

    .venv/bin/python scripts/v2_count_check.py runs/shipped runs/embedded
"""

import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from atelier.imaging import bhwc_uint8_to_bchw_signed
from atelier.models.tokenizer import CLIPTokenizer
from atelier.world.train.clip import ContrastivePair
from atelier.world.train.shapes import EmbeddedShapes
from atelier.world.train.weights import load_weights
from atelier.world.v2.scene import Scene, SceneObject, render
from atelier.world.v2.vocab import CELLS

# kind: (colour drawn, English captions for 1..4, French captions for 1..4)
CAPTIONS = {
    "cat": ("orange", ["one cat", "two cats", "three cats", "four cats"],
            ["un chat", "deux chats", "trois chats", "quatre chats"]),
    "boat": ("red", ["one boat", "two boats", "three boats", "four boats"],
             ["un bateau", "deux bateaux", "trois bateaux", "quatre bateaux"]),
    "star": ("yellow", ["one star", "two stars", "three stars", "four stars"],
             ["une étoile", "deux étoiles", "trois étoiles", "quatre étoiles"]),
}  # fmt: skip


def renders(kind: str, colour: str, per_count: int, rng: random.Random) -> torch.Tensor:
    """(4 * per_count, 3, 128, 128) in [-1, 1]: per_count scenes of 1, then of 2, 3 and 4 objects."""
    images = [
        render(Scene(tuple(SceneObject(kind, colour, "medium", cell) for cell in rng.sample(CELLS, k)), "white"))
        for k in range(1, 5)
        for _ in range(per_count)
    ]
    return bhwc_uint8_to_bchw_signed(np.stack(images))


@torch.no_grad()
def count_confusion(folder: Path, lang: int, per_count: int = 8) -> torch.Tensor:
    """(4, 4) counts of (drawn, chosen) over the three kinds; lang 1 = English, 2 = French."""
    pair = ContrastivePair(EmbeddedShapes()).eval()
    load_weights(folder / "text_encoder.safetensors", pair.text)
    load_weights(folder / "image_encoder.safetensors", pair.image)
    tok, confusion = CLIPTokenizer.from_default(), torch.zeros(4, 4, dtype=torch.long)
    for kind, entry in CAPTIONS.items():
        v = F.normalize(pair.image(renders(kind, entry[0], per_count, random.Random(0))), dim=-1)  # (4n, D)
        t = F.normalize(pair.text(torch.tensor([tok(c) for c in entry[lang]])).projected, dim=-1)  # (4, D)
        chosen = (v @ t.T).argmax(-1)
        for drawn, c in zip(torch.arange(4).repeat_interleave(per_count).tolist(), chosen.tolist(), strict=True):
            confusion[drawn, c] += 1
    return confusion


def main(folders: list[str]) -> None:
    torch.set_num_threads(2)
    for folder in folders:
        for lang, name in ((1, "en"), (2, "fr")):
            m = count_confusion(Path(folder), lang)
            print(f"{folder} {name}: count right {m.trace().item() / m.sum().item():.0%}, drawn x chosen {m.tolist()}")


if __name__ == "__main__":
    main(sys.argv[1:])
