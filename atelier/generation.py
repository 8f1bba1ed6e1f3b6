"""One generation, described and run: the parameters a user sets, the graph they stand for, the images made.

`GenerationParams` is what the CLI's flags and the lab's controls set. `run` turns them into images with the
pipeline functions; `api_graph` writes the same generation as ComfyUI's classic node graph, which is embedded in
every PNG (with the A1111 `parameters` text) so the image can be dropped into the node editor and run again.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from atelier.errors import InputError
from atelier.imaging import bchw_signed_to_pil, pil_to_bchw_signed, pil_to_hw_unit
from atelier.models.lora import LoRA, WeightPatch, patched
from atelier.pipeline import (
    DiffusionModel,
    OnStep,
    SamplerSettings,
    decode,
    empty_latent,
    encode,
    encode_conditioning,
    sample,
)

if TYPE_CHECKING:
    from atelier.models.checkpoint import Checkpoint
    from atelier.models.tokenizer import EmbeddingLookup


@dataclasses.dataclass
class GenerationParams:
    prompt: str
    negative: str = ""
    seed: int = 0  # -1: random, the seed used is reported
    steps: int = 20
    cfg: float = 7.5
    sampler: str = "euler"
    scheduler: str = "normal"
    width: int = 512
    height: int = 512
    batch: int = 1
    denoise: float = 1.0  # < 1 with an init image: img2img
    clip_skip: int = 1  # 1: the layer the family reads (SD1.x the last; SD 2.x, SDXL the penultimate)
    model: str = "embedded"  # the checkpoint's name, as the node editor lists it

    def sampler_settings(self, seed: int | None = None) -> SamplerSettings:
        return SamplerSettings(
            seed=self.seed if seed is None else seed,
            steps=self.steps,
            cfg=self.cfg,
            sampler=self.sampler,
            scheduler=self.scheduler,
            denoise=self.denoise,
        )

    def check(self) -> None:
        """One clear sentence for the first bad value, before anything is loaded or written."""
        if not isinstance(self.prompt, str):
            raise InputError(f"The prompt must be text, got {type(self.prompt).__name__}.")
        self.sampler_settings().check()
        empty_latent(self.width, self.height, self.batch)  # checks sizes and batch
        if not (self.seed == -1 or (isinstance(self.seed, int) and 0 <= self.seed < 2**64)):
            raise InputError(f"Seed must be a whole number from 0 to 2^64-1, or -1 for random, got {self.seed!r}.")
        if isinstance(self.clip_skip, bool) or not isinstance(self.clip_skip, int) or self.clip_skip < 1:
            raise InputError(f"Clip skip must be a whole number of at least 1, got {self.clip_skip!r}.")


@dataclasses.dataclass
class Generation:
    images: list[Image.Image]
    params: GenerationParams  # with the seed actually used
    latent: torch.Tensor  # RAW latents (B, 4, h, w)
    skipped_uncond: bool  # CFG = 1 ran only the conditional pass
    seconds: float


def run(
    ckpt: Checkpoint,
    params: GenerationParams,
    init_image: Image.Image | None = None,
    mask: Image.Image | None = None,
    on_step: OnStep | None = None,
    interrupt: threading.Event | None = None,
    loras: Sequence[tuple[LoRA, float]] = (),
    embeddings: EmbeddingLookup | None = None,
) -> Generation:
    """txt2img, or img2img with `init_image` (denoise < 1), or inpainting with `init_image` + `mask` (white = redo).

    `loras`: (LoRA read by models.lora.load_lora, strength) pairs, applied to both networks, in order, while they
    run; `embeddings`: what `embedding:name` in the prompts reads (models.embeddings.EmbeddingFolder.for_text_encoder:
    SDXL's gives each tower its own vectors)."""
    params.check()
    start = time.perf_counter()
    unet_patches = tuple(WeightPatch(lora.unet, strength, lora.name) for lora, strength in loras)
    text_patches = tuple(WeightPatch(lora.text_encoder, strength, lora.name) for lora, strength in loras)
    # Clip skip 1 is the family's own layer (SD 2.x and SDXL: the penultimate), as the graph without
    # CLIPSetLastLayer reads it; more counts back from the end, as CLIPSetLastLayer(-n) does.
    clip_skip = ckpt.clip_skip if params.clip_skip == 1 else params.clip_skip
    with patched(ckpt.text_encoder, text_patches):
        positive, negative = (
            [encode_conditioning(ckpt.text_encoder, ckpt.tokenizer, text, clip_skip, embeddings)]
            for text in (params.prompt, params.negative)
        )
    noise_mask = None
    if init_image is None:
        latent = empty_latent(params.width, params.height, params.batch)
    else:
        image = init_image.convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
        latent = encode(ckpt.vae, pil_to_bchw_signed(image)).repeat(params.batch, 1, 1, 1)
        if mask is not None:
            m = mask.convert("L").resize((params.width, params.height), Image.Resampling.BILINEAR)
            noise_mask = pil_to_hw_unit(m)[None]  # (1, H, W)
    model = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor, patches=unet_patches)
    result = sample(model, latent, positive, negative, params.sampler_settings(), noise_mask=noise_mask,
                    on_step=on_step, interrupt=interrupt)
    images = bchw_signed_to_pil(decode(ckpt.vae, result.latent))
    used = dataclasses.replace(params, seed=result.seed)
    return Generation(images, used, result.latent, result.guidance.skipped_uncond, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------------------
# The generation as a ComfyUI graph, and as A1111's parameters text
# --------------------------------------------------------------------------------------------------------------

# The node of api_graph whose output is the generation's images (SaveImage). Readers of the graph's outputs name it
# by this constant, never by the number it happens to have.
IMAGE_NODE = "9"


def api_graph(params: GenerationParams, init_image: str | None = None, mask_image: str | None = None,
              filename_prefix: str = "atelier", loras: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
    """The generation as a ComfyUI API-format prompt (the classic 7-node graph, plus image loading for img2img).

    For inpainting the mask is read from the alpha channel of the `mask_image` file, as ComfyUI's LoadImage does.
    `loras` (file name in models/loras, strength) become a chain of LoraLoader nodes between the checkpoint and
    the sampler and text encoders, as ComfyUI's LoRA example wires them.
    """
    g: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": params.model}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": params.prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": params.negative, "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": params.seed, "steps": params.steps, "cfg": params.cfg, "sampler_name": params.sampler,
                "scheduler": params.scheduler, "denoise": params.denoise, "model": ["4", 0],
                "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        IMAGE_NODE: {"class_type": "SaveImage", "inputs": {"filename_prefix": filename_prefix, "images": ["8", 0]}},
    }
    if params.clip_skip != 1:
        g["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -params.clip_skip,
                                                                 "clip": ["4", 1]}}
        g["6"]["inputs"]["clip"] = g["7"]["inputs"]["clip"] = ["10", 0]
    model, clip = ["4", 0], ["4", 1]
    for i, (name, strength) in enumerate(loras):
        node = str(40 + i)
        g[node] = {"class_type": "LoraLoader", "inputs": {"lora_name": name, "strength_model": strength,
                                                          "strength_clip": strength, "model": model, "clip": clip}}
        model, clip = [node, 0], [node, 1]
    if loras:
        g["3"]["inputs"]["model"] = model
        for user in ((g["10"],) if "10" in g else (g["6"], g["7"])):
            user["inputs"]["clip"] = clip
    if init_image is None:
        g["5"] = {"class_type": "EmptyLatentImage",
                  "inputs": {"width": params.width, "height": params.height, "batch_size": params.batch}}
    else:
        g["11"] = {"class_type": "LoadImage", "inputs": {"image": init_image}}
        g["12"] = {"class_type": "ImageScale", "inputs": {"upscale_method": "lanczos", "width": params.width,
                                                          "height": params.height, "crop": "disabled",
                                                          "image": ["11", 0]}}
        if mask_image is None:
            g["5"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["12", 0], "vae": ["4", 2]}}
        else:
            g["13"] = {"class_type": "LoadImageMask", "inputs": {"image": mask_image, "channel": "alpha"}}
            g["14"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["12", 0], "vae": ["4", 2]}}
            g["5"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["14", 0], "mask": ["13", 0]}}
        if params.batch > 1:
            g["15"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["5", 0], "amount": params.batch}}
            g["3"]["inputs"]["latent_image"] = ["15", 0]
    return dict(sorted(g.items(), key=lambda kv: int(kv[0])))


# A1111 names the samplers for people; the scheduler goes in "Schedule type".
_A1111_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS", "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_sde": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_3m_sde": "DPM++ 3M SDE", "ddim": "DDIM", "lcm": "LCM",
    "uni_pc": "UniPC", "ipndm": "iPNDM", "deis": "DEIS", "ddpm": "DDPM",
}


def a1111_parameters(params: GenerationParams, seed: int | None = None, loras: Sequence[tuple[str, float]] = ()) -> str:
    """The `parameters` text A1111 writes (and CivitAI and the ComfyUI frontend read); LoRAs are written in the
    prompt with A1111's syntax, `<lora:name:strength>`."""
    fields = [
        f"Steps: {params.steps}",
        f"Sampler: {_A1111_SAMPLERS.get(params.sampler, params.sampler)}",
        f"Schedule type: {params.scheduler.replace('_', ' ').title()}",
        f"CFG scale: {params.cfg:g}",
        f"Seed: {params.seed if seed is None else seed}",
        f"Size: {params.width}x{params.height}",
        f"Model: {Path(params.model).stem}",
    ]
    if params.denoise < 1.0:
        fields.append(f"Denoising strength: {params.denoise:g}")
    if params.clip_skip != 1:
        fields.append(f"Clip skip: {params.clip_skip}")
    text = params.prompt + "".join(f" <lora:{Path(name).stem}:{strength:g}>" for name, strength in loras)
    if params.negative:
        text += f"\nNegative prompt: {params.negative}"
    return text + "\n" + ", ".join(fields) + ", Version: Atelier"
