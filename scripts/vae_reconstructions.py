"""VAE round trips of fresh scenes as one PNG (top row: rendered, bottom row: encoded then decoded), for docs/.

    .venv/bin/python scripts/vae_reconstructions.py docs/training/vae-reconstructions.png [MODEL]
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atelier.imaging import bhwc_uint8_to_bchw_signed, signed_to_uint8
from atelier.models.checkpoint import load_checkpoint
from atelier.models.library import embedded_model_path
from atelier.world.dataset import render_dataset
from atelier.world.evaluate import vae_round_trip


@torch.no_grad()
def main(dest: Path, model: Path, count: int = 8, seed: int = 11) -> None:
    ckpt = load_checkpoint(model, device="cpu", dtype="fp32")
    rendered = render_dataset(seed=seed, start=10**9, count=count, size=128)[0]  # (N, 128, 128, 3) uint8
    decoded = vae_round_trip(ckpt.vae, bhwc_uint8_to_bchw_signed(rendered))  # on the 8-bit grid, in [-1, 1]
    decoded = signed_to_uint8(decoded).permute(0, 2, 3, 1).numpy()
    sheet = np.concatenate([np.concatenate(list(row), axis=1) for row in (rendered, decoded)], axis=0)
    Image.fromarray(sheet).save(dest)
    print(dest)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else embedded_model_path())
