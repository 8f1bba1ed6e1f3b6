"""The worker that runs a batch of merged txt2img parts (server/merging.py) as one sampling call.

It is a scheduler `Worker`: `run(batch)` returns one `PartImage` per part, in the batch's order, and nothing else
of the server's (no files, no history, no WebSocket): the caller saves and reports, so this worker could as well
run on another machine. Each image equals the one its prompt makes alone (generation.run, whose pixels the graph
executor reproduces: tests/test_cli.py), bit for bit on the CPU in fp32 (atelier/batching.py says why and how).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from PIL import Image

from atelier.batching import Member, OnMemberStep, decode_member, sample_members
from atelier.errors import InputError
from atelier.imaging import bchw_signed_to_pil
from atelier.pipeline import DiffusionModel, SamplerSettings, encode_prompt
from atelier.server.merging import ImageOf, Txt2Img, txt2img
from atelier.server.scheduler import Batch

if TYPE_CHECKING:
    from atelier.models.checkpoint import Checkpoint


@dataclasses.dataclass(frozen=True)
class PartImage:
    """What a part of a merged batch made: image `index` of the prompt `prompt_id` (of `of` images)."""

    prompt_id: str
    index: int
    of: int
    image: Image.Image


class MergedTxt2ImgWorker:
    """Runs batches whose parts all carry the same merge key; each part's payload is an `ImageOf`.

    load(checkpoint name) -> the loaded Checkpoint; prompt_of(prompt id) -> its API prompt. `on_step(rows, step)`
    and `interrupt` are passed to batching.sample_members (rows: positions in the batch).
    """

    def __init__(
        self,
        load: Callable[[str], Checkpoint],
        prompt_of: Callable[[str], dict],
        batch_images: int,
        on_step: OnMemberStep | None = None,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.load, self.prompt_of, self.batch_images = load, prompt_of, batch_images
        self.on_step, self.interrupt = on_step, interrupt

    def run(self, batch: Batch) -> Sequence[PartImage]:
        wanted: list[tuple[ImageOf, Txt2Img]] = []
        for part in batch.parts:
            found = txt2img(self.prompt_of(part.payload.prompt_id))
            if found is None or found.merge_key != batch.merge_key or batch.merge_key is None:
                raise InputError(f"Prompt {part.payload.prompt_id!r} cannot run in this merged batch; run it alone.")
            wanted.append((part.payload, found))
        first = wanted[0][1]
        ckpt = self.load(first.checkpoint)

        def encode(text: str, clip_skip: int):
            return encode_prompt(ckpt.text_encoder, ckpt.tokenizer, text, clip_skip)  # (1, 77 * chunks, D)

        members = [
            Member(encode(t.prompt, t.clip_skip), encode(t.negative, t.clip_skip), t.seed, part.index, part.of)
            for part, t in wanted
        ]
        settings = SamplerSettings(0, first.steps, first.cfg, first.sampler, first.scheduler, first.denoise)
        model = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor)
        latents = sample_members(model, members, settings, first.width, first.height, self.on_step, self.interrupt)
        images = [decode_member(ckpt.vae, z, part.index, part.of) for (part, _), z in zip(wanted, latents, strict=True)]
        return [
            PartImage(part.prompt_id, part.index, part.of, bchw_signed_to_pil(image)[0])
            for (part, _), image in zip(wanted, images, strict=True)
        ]
