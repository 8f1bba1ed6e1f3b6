"""The workers that run the scheduler's batches (server/scheduler.py's `Worker`: `run(batch) -> results`).

- `MergedTxt2ImgWorker` runs a batch of merged txt2img parts (server/merging.py) as one sampling call and
  returns one `PartImage` per part, in the batch's order, and nothing else of the server's (no files, no history,
  no WebSocket): the caller saves and reports, so this worker could as well run on another machine. Each image
  equals the one its prompt makes alone (generation.run, whose pixels the graph executor reproduces:
  tests/test_cli.py), bit for bit on the CPU in fp32 (atelier/batching.py says why and how).
- `LocalWorker` is this machine's worker as the prompt queue sees it: a merged batch goes to the merged worker,
  a graph that runs alone (any node-editor graph, or a lone one-image txt2img job) to the graph executor.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from atelier.batching import Member, OnMemberStep, decode_members, sample_members
from atelier.errors import InputError
from atelier.graph.kit import ClipModel, preview_map, step_preview
from atelier.imaging import bchw_signed_to_pil
from atelier.pipeline import Cond, DiffusionModel, SamplerSettings, Step, with_vectors
from atelier.server.merging import ImageOf, Txt2Img, runs_merged, txt2img
from atelier.server.scheduler import Batch

if TYPE_CHECKING:
    from atelier.models.checkpoint import Checkpoint
    from atelier.models.vae import VAE


@dataclasses.dataclass(frozen=True)
class Models:
    """What a CheckpointLoaderSimple gives (MODEL, CLIP, VAE): the graph executor's own objects, so the merged
    worker shares the loaded weights with the graphs that run alone (and the node cache keeps one copy)."""

    model: DiffusionModel
    clip: ClipModel
    vae: VAE

    @classmethod
    def of(cls, ckpt: Checkpoint) -> Models:
        """A loaded Checkpoint as MODEL, CLIP and VAE (without preview map, LoRAs or embeddings)."""
        model = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor)
        return cls(model, ClipModel(ckpt.text_encoder, ckpt.tokenizer, clip_skip=ckpt.clip_skip), ckpt.vae)


@dataclasses.dataclass(frozen=True)
class PartImage:
    """What a part of a merged batch made: image `index` of the prompt `prompt_id` (of `of` images)."""

    prompt_id: str
    index: int
    of: int
    image: Image.Image


class MergedTxt2ImgWorker:
    """Runs batches whose parts all carry the same merge key; each part's payload is an `ImageOf`.

    load(checkpoint name) -> its `Models` (or a loaded Checkpoint); prompt_of(prompt id) -> its API prompt.
    `on_step(rows, step)` and `interrupt` are passed to batching.sample_members (rows: positions in the batch).
    """

    def __init__(
        self,
        load: Callable[[str], Models | Checkpoint],
        prompt_of: Callable[[str], dict],
        batch_images: int,
        on_step: OnMemberStep | None = None,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.load, self.prompt_of, self.batch_images = load, prompt_of, batch_images
        self.on_step, self.interrupt = on_step, interrupt

    def models(self, checkpoint: str) -> Models:
        loaded = self.load(checkpoint)
        return loaded if isinstance(loaded, Models) else Models.of(loaded)

    def run(self, batch: Batch) -> Sequence[PartImage]:
        wanted: list[tuple[ImageOf, Txt2Img]] = []
        for part in batch.parts:
            found = txt2img(self.prompt_of(part.payload.prompt_id))
            if found is None or found.merge_key != batch.merge_key or batch.merge_key is None:
                raise InputError(f"Prompt {part.payload.prompt_id!r} cannot run in this merged batch; run it alone.")
            wanted.append((part.payload, found))
        first = wanted[0][1]
        models = self.models(first.checkpoint)

        config = models.model.unet.config

        def encode(t: Txt2Img, negative: bool) -> Cond:
            """As CLIPTextEncode (embeddings included) then the sampler (SDXL's vector y for this size)."""
            clip = models.clip  # no CLIPSetLastLayer: the family's layer; else CLIPSetLastLayer's rule
            if t.clip_skip:
                clip = dataclasses.replace(clip, clip_skip=min(t.clip_skip, clip.layers))
            cond = clip.conditioning(t.negative if negative else t.prompt)
            shape = (1, 4, t.height // 8, t.width // 8)
            return with_vectors([cond], config, shape, negative)[0]

        members = []
        for part, t in wanted:
            positive, negative = encode(t, False), encode(t, True)
            members.append(Member(positive.context, negative.context, t.seed, part.index, part.of,
                                  positive.y, negative.y))  # fmt: skip
        settings = SamplerSettings(0, first.steps, first.cfg, first.sampler, first.scheduler, first.denoise)
        model = models.model
        latents = sample_members(model, members, settings, first.width, first.height, self.on_step, self.interrupt)
        vae = models.vae
        images = decode_members(vae, latents, [(part.index, part.of) for part, _ in wanted])
        return [
            PartImage(part.prompt_id, part.index, part.of, bchw_signed_to_pil(image)[0])
            for (part, _), image in zip(wanted, images, strict=True)
        ]


class LocalWorker:
    """This machine's worker: `run(batch)` gives [PartImage per part] for a merged batch (`runs_merged`), or
    [run_graph(prompt id)] (the executor's result) for a prompt that runs alone."""

    def __init__(
        self, merged: MergedTxt2ImgWorker | None, run_graph: Callable[[str], Any], batch_images: int = 1
    ) -> None:
        self.merged, self.run_graph = merged, run_graph
        self.batch_images = batch_images if merged is not None else 1
        self.slots = 1  # one batch at a time: one executor, one sampling call

    def run(self, batch: Batch) -> Sequence[Any]:
        if runs_merged(batch):
            if self.merged is None:
                raise InputError("This server has no merged txt2img worker; expected prompts that run alone.")
            return self.merged.run(batch)
        (part,) = batch.parts
        return [self.run_graph(part.job_id)]


# What the merged worker reports of each step: (row in the batch, steps done, steps in all, preview), where
# preview() makes the row's live preview (None without a latent -> RGB map), only for the rows someone watches.
OnPartStep = Callable[[int, int, int, Callable[[], "Image.Image | None"]], None]


def executor_loader(executor: Any) -> Callable[[str], Models]:
    """load(checkpoint name) through the graph executor's CheckpointLoaderSimple: its node cache then holds one
    copy of the weights for the graphs that run alone and for the merged batches (the same node signature)."""

    def load(name: str) -> Models:
        graph = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}}
        result = executor.execute(graph, ["ckpt"])
        if result.status != "success":
            raise InputError(f"The checkpoint {name!r} could not be loaded: {result.error.get('exception_message')}")
        (model,), (clip,), (vae,) = result.outputs["ckpt"]
        return Models(model, clip, vae)

    return load


def local_worker(
    executor: Any,
    prompt_of: Callable[[str], dict],
    run_graph: Callable[[str], Any],
    on_part_step: OnPartStep,
    interrupt: threading.Event,
    batch_images: int,
) -> LocalWorker:
    """The server's worker: merged batches sampled together (weights from the executor's cache), with progress
    and a live preview per row through `on_part_step`; everything else through `run_graph`."""
    load = executor_loader(executor)
    current: dict[str, Models] = {}

    def remembered(name: str) -> Models:
        current["models"] = load(name)
        return current["models"]

    def on_step(rows: Sequence[int], step: Step) -> None:
        to_rgb = preview_map(current["models"].model) if "models" in current else None
        for j, row in enumerate(rows):
            latent = step.denoised[j : j + 1]  # (1, 4, h, w), scaled latent units
            preview = lambda latent=latent: None if to_rgb is None else step_preview(to_rgb, latent)  # noqa: E731
            on_part_step(row, step.index + 1, step.total, preview)

    merged = MergedTxt2ImgWorker(remembered, prompt_of, batch_images, on_step, interrupt)
    return LocalWorker(merged, run_graph, batch_images)
