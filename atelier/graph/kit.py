"""What every node file builds on: the node base class, the environment nodes reach, the value types and limits
they share, and the sampler glue of every node that samples.

This module is a leaf of graph/: it imports nothing of graph/ but schema.py. The core nodes (graph/nodes/) and the
teaching nodes (graph/teaching.py) import it; graph/catalog.py imports them all and binds them to one
environment. Value types follow ComfyUI so saved workflows run unchanged:

    MODEL         pipeline.DiffusionModel (UNet + schedule + latent scale)
    CLIP          ClipModel (text encoder + tokenizer + which layer to stop at)
    VAE           models.vae.VAE
    CONDITIONING  list[pipeline.Cond]
    LATENT        {"samples": RAW latents (B, 4, h, w), "noise_mask"?: (B, 1, H, W), "batch_index"?: [int]}
    IMAGE         float (B, H, W, 3) in [0, 1]
    MASK          float (B, H, W) in [0, 1]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from atelier.graph.schema import Input, NodeContext, NodeSchema
from atelier.imaging import bchw_signed_to_bhwc_unit, bhwc_unit_to_bchw_signed, bhwc_unit_to_pil
from atelier.models.library import EMBEDDED_NAME, embedded_model_path
from atelier.models.lora import WeightPatch, patched
from atelier.models.paths import ModelPaths
from atelier.pipeline import (
    Cond,
    DiffusionModel,
    OnStep,
    SamplerSettings,
    Step,
    encode_conditioning,
    is_sdxl_text_encoder,
    sample,
)
from atelier.sampling.noise import SEED_MAX
from atelier.sampling.samplers import SAMPLERS
from atelier.sampling.schedules import SCHEDULERS

MAX_RESOLUTION = 16384  # the largest width or height a node takes, in pixels (ComfyUI's limit)


@dataclasses.dataclass
class NodeEnvironment:
    """What nodes reach outside the graph: model folders, the file API of the server, device, dtype, and whether
    loaded checkpoints run the fast path (atelier/models/fast.py; None: on CUDA GPUs, off elsewhere) and in which
    precision (`--precision`) and compile mode (`--compile`)."""

    models: ModelPaths
    files: Any  # atelier.server.files.OutputFiles: save_image, input_path, input_images
    device: str | None = None
    dtype: str | None = None
    fast: bool | None = None
    precision: str = "native"  # the fast UNet's projections: "native" or "fp8" (atelier/models/fp8.py)
    compile: str = "auto"  # the fast path's torch.compile mode (`--compile`, FastOptions.compile)

    def checkpoint_names(self) -> list[str]:
        """The ckpt_name options: the embedded model first (always there, even with no file), then the files."""
        names = self.models.list("checkpoints")
        return [EMBEDDED_NAME, *[n for n in names if n != EMBEDDED_NAME]]

    def checkpoint_path(self, name: str) -> Path:
        """The file a ckpt_name names; the embedded model's name resolves to the copy shipped with Atelier when no
        checkpoint folder holds a file of that name."""
        if name == EMBEDDED_NAME and EMBEDDED_NAME not in self.models.list("checkpoints"):
            return embedded_model_path()
        return self.models.resolve("checkpoints", name)


class Node:
    """The base of Atelier's nodes: a `SCHEMA` and a `run` method (see schema.py), plus `env`, set on the bound
    subclass that graph/catalog.py makes for each registry."""

    SCHEMA: NodeSchema
    env: NodeEnvironment


@dataclasses.dataclass
class ClipModel:
    """What ComfyUI calls CLIP: the text encoder, its tokenizer, the layer to stop at (1 = last; SD 2.x and SDXL
    checkpoints read the penultimate, 2, unless CLIPSetLastLayer says otherwise), the LoRAs applied to the shared
    text encoder while a prompt is encoded (models/lora.py), and the embeddings folder. SDXL: `text_encoder` is the
    pair of towers (models/clip.SDXLTextEncoder) and `tokenizer` the pair (CLIP-L's, bigG's)."""

    text_encoder: Any
    tokenizer: Any
    clip_skip: int = 1
    patches: tuple[WeightPatch, ...] = ()
    embeddings: Any = None  # "embedding:name" -> vectors (models.embeddings.EmbeddingFolder), or None: plain text

    def encode(self, text: str, unknown: list[str] | None = None) -> torch.Tensor:
        """The prompt's context (1, 77 x chunks, width), with this CLIP's LoRAs, clip skip and embeddings;
        embedding names that match no file are appended to `unknown`. SDXL: the context alone (see `conditioning`
        for the pooled vector too)."""
        return self.conditioning(text, unknown).context

    def conditioning(self, text: str, unknown: list[str] | None = None, text_l: str | None = None) -> Cond:
        """The prompt as one conditioning entry (pipeline.encode_conditioning): SDXL's carries its pooled vector;
        `text_l`, SDXL only, is what CLIP-L reads instead of `text`."""
        with patched(self.text_encoder, self.patches):
            return encode_conditioning(
                self.text_encoder, self.tokenizer, text, self.clip_skip, self.embeddings, unknown, text_l
            )

    @property
    def is_sdxl(self) -> bool:
        return is_sdxl_text_encoder(self.text_encoder)

    @property
    def layers(self) -> int:
        """How many layers clip skip can count back through: the shallowest tower's (SDXL: CLIP-L's 12)."""
        if self.is_sdxl:
            towers = [t for t in (self.text_encoder.clip_l, self.text_encoder.clip_g) if t is not None]
            return min(t.config.layers for t in towers)
        return self.text_encoder.config.layers


def out_of_range(schema: NodeSchema, **values: Any) -> str | None:
    """The min/max check for the inputs a node's `validate_inputs` names, which validation skips for them (as
    ComfyUI's does): the sentence for the first constant outside its input's range, in validation's own words
    and naming the input (the hook's verdict is reported against every input it names), else None. Linked
    inputs arrive as None and pass (their node checks them when it runs)."""
    for name, value in values.items():
        inp = schema.input(name)
        if value is None or inp is None:
            continue
        if inp.min is not None and value < inp.min:
            return f"Value {value} of {name} smaller than min of {inp.min}"
        if inp.max is not None and value > inp.max:
            return f"Value {value} of {name} bigger than max of {inp.max}"
    return None


def vae_pixels(image: torch.Tensor) -> torch.Tensor:
    """IMAGE (B, H, W, C) in [0, 1] -> the VAE encoder's input (B, 3, H', W') in [-1, 1]: alpha dropped, cropped
    to multiples of 8 (the VAE halves the size three times), as ComfyUI's VAEEncode does."""
    h, w = image.shape[1] // 8 * 8, image.shape[2] // 8 * 8
    return bhwc_unit_to_bchw_signed(image[:, :h, :w, :3])


# --------------------------------------------------------------------------------------------------------------
# Sampler glue: the KSampler's inputs and loop, shared by every node that samples
# --------------------------------------------------------------------------------------------------------------

# Every node that samples takes its seed, steps and guidance through these three, so limits and tooltips agree.
SEED_INPUT = Input(
    "seed",
    "INT",
    default=0,
    min=0,
    max=SEED_MAX,
    control_after_generate=True,
    tooltip="The random seed used for creating the noise.",
)
STEPS_INPUT = Input("steps", "INT", default=20, min=1, max=10000, tooltip="Denoising steps.")
CFG_INPUT = Input(
    "cfg",
    "FLOAT",
    default=8.0,
    min=0.0,
    max=100.0,
    step=0.1,
    round=0.01,
    tooltip="Classifier-free guidance: how strongly the prompt pushes the image (1 = no guidance, and no "
    "unconditional pass).",
)

SAMPLER_INPUTS = (
    STEPS_INPUT,
    CFG_INPUT,
    Input("sampler_name", "COMBO", options=list(SAMPLERS), tooltip="The algorithm that walks down the sigmas."),
    Input("scheduler", "COMBO", options=list(SCHEDULERS), tooltip="How the noise levels (sigmas) are spaced."),
    Input("positive", "CONDITIONING", tooltip="What the image should show."),
    Input("negative", "CONDITIONING", tooltip="What guidance steers away from."),
    Input("latent_image", "LATENT", tooltip="The latent to denoise (zeros for txt2img)."),
)

# The KSampler's inputs in its order; nodes that sample like it (the film strip) take exactly these.
KSAMPLER_INPUTS = (
    Input("model", "MODEL", tooltip="The model used for denoising the input latent."),
    SEED_INPUT,
    *SAMPLER_INPUTS,
    Input(
        "denoise",
        "FLOAT",
        default=1.0,
        min=0.0,
        max=1.0,
        step=0.01,
        tooltip="How much of the latent is redone: 1 for txt2img, less for img2img.",
    ),
)


def run_sampler(
    ctx: NodeContext,
    model: DiffusionModel,
    latent: dict,
    positive: list[Cond],
    negative: list[Cond],
    settings: SamplerSettings,
    also_on_step: OnStep | None = None,
    **options: Any,
) -> dict:
    """The KSampler's loop, shared by KSampler, KSamplerAdvanced and the teaching nodes: progress and live
    previews through the node context; `also_on_step(step)`, when given, sees every step too (film strips,
    attention maps). `options` go to `pipeline.sample` (add_noise, start_step, ...). Returns the LATENT."""
    result = sample(
        model,
        latent["samples"],
        positive,
        negative,
        settings,
        noise_mask=latent.get("noise_mask"),
        batch_index=latent.get("batch_index"),
        on_step=progress_and_previews(ctx, model, also_on_step),
        interrupt=InterruptFlag(ctx),
        **options,
    )
    out = dict(latent)
    out["samples"] = result.latent.cpu()
    return out


def progress_and_previews(ctx: NodeContext, model: DiffusionModel, also_on_step: OnStep | None = None) -> OnStep:
    """The per-step callback of every node that samples: progress, and a live preview of the denoised guess
    (when the model has a latent -> RGB map); `also_on_step(step)` sees every step too."""
    to_rgb = preview_map(model)

    def on_step(step: Step) -> None:
        ctx.progress(step.index + 1, step.total)
        if to_rgb is not None:  # lazy: made only if the prompt wants previews (a GPU->CPU copy and a PIL image)
            ctx.preview(lambda denoised=step.denoised[:1]: step_preview(to_rgb, denoised))
        if also_on_step is not None:
            also_on_step(step)

    return on_step


def step_preview(preview_map: torch.Tensor, denoised: torch.Tensor) -> Image.Image:
    """A live preview of one step: the denoised guess (1, 4, h, w), in scaled latent units, through the (5, 3)
    linear latent -> RGB map, enlarged 8x (nearest) to the image's size. Cheap: no VAE call."""
    rgb = denoised.float().cpu().permute(0, 2, 3, 1) @ preview_map[:4] + preview_map[4]  # (1, h, w, 3) in [-1, 1]
    big = F.interpolate(rgb.permute(0, 3, 1, 2), scale_factor=8)  # (1, 3, 8h, 8w), nearest
    return bhwc_unit_to_pil(bchw_signed_to_bhwc_unit(big))[0]


def preview_map(model: DiffusionModel) -> torch.Tensor | None:
    """The (5, 3) latent -> RGB map in SCALED latent units, or None (no preview) when unknown."""
    if model.preview is None:
        return None
    scaled = model.preview.clone().float()
    scaled[:4] /= model.latent_scale  # the map was fitted on raw latents; the sampler hands scaled ones
    return scaled


class InterruptFlag:
    """Adapts the node context's check_interrupt() to the pipeline's `interrupt.is_set()` (sample, decode,
    encode): the pipeline asks it between steps and tiles, and it raises the executor's Interrupted."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def is_set(self) -> bool:
        self.ctx.check_interrupt()  # raises the executor's Interrupted when the user stopped the prompt
        return False


def target_size_inputs(step: int) -> list[Input]:
    """The width and height inputs of a resizing node (0 keeps the aspect ratio from the other side); `step` is 8
    for latents, whose side is 1/8 of the pixels'."""
    return [
        Input(
            side,
            "INT",
            default=512,
            min=0,
            max=MAX_RESOLUTION,
            step=step,
            tooltip=f"Target {side} in pixels; 0 keeps the aspect ratio from the {other}.",
        )
        for side, other in (("width", "height"), ("height", "width"))
    ]
