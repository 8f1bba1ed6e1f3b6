"""The attribute classifier that `atelier eval` and the vae stage's judge read images with, trained on rendered
scenes whose contents are known (every kind-colour pair, held-out ones included)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from atelier.world.train.data import WorldData
from atelier.world.train.loop import Stage, StageSettings
from atelier.world.train.ranks import Ranks, autocast, wrap_ddp
from atelier.world.train.shapes import EmbeddedShapes
from atelier.world.train.weights import save_weights


def train_classifier(
    shapes: EmbeddedShapes,
    data: WorldData,
    out: Path,
    s: StageSettings,
    ranks: Ranks,
    budget_s: float | None,
    seed: int,
    images_per_rank: int = 50_000,
    workers: int = 1,
) -> None:
    from atelier.world.evaluate import (
        classifier_accuracy,
        classifier_loss,
        new_classifier,
        read_images,
        render_labelled,
        to_unit,
    )

    start = time.time()
    images, labels, _ = render_labelled(
        seed + 5, images_per_rank, shapes.image_size, workers, start=ranks.rank * images_per_rank
    )
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(ranks.device)
    labels = torch.from_numpy(labels).to(ranks.device)
    if ranks.main:
        print(f"[classifier] {len(images)} labelled scenes per rank in {time.time() - start:.1f} s", flush=True)
    torch.manual_seed(seed + 3)
    classifier = new_classifier().to(ranks.device)
    opt = torch.optim.AdamW(classifier.parameters(), lr=s.lr, weight_decay=0.05)
    stage = Stage("classifier", out, s, ranks, budget_s)
    stage.resume({"classifier": classifier}, opt)
    model = wrap_ddp(classifier, ranks)
    gen = torch.Generator().manual_seed(seed * 1000 + 21 + ranks.rank + stage.step)

    def loss_fn() -> tuple[torch.Tensor, dict]:
        idx = torch.randint(0, len(images), (s.batch,), generator=gen).to(ranks.device)
        with autocast(ranks):
            logits = model(images[idx].float() / 127.5 - 1.0)
        return classifier_loss({k: v.float() for k, v in logits.items()}, labels[idx]), {}

    stage.run({"classifier": classifier}, opt, loss_fn, clip_norm=None)
    if ranks.main:
        classifier.eval()
        fresh, _, scenes = render_labelled(seed + 999, 2000, shapes.image_size, workers, start=10**9)
        acc = classifier_accuracy(read_images(classifier, to_unit(fresh)), scenes)
        print(f"[classifier] accuracy on 2000 fresh renders: {acc}", flush=True)
        with (out / "classifier.log.jsonl").open("a") as f:
            f.write(json.dumps({"fresh_accuracy": acc}) + "\n")
        save_weights(out / "classifier.safetensors", classifier)
