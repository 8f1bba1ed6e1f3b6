"""Stage 2, the text encoder: the CLIP text transformer and a small image encoder trained contrastively (InfoNCE,
Radford et al. 2021) on the world's English and French captions, so that "rouge" lands near "red".

The captions are those of the job's world (`--world`): the second world's need no new vocabulary (CLIP's byte-level
BPE has tokens for every word of both, at most 56 of the 75 a prompt can take), only new meanings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from atelier.models.clip import CLIPTextEncoder
from atelier.world.encoders import ImageEncoder
from atelier.world.train.loop import Stage, StageJob
from atelier.world.train.ranks import autocast, wrap_ddp
from atelier.world.train.shapes import EmbeddedShapes
from atelier.world.train.weights import load_weights, save_weights


class ContrastivePair(nn.Module):
    """CLIP's two towers and its learnable temperature (initialised at 1/0.07)."""

    def __init__(self, shapes: EmbeddedShapes):
        super().__init__()
        self.text = CLIPTextEncoder(shapes.text)
        self.image = ImageEncoder(shapes.text.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        t = F.normalize(self.text(ids).projected.float(), dim=-1)  # (B, D)
        v = F.normalize(self.image(images).float(), dim=-1)  # (B, D)
        logits = self.logit_scale.exp().clamp(max=100) * v @ t.T  # (B, B): image i vs caption j
        # Scenes rendered from the same caption are true pairs too; with a large world they are rare.
        labels = torch.arange(len(images), device=images.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_clip(job: StageJob) -> None:
    torch.manual_seed(job.seed + 1)
    pair = ContrastivePair(job.shapes).to(job.ranks.device)
    opt = torch.optim.AdamW(pair.parameters(), lr=job.settings.lr, weight_decay=0.1, betas=(0.9, 0.98))
    stage = Stage("clip", job)
    towers = (job.out / "text_encoder.safetensors", job.out / "image_encoder.safetensors")
    if not stage.state_path.exists() and all(path.exists() for path in towers):
        # Continue from existing towers (what --init unpacks): the text states the UNet was trained on move little,
        # so it can follow by fine-tuning. The temperature is not stored with them: it starts again at 0.07.
        load_weights(towers[0], pair.text)
        load_weights(towers[1], pair.image)
        if job.ranks.main:
            print("[clip] starting from the existing text_encoder and image_encoder.safetensors", flush=True)
    stage.resume({"pair": pair}, opt)
    model = wrap_ddp(pair, job.ranks)
    gen = torch.Generator().manual_seed(job.seed * 1000 + 7 + job.ranks.rank + stage.step)

    def loss_fn() -> tuple[torch.Tensor, dict]:
        images, ids = job.data.batch(job.settings.batch, gen)
        with autocast(job.ranks):
            loss = model(images, ids)
        return loss, {"temperature": 1 / pair.logit_scale.exp().item()}

    stage.run({"pair": pair}, opt, loss_fn)
    if job.ranks.main:
        save_weights(job.out / "text_encoder.safetensors", pair.text, job.shapes.text)
        save_weights(job.out / "image_encoder.safetensors", pair.image)
