"""Is the v2 judge's brittleness to softness what costs the VAE its kinds? A small CPU probe of docs/world-v2.md's
Session C: the judge fine-tuned briefly on renders softened the way a blur is (Gaussian blur sigma 0.4-1.6 px, a 2x
bilinear down-up, JPEG quality 40-90; a quarter left clean; never a VAE's output), then read before and after on the
vae stage's 1000 judge scenes: clean, through the VAE (held out from the fine-tune), blurred 1.25 px, JPEG q50.

If the softened judge reads the blur much better and the round trips no better, the VAE's losses are not softness.

    .venv/bin/python scripts/v2_judge_soften_probe.py CLASSIFIER VAE [STEPS BATCH LR]   # 300 32 2e-4: ~7 min
"""

import random
import sys
from pathlib import Path

import torch

from atelier.imaging import bhwc_uint8_to_bchw_signed
from atelier.world.evaluate import (
    classifier_loss,
    new_classifier,
    object_kind_accuracy,
    read_images,
    render_labelled,
    vae_round_trip,
)
from atelier.world.train.vae import JUDGE_SCENES_SEED
from atelier.world.train.weights import load_vae_file, load_weights
from atelier.world.vae_diagnosis import down_up, gaussian_blur, jpeg


def soften(images: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Each image (1, 3, H, W) of the batch: clean (25%), blurred (35%), down-up x2 (20%) or JPEG (20%)."""
    out = []
    for image in images.split(1):
        r = rng.random()
        if r < 0.25:
            out.append(image)
        elif r < 0.6:
            out.append(gaussian_blur(image, rng.uniform(0.4, 1.6)))
        elif r < 0.8:
            out.append(down_up(image))
        else:
            out.append(jpeg(image, rng.randrange(40, 91)))
    return torch.cat(out)


def main(classifier_path: Path, vae_path: Path, steps: int = 300, batch: int = 32, lr: float = 2e-4) -> None:
    torch.set_num_threads(1)
    judge = new_classifier("v2")
    load_weights(classifier_path, judge)
    rendered, _, scenes = render_labelled(JUDGE_SCENES_SEED, 1000, 128, 1, world="v2")
    clean = bhwc_uint8_to_bchw_signed(rendered)
    sets = {
        "clean": clean,
        "round trip": vae_round_trip(load_vae_file(vae_path).eval(), clean, batch=32),
        "blur 1.25 px": gaussian_blur(clean, 1.25),
        "jpeg q50": jpeg(clean, 50),
    }

    def reading() -> dict[str, float]:
        judge.eval()
        out = {k: round(object_kind_accuracy(read_images(judge, v, world="v2"), scenes), 4) for k, v in sets.items()}
        judge.train()
        return out

    print("before", reading(), flush=True)
    # Fresh labelled scenes of the classifier stage's stream (seed 0 + 5), past the 100,000 it trained on.
    images, labels, _ = render_labelled(5, steps * batch, 128, 1, start=300_000, world="v2")
    images, labels = bhwc_uint8_to_bchw_signed(images), torch.from_numpy(labels)
    opt, rng = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=0.05), random.Random(0)
    for step in range(steps):
        part = slice(step * batch, (step + 1) * batch)
        loss = classifier_loss(judge(soften(images[part], rng)), labels[part])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 49:
            print(f"step {step + 1} loss {loss.item():.3f}", flush=True)
    print("after", reading(), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(Path(a[0]), Path(a[1]), *(int(v) for v in a[2:4]), *(float(v) for v in a[4:5]))
