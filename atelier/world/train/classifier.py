"""The attribute classifier that `atelier eval` and the vae stage's judge read images with, trained on rendered
scenes of the job's world whose contents are known (every kind-colour pair, held-out ones included).

After training it reads 2,000 fresh renders, and when the run folder holds an autoencoder (from --init or the vae
stage) the same renders after a trip through it: the ceiling of generation that the vae stage's judge guards.
"""

from __future__ import annotations

import dataclasses
import json
import time

import torch

from atelier.imaging import bhwc_uint8_to_bchw_signed, uint8_to_signed
from atelier.world.train.loop import Stage, StageJob
from atelier.world.train.ranks import autocast, wrap_ddp
from atelier.world.train.weights import load_trained_vae, save_weights


@dataclasses.dataclass(frozen=True)
class ClassifierOptions:
    """The classifier stage's own options: it renders labelled scenes of its own rather than the stages' world."""

    images_per_rank: int = 50_000  # labelled scenes rendered per rank (the command line passes --images)


def train_classifier(job: StageJob, options: ClassifierOptions = ClassifierOptions()) -> None:
    from atelier.world.evaluate import (
        classifier_accuracy,
        classifier_loss,
        kind_confusions,
        new_classifier,
        object_kind_accuracy,
        read_images,
        render_labelled,
        vae_round_trip,
    )

    start = time.time()
    count = options.images_per_rank
    images, labels, _ = render_labelled(
        job.seed + 5, count, job.shapes.image_size, job.workers, start=job.ranks.rank * count, world=job.world
    )
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(job.ranks.device)
    labels = torch.from_numpy(labels).to(job.ranks.device)
    if job.ranks.main:
        print(f"[classifier] {len(images)} labelled scenes per rank in {time.time() - start:.1f} s", flush=True)
    torch.manual_seed(job.seed + 3)
    classifier = new_classifier(job.world).to(job.ranks.device)
    opt = torch.optim.AdamW(classifier.parameters(), lr=job.settings.lr, weight_decay=0.05)
    stage = Stage("classifier", job)
    stage.resume({"classifier": classifier}, opt)
    model = wrap_ddp(classifier, job.ranks)
    gen = torch.Generator().manual_seed(job.seed * 1000 + 21 + job.ranks.rank + stage.step)

    def loss_fn() -> tuple[torch.Tensor, dict]:
        idx = torch.randint(0, len(images), (job.settings.batch,), generator=gen).to(job.ranks.device)
        with autocast(job.ranks):
            logits = model(uint8_to_signed(images[idx]))
        return classifier_loss({k: v.float() for k, v in logits.items()}, labels[idx]), {}

    stage.run({"classifier": classifier}, opt, loss_fn, clip_norm=None)
    if job.ranks.main:
        classifier.eval()
        fresh, _, scenes = render_labelled(
            job.seed + 999, 2000, job.shapes.image_size, job.workers, start=10**9, world=job.world
        )
        fresh = bhwc_uint8_to_bchw_signed(fresh)
        readings = read_images(classifier, fresh, world=job.world)
        acc = classifier_accuracy(readings, scenes)
        record = {"fresh_accuracy": acc, "kind_confusions": kind_confusions(readings, scenes)}
        print(f"[classifier] accuracy on 2000 fresh renders: {acc}", flush=True)
        print(f"[classifier] most frequent kind misreadings: {record['kind_confusions']}", flush=True)
        if (job.out / "vae.safetensors").exists():
            vae = load_trained_vae(job.out).to(job.ranks.device)
            seen = read_images(classifier, vae_round_trip(vae.eval(), fresh), world=job.world)
            record["vae_round_trip"] = classifier_accuracy(seen, scenes) | {
                "object_kind": object_kind_accuracy(seen, scenes)
            }
            print(f"[classifier] the same renders through the VAE: {record['vae_round_trip']}", flush=True)
        with (job.out / "classifier.log.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        save_weights(job.out / "classifier.safetensors", classifier)
