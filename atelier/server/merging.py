"""Which queued prompts may share one sampling call, and how a prompt is cut into the parts the scheduler turns.

Only one shape of API prompt is merged: the classic txt2img graph, which is also the lab's generate view
(generation.api_graph), with or without a CLIPSetLastLayer (clip skip):

    CheckpointLoaderSimple ─MODEL──────────────────────────► KSampler ◄─LATENT─ EmptyLatentImage
          │ CLIP (─► CLIPSetLastLayer) ─► CLIPTextEncode x2 ──┘ positive, negative
          └ VAE ──────────────────────────► VAEDecode ◄── KSampler;  VAEDecode ─► SaveImage or PreviewImage

Two such prompts share a `merge_key` when everything that changes the computation is equal: checkpoint, width,
height, steps, CFG, sampler, scheduler, denoise and clip skip. What may differ is what each member brings to the
batch (atelier/batching.py): prompt and negative prompt, seed, batch size (each image is a member of its own) and
where the images go (SaveImage's prefix, or PreviewImage). Any other graph (img2img, film strips, KSamplerAdvanced,
LoRAs, a link where a number should be...) has no key and runs alone, through the graph executor as today.

CFG 1 is not merged either: it skips the unconditional pass, so a lone one-image job samples a batch of ONE, and
torch's CPU convolutions compute a batch of one small image with another kernel than a batch of several (see
batching.py); its images would differ from the lone ones in the last bits. For the same reason a CFG 1 job with
several images is not cut into parts.

Pure functions of the prompt's dict: no torch, no aiohttp.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from atelier.server.scheduler import Batch, Part

OUTPUTS = ("SaveImage", "PreviewImage")


@dataclasses.dataclass(frozen=True)
class Txt2Img:
    """The settings of a classic txt2img prompt, read from its nodes."""

    checkpoint: str
    prompt: str
    negative: str
    seed: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    denoise: float
    width: int
    height: int
    batch: int
    clip_skip: int  # 0: no CLIPSetLastLayer (the family's own layer); n: CLIPSetLastLayer(stop_at_clip_layer=-n)
    output: str  # the id of the SaveImage or PreviewImage node
    filename_prefix: str | None  # SaveImage's; None for PreviewImage
    sampler_node: str = ""  # the id of the KSampler (its progress and previews are reported under this id)

    @property
    def merge_key(self) -> tuple | None:
        """Equal for prompts that may share one sampling call; None for CFG 1 (see the module's docstring)."""
        if math.isclose(self.cfg, 1.0):
            return None
        return (
            "txt2img",
            self.checkpoint,
            self.width,
            self.height,
            self.steps,
            float(self.cfg),
            self.sampler,
            self.scheduler,
            float(self.denoise),
            self.clip_skip,
        )


class _NotTxt2Img(Exception):
    """Raised while reading a prompt that is some other graph; never leaves this module."""


def _link(value: Any) -> tuple[str, int] | None:
    """(node id, output slot) for an API-format link ["3", 0], else None."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
        return value[0], value[1]
    return None


def _literal(inputs: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    value = inputs.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _NotTxt2Img
    return value


def txt2img(prompt: dict[str, Any]) -> Txt2Img | None:
    """The prompt's settings if it is the classic txt2img graph (see the module's docstring), else None."""
    try:
        return _read(prompt)
    except _NotTxt2Img:
        return None


def _node(prompt: dict, link: tuple[str, int] | None, class_type: str, slot: int = 0) -> dict:
    """The inputs of the node `link` points to, if it is a `class_type` and the link reads output `slot`."""
    if link is None or link[1] != slot or not isinstance(prompt.get(link[0]), dict):
        raise _NotTxt2Img
    node = prompt[link[0]]
    if node.get("class_type") != class_type or not isinstance(node.get("inputs"), dict):
        raise _NotTxt2Img
    return node["inputs"]


def _read(prompt: dict[str, Any]) -> Txt2Img:
    if not isinstance(prompt, dict):
        raise _NotTxt2Img
    outputs = [i for i, n in prompt.items() if isinstance(n, dict) and n.get("class_type") in OUTPUTS]
    if len(outputs) != 1:
        raise _NotTxt2Img
    out = prompt[outputs[0]]
    decode_link = _link(out.get("inputs", {}).get("images"))
    decode = _node(prompt, decode_link, "VAEDecode")
    sampler_link = _link(decode.get("samples"))
    ks = _node(prompt, sampler_link, "KSampler")
    loader_link = _link(ks.get("model"))
    loader = _node(prompt, loader_link, "CheckpointLoaderSimple")
    vae_link = _link(decode.get("vae"))
    if vae_link != (loader_link[0], 2):
        raise _NotTxt2Img
    latent = _node(prompt, _link(ks.get("latent_image")), "EmptyLatentImage")

    texts, clip_sources = [], set()
    for side in ("positive", "negative"):
        encoder = _node(prompt, _link(ks.get(side)), "CLIPTextEncode")
        texts.append(_literal(encoder, "text", str))
        clip_sources.add(_link(encoder.get("clip")))
    if len(clip_sources) != 1:
        raise _NotTxt2Img
    (clip_link,) = clip_sources
    used = {
        outputs[0],
        decode_link[0],
        sampler_link[0],
        loader_link[0],
        _link(ks["latent_image"])[0],
        _link(ks["positive"])[0],
        _link(ks["negative"])[0],
    }
    if clip_link == (loader_link[0], 1):
        clip_skip = 0
    else:
        skip = _node(prompt, clip_link, "CLIPSetLastLayer")
        if _link(skip.get("clip")) != (loader_link[0], 1):
            raise _NotTxt2Img
        clip_skip = -_literal(skip, "stop_at_clip_layer", int)
        used.add(clip_link[0])
    if set(prompt) != used:  # any other node (a LoRA, a second sampler, a preview of the latent...) runs alone
        raise _NotTxt2Img

    filename_prefix = _literal(out["inputs"], "filename_prefix", str) if out["class_type"] == "SaveImage" else None
    return Txt2Img(
        checkpoint=_literal(loader, "ckpt_name", str),
        prompt=texts[0],
        negative=texts[1],
        seed=_literal(ks, "seed", int),
        steps=_literal(ks, "steps", int),
        cfg=_literal(ks, "cfg", (int, float)),
        sampler=_literal(ks, "sampler_name", str),
        scheduler=_literal(ks, "scheduler", str),
        denoise=_literal(ks, "denoise", (int, float)) if "denoise" in ks else 1.0,
        width=_literal(latent, "width", int),
        height=_literal(latent, "height", int),
        batch=_literal(latent, "batch_size", int) if "batch_size" in latent else 1,
        clip_skip=clip_skip,
        output=outputs[0],
        filename_prefix=filename_prefix,
        sampler_node=sampler_link[0],
    )


def merge_key(prompt: dict[str, Any]) -> tuple | None:
    """The key under which `prompt` may share a sampling call with others; None when it must run alone."""
    found = txt2img(prompt)
    return None if found is None else found.merge_key


@dataclasses.dataclass(frozen=True)
class ImageOf:
    """A part's payload: image `index` of the `of` images of prompt `prompt_id` (of = 1 for an unsplit prompt)."""

    prompt_id: str
    index: int
    of: int


def parts(prompt_id: str, prompt: dict[str, Any]) -> list[Part]:
    """The scheduler's parts for a queued prompt.

    A mergeable txt2img prompt of N images gives N one-image parts with its merge key: they interleave with other
    learners' images and may join their batches. Anything else is one part, alone, weighing its batch size when
    it is a txt2img graph (CFG 1) and one image otherwise (the scheduler cannot see what another graph makes).
    """
    found = txt2img(prompt)
    if found is None or found.merge_key is None:
        return [whole(prompt_id, prompt)]
    return [
        Part(
            prompt_id,
            i,
            merge_key=found.merge_key,
            pixels=found.width * found.height,
            payload=ImageOf(prompt_id, i, found.batch),
        )
        for i in range(max(1, found.batch))
    ]


def whole(prompt_id: str, prompt: dict[str, Any]) -> Part:
    """The whole prompt as one part that runs alone, weighing its images (a txt2img graph's batch size, else 1)."""
    found = txt2img(prompt)
    images = 1 if found is None else max(1, found.batch)
    return Part(prompt_id, 0, images=images, cost=float(images), payload=ImageOf(prompt_id, 0, 1))


def runs_merged(batch: Batch) -> bool:
    """Whether a batch goes to the merged worker (batch_worker.py): parts with a merge key, unless it is one whole
    one-image prompt, which the graph executor runs as it always has (its node cache included)."""
    if batch.merge_key is None:
        return False
    return not (len(batch.parts) == 1 and batch.parts[0].payload.of == 1)
