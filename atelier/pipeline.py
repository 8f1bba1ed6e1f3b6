"""From a prompt to pixels: the pieces of the models and of sampling/ put together.

The same four steps as ComfyUI's classic graph, as functions the graph nodes, the lab and the CLI all call:

    context  = encode_prompt(text_encoder, tokenizer, "a red circle")       # CLIPTextEncode
    latent   = empty_latent(width, height, batch)                            # EmptyLatentImage
    latent   = sample(model, latent, positive, negative, settings)           # KSampler
    images   = decode(vae, latent)                                           # VAEDecode

Latents passed between steps follow ComfyUI's convention: RAW VAE latents (what the VAE encoder outputs). The
sampler works on SCALED latents (raw * scaling_factor, roughly unit variance); `sample` converts on the way in and
out, as ComfyUI's latent format does. Every step of the sampler is reported to `on_step` (progress bars, live
previews, film strips): nothing UI-specific happens here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from atelier import device as devices
from atelier.errors import AtelierError, InputError
from atelier.imaging import signed_to_uint8
from atelier.limits import check_image_batch, check_prompt_text, check_sampling_cost
from atelier.models.controlnet import AppliedControlNet, ControlStack
from atelier.models.lora import WeightPatch, patched
from atelier.sampling.denoisers import Denoiser, DiscreteSchedule, start_latent
from atelier.sampling.guidance import GuidanceTrace, cfg_denoiser
from atelier.sampling.noise import initial_noise, resolve_seed, seeded_noise_sampler
from atelier.sampling.samplers import SAMPLERS
from atelier.sampling.schedules import SCHEDULERS, sigmas_for

if TYPE_CHECKING:
    from atelier.models.clip import CLIPTextEncoder, SDXLTextEncoder
    from atelier.models.config import UNetConfig
    from atelier.models.embeddings import EmbeddingFolder
    from atelier.models.tokenizer import CLIPTokenizer, EmbeddingLookup, TokenizedPrompt
    from atelier.models.unet import UNet
    from atelier.models.vae import VAE


log = logging.getLogger(__name__)


class Interrupted(AtelierError):
    """The user stopped the generation; nothing was produced."""


def check_interrupt(interrupt: threading.Event | None) -> None:
    """Raise Interrupted when the user asked to stop: long loops (sampler steps, VAE tiles) call it each turn."""
    if interrupt is not None and interrupt.is_set():
        raise Interrupted("The generation was interrupted; no image was produced.")


# --------------------------------------------------------------------------------------------------------------
# Text -> conditioning
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_prompt(
    text_encoder: CLIPTextEncoder,
    tokenizer: CLIPTokenizer,
    prompt: str,
    clip_skip: int = 1,
    embeddings: EmbeddingLookup | None = None,
    unknown: list[str] | None = None,
) -> Tensor:
    """A prompt -> the context the UNet attends to: (1, 77 * chunks, width).

    Long prompts are cut into 75-token chunks, each encoded in its own 77-token window, and concatenated.
    Weights such as "(red:1.3)" scale each token's vector away from what an empty prompt gives at that position,
    ComfyUI's rule for SD1.x: z = z_empty + weight * (z - z_empty).
    With `embeddings` (models/embeddings.py), "embedding:name" puts a textual inversion's vectors in the prompt;
    names no file matches are left out, logged, and appended to `unknown` when it is given.
    """
    check_prompt_text(prompt)  # before tokenizing: a 1 MB prompt would cost minutes and gigabytes
    tokens = tokenizer.tokenize_prompt(prompt, embeddings)  # 77 (id, weight) pairs per chunk
    for name in tokens.unknown:
        log.warning("embedding:%s names no file in the embeddings folder; it was left out of the prompt", name)
    if unknown is not None:
        unknown.extend(tokens.unknown)
    chunks = tokens.windows
    device = next(text_encoder.parameters()).device
    ids = torch.tensor([[i for i, _ in chunk] for chunk in chunks], device=device)  # (chunks, 77)
    weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], device=device)  # (chunks, 77)
    if tokens.vectors:
        vectors = torch.cat(tokens.vectors)  # (E, width): every embedding vector the ids below 0 stand for
        z = text_encoder.encode(ids, clip_skip=clip_skip, vectors=vectors)  # (chunks, 77, width)
    else:
        z = text_encoder.encode(ids, clip_skip=clip_skip)  # (chunks, 77, width)
    if not torch.all(weights == 1.0):
        empty = torch.tensor([tokenizer.tokenize_weighted("")[0]], device=device)[..., 0].long()  # (1, 77)
        z_empty = text_encoder.encode(empty, clip_skip=clip_skip)  # (1, 77, width)
        z = z_empty + weights[..., None].to(z.dtype) * (z - z_empty)
    return z.reshape(1, -1, z.shape[-1])


@torch.no_grad()
def encode_prompt_sdxl(
    text_encoder: SDXLTextEncoder,
    tokenizer_l: CLIPTokenizer,
    tokenizer_g: CLIPTokenizer,
    text_l: str,
    text_g: str | None = None,
    clip_skip: int = 2,
    embeddings: EmbeddingFolder | None = None,
    unknown: list[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """SDXL prompts -> (context (1, 77 * chunks, 2048), pooled (1, 1280)), as ComfyUI's CLIPTextEncodeSDXL does.

    Each tower tokenizes its own text (`text_g` defaults to `text_l`; bigG's tokenizer pads with 0) into the same
    75-token chunks as SD1.x, with the same weighting rule applied per tower against that tower's empty prompt:
    z = z_empty + weight * (z - z_empty). If one text has more chunks, the other is padded with empty chunks.
    The pooled vector is bigG's for the first chunk (ComfyUI keeps the first chunk's). The refiner
    (`text_encoder.clip_l` None) reads `text_g` alone: context (1, 77 * chunks, 1280).

    With `embeddings` (an SDXL models.embeddings.EmbeddingFolder, `for_text_encoder`), "embedding:name" puts a
    textual inversion's vectors in both towers at the same positions: CLIP-L reads the file's `clip_l` vectors and
    bigG its `clip_g` (a one-tower file: the tower it fits; zeros in the other). Names no file matches are left
    out, logged, and appended to `unknown` when it is given (once per name, though both towers look them up).
    """
    text_g = text_l if text_g is None else text_g
    check_prompt_text(text_l)
    check_prompt_text(text_g)
    device = next(text_encoder.parameters()).device
    lookup_g = embeddings.tower("clip_g") if embeddings is not None else None
    lookup_l = embeddings.tower("clip_l") if embeddings is not None and text_encoder.clip_l is not None else None
    tokens_g = tokenizer_g.tokenize_prompt(text_g, lookup_g)
    tokens_l = tokenizer_l.tokenize_prompt(text_l, lookup_l) if text_encoder.clip_l is not None else None
    missing = list(dict.fromkeys(tokens_g.unknown + (tokens_l.unknown if tokens_l is not None else [])))
    for name in missing:
        log.warning("embedding:%s names no file in the embeddings folder; it was left out of the prompt", name)
    if unknown is not None:
        unknown.extend(missing)
    chunks = max(len(tokens_g.windows), len(tokens_l.windows) if tokens_l is not None else 0)

    def weighted(tower: CLIPTextEncoder, tokenizer: CLIPTokenizer, tokens: TokenizedPrompt) -> tuple[Tensor, Tensor]:
        empty_window = tokenizer.tokenize_weighted("")[0]
        windows = tokens.windows + [empty_window] * (chunks - len(tokens.windows))
        ids = torch.tensor([[i for i, _ in w] for w in windows], device=device)  # (chunks, 77)
        weights = torch.tensor([[x for _, x in w] for w in windows], device=device)  # (chunks, 77)
        # (E, width): this tower's rows for the ids below 0 (the embeddings' vectors, in prompt order), or None
        vectors = torch.cat(tokens.vectors) if tokens.vectors else None
        z, pooled = tower.encode_with_pooled(ids, clip_skip, vectors=vectors)  # (chunks, 77, width), (chunks, P)
        if not torch.all(weights == 1.0):
            empty = torch.tensor([[i for i, _ in empty_window]], device=device)  # (1, 77)
            z_empty, _ = tower.encode_with_pooled(empty, clip_skip)
            z = z_empty + weights[..., None].to(z.dtype) * (z - z_empty)
        return z.reshape(1, -1, z.shape[-1]), pooled[:1]  # (1, 77 * chunks, width), (1, P)

    z_g, pooled = weighted(text_encoder.clip_g, tokenizer_g, tokens_g)
    if text_encoder.clip_l is None or tokens_l is None:
        return z_g, pooled
    z_l, _ = weighted(text_encoder.clip_l, tokenizer_l, tokens_l)
    return torch.cat([z_l, z_g], dim=-1), pooled  # (1, 77 * chunks, 2048), (1, 1280)


def is_sdxl_text_encoder(text_encoder: object) -> bool:
    """True for SDXL's pair of towers (models/clip.SDXLTextEncoder, or its refiner's bigG alone)."""
    return hasattr(text_encoder, "clip_g")


def encode_conditioning(
    text_encoder: CLIPTextEncoder | SDXLTextEncoder,
    tokenizer: CLIPTokenizer | tuple[CLIPTokenizer, CLIPTokenizer],
    text: str,
    clip_skip: int = 1,
    embeddings: EmbeddingLookup | None = None,
    unknown: list[str] | None = None,
    text_l: str | None = None,
) -> Cond:
    """A prompt -> one conditioning entry, for every family: ComfyUI's CLIPTextEncode.

    SD1.x and SD 2.x: the context of `encode_prompt`. SDXL (`text_encoder` an SDXLTextEncoder, `tokenizer` the pair
    (CLIP-L's, bigG's)): both towers read `text` (CLIP-L reads `text_l` instead when given, as CLIPTextEncodeSDXL's
    text_l), and the entry carries bigG's pooled vector; its sizes are left to sampling (`with_vectors`).
    `embeddings`: a models.embeddings.EmbeddingFolder made for this text encoder (`for_text_encoder`; SDXL's reads
    one vector set per tower).
    """
    if not is_sdxl_text_encoder(text_encoder):
        return Cond(encode_prompt(text_encoder, tokenizer, text, clip_skip, embeddings, unknown))  # type: ignore[arg-type]
    tokenizer_l, tokenizer_g = tokenizer  # type: ignore[misc]
    context, pooled = encode_prompt_sdxl(
        text_encoder, tokenizer_l, tokenizer_g, text if text_l is None else text_l, text, clip_skip,  # type: ignore[arg-type]
        embeddings, unknown,  # type: ignore[arg-type]
    )
    return Cond(context, pooled=pooled)


# --------------------------------------------------------------------------------------------------------------
# The denoising model as the samplers see it
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DiffusionModel:
    """What ComfyUI calls MODEL: the UNet, the noise schedule it was trained on, and its latent scale."""

    unet: UNet
    latent_scale: float  # the VAE's scaling_factor: sampler latents = raw latents * latent_scale
    schedule: DiscreteSchedule = dataclasses.field(default_factory=DiscreteSchedule.scaled_linear)
    preview: Tensor | None = None  # (5, 3) raw latent -> RGB map for live previews (see fit_latent_to_rgb)
    # LoRAs, applied to the shared UNet in place while `sample` runs and undone after (models/lora.py): a MODEL
    # with LoRAs is this same object with a longer list, never a copy of the network.
    patches: tuple[WeightPatch, ...] = ()
    # What the network predicts, when a node says so (ModelSamplingDiscrete); None: the UNet config's.
    prediction: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def denoiser(self) -> Denoiser:
        prediction = self.prediction or self.unet.config.prediction
        return Denoiser(self.unet, self.schedule, prediction, dtype=self.dtype)


@dataclasses.dataclass(frozen=True)
class SizeConditioning:
    """SDXL's micro-conditioning (Podell et al. 2023, section 2.2), as ComfyUI's CLIPTextEncodeSDXL and
    CLIPTextEncodeSDXLRefiner set it, in pixels. None means "as ComfyUI fills it when sampling": width and height
    from the latent being sampled (8 pixels per latent pixel), the target from the width and height, and the
    refiner's aesthetic score 6 on the positive side, 2.5 on the negative (comfy/model_base.py, encode_adm)."""

    width: int | None = None  # the "original size" the model is told the image had
    height: int | None = None
    crop_w: int = 0  # the top-left corner of the crop taken from it (0, 0: uncropped)
    crop_h: int = 0
    target_width: int | None = None  # base only
    target_height: int | None = None
    aesthetic_score: float | None = None  # refiner only


@dataclasses.dataclass
class Cond:
    """One entry of a conditioning (ComfyUI's CONDITIONING is a list of them).

    A context the UNet attends to, optionally limited to a rectangle of the image (ConditioningSetArea) with a
    strength. Entries are combined at every step by averaging their predictions where they overlap (weighted by
    strength, with soft 8-pixel edges), which is how area composition places different prompts in different parts.
    """

    context: Tensor  # (1, T, D)
    area: tuple[int, int, int, int] | None = None  # (height, width, y, x) in LATENT pixels; None: everywhere
    strength: float = 1.0
    # The part of sampling this entry takes part in (ConditioningSetTimestepRange), as fractions of the way from
    # pure noise (0) to the end (1); outside it the entry is left out of the average, as in ComfyUI.
    start_percent: float = 0.0
    end_percent: float = 1.0
    # SDXL: the vector y (1, adm) = pooled text + size embeddings (models/unet.sdxl_vector); None for SD1.x/2.x.
    # Usually left None and built when sampling from `pooled` and `sizes` (`with_vectors`), since its default
    # sizes are the latent's; given, it is used as it is.
    y: Tensor | None = None
    pooled: Tensor | None = None  # SDXL: bigG's projected pooled text vector (1, 1280), ComfyUI's pooled_output
    sizes: SizeConditioning = SizeConditioning()
    # ControlNets steering the UNet while it reads this entry (ControlNetApply appends; models/controlnet.py)
    control: tuple[AppliedControlNet, ...] = ()

    @property
    def everywhere_always(self) -> bool:
        """True for a plain entry: the whole image, full strength, every step."""
        return self.area is None and self.strength == 1.0 and self.start_percent <= 0.0 and self.end_percent >= 1.0

    def active_at(self, sigma: float, schedule: DiscreteSchedule) -> bool:
        """Whether this entry takes part in the step at noise level `sigma` (ComfyUI's rule: the step's sigma lies
        between the sigmas of end_percent and start_percent, both ends included)."""
        if self.start_percent <= 0.0 and self.end_percent >= 1.0:
            return True
        return schedule.percent_to_sigma(self.end_percent) <= sigma <= schedule.percent_to_sigma(self.start_percent)


def size_numbers(sizes: SizeConditioning, latent_hw: tuple[int, int], count: int, negative: bool) -> list[float]:
    """The numbers SDXL embeds in its vector y, ComfyUI's order and defaults (comfy/model_base.py, encode_adm):
    base (count 6): [height, width, crop_h, crop_w, target_height, target_width];
    refiner (count 5): [height, width, crop_h, crop_w, aesthetic_score]. `latent_hw` (h, w) in latent pixels
    gives the defaults: 8 image pixels per latent pixel."""
    height = sizes.height if sizes.height is not None else latent_hw[0] * 8
    width = sizes.width if sizes.width is not None else latent_hw[1] * 8
    if count == 5:
        score = sizes.aesthetic_score if sizes.aesthetic_score is not None else (2.5 if negative else 6.0)
        return [height, width, sizes.crop_h, sizes.crop_w, score]
    target_h = sizes.target_height if sizes.target_height is not None else height
    target_w = sizes.target_width if sizes.target_width is not None else width
    return [height, width, sizes.crop_h, sizes.crop_w, target_h, target_w]


def with_vectors(
    conds: Sequence[Cond], unet_config: UNetConfig, latent_shape: Sequence[int], negative: bool = False
) -> list[Cond]:
    """The conditioning with SDXL's vector y built for each entry that has none, for sampling a latent of
    `latent_shape` (B, C, h, w) with a UNet of `unet_config`; `negative`: the negative side (the refiner's
    default aesthetic score is lower there). A UNet without a vector input (SD1.x, SD 2.x) gets `conds` back.

    y = [pooled (1, P), one 256-wide sinusoidal embedding per size number]: the UNet's width of y (2816 for the
    base, 2560 for the refiner) tells how many numbers it reads, (2816 - 1280) / 256 = 6 or (2560 - 1280) / 256 = 5.
    """
    conds = list(conds)
    adm = unet_config.adm_in_channels
    if adm is None:
        return conds
    from atelier.models.unet import sdxl_vector  # the UNet's own embedding of the numbers

    out = []
    for cond in conds:
        if cond.y is not None:
            out.append(cond)
            continue
        if cond.pooled is None:
            raise InputError(
                "This conditioning has no pooled text vector, which SDXL models need; expected a prompt encoded "
                "with an SDXL checkpoint's CLIP (CLIPTextEncode or CLIPTextEncodeSDXL)."
            )
        count, rest = divmod(adm - cond.pooled.shape[-1], unet_config.size_embed_dim)
        if rest or count not in (5, 6):
            raise InputError(
                f"The pooled text vector is {cond.pooled.shape[-1]} wide, which does not fit this model's "
                f"{adm}-wide vector y; expected a prompt encoded with the CLIP of the same checkpoint."
            )
        numbers = torch.tensor([size_numbers(cond.sizes, tuple(latent_shape[-2:]), count, negative)])
        pooled = cond.pooled.float()  # the sizes' embedding is computed in fp32, on the pooled vector's device
        y = sdxl_vector(pooled, numbers.to(pooled.device), unet_config.size_embed_dim)  # (1, adm)
        out.append(dataclasses.replace(cond, y=y))
    return out


def _area_weight(cond: Cond, x: Tensor) -> tuple[tuple[slice, slice], Tensor]:
    """Where a Cond applies in x (B, C, h, w) and its weight there, feathered over 8 latent pixels at inner edges."""
    h, w = x.shape[-2:]
    if cond.area is None:
        return (slice(0, h), slice(0, w)), torch.full((1, 1, h, w), float(cond.strength))
    ah, aw, y, x0 = cond.area
    y, x0 = min(y, h - 1), min(x0, w - 1)
    ah, aw = min(ah, h - y), min(aw, w - x0)
    weight = torch.full((1, 1, ah, aw), float(cond.strength))
    ramp = 8
    for t in range(min(ramp, ah, aw)):
        f = (t + 1) / ramp
        if y != 0:
            weight[:, :, t, :] *= f
        if y + ah < h:
            weight[:, :, ah - 1 - t, :] *= f
        if x0 != 0:
            weight[:, :, :, t] *= f
        if x0 + aw < w:
            weight[:, :, :, aw - 1 - t] *= f
    return (slice(y, y + ah), slice(x0, x0 + aw)), weight


def composed_denoiser(
    denoise: Callable[..., Tensor], conds: list[Cond], schedule: DiscreteSchedule | None = None
) -> Callable[..., Tensor]:
    """x0 for a list of Conds: each predicts on its area, predictions are averaged with their weights. Entries with
    a timestep range (start/end percent) join only the steps inside it (`schedule` converts percents to sigmas)."""
    schedule = schedule or DiscreteSchedule.scaled_linear()

    def combined(x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        total = torch.zeros_like(x)
        count = torch.full_like(x, 1e-37)  # a pixel no Cond covers keeps x0 = 0 instead of dividing by zero
        now = float(sigma.reshape(-1)[0])  # the batch steps through the same sigmas (ComfyUI reads the first too)
        for cond in conds:
            if not cond.active_at(now, schedule):
                continue
            (ys, xs), weight = _area_weight(cond, x)
            weight = weight.to(x.device, x.dtype)
            crop = x[:, :, ys, xs]
            context = cond.context.to(x.device).expand(x.shape[0], -1, -1)
            extra = dict(kwargs)
            if cond.y is not None:  # SDXL: each entry brings its own pooled/size vector
                extra["y"] = cond.y.to(x.device).expand(x.shape[0], -1)
            if cond.control:  # the ControlNets' residuals, for the part of the latent this entry covers
                area = (ys, xs) if cond.area is not None else None
                extra["control"] = ControlStack(cond.control, area, full=tuple(x.shape[-2:]))
            total[:, :, ys, xs] += denoise(crop, sigma, context=context, **extra) * weight
            count[:, :, ys, xs] += weight
        return total / count

    return combined


def _as_conds(conditioning: Tensor | Sequence[Cond]) -> list[Cond]:
    return [Cond(conditioning)] if isinstance(conditioning, Tensor) else list(conditioning)


def guide(
    denoise: Callable[..., Tensor],
    positive: list[Cond],
    negative: list[Cond],
    scale: float,
    schedule: DiscreteSchedule | None = None,
):
    """Classifier-free guidance over conditionings. The common case, one full-image context on each side, runs
    cond and uncond as one batch (guidance.cfg_denoiser); area compositions, several entries, timestep ranges and
    ControlNets combine their entries first (`composed_denoiser`; with ControlNets each side then runs on its own,
    with its own ControlNets: two UNet passes per step instead of one batch of two)."""
    simple = all(len(c) == 1 and c[0].everywhere_always and not c[0].control for c in (positive, negative))
    if simple and (positive[0].y is None) == (negative[0].y is None):
        return cfg_denoiser(denoise, positive[0].context, negative[0].context, scale, positive[0].y, negative[0].y)
    cond_fn = composed_denoiser(denoise, positive, schedule)
    uncond_fn = composed_denoiser(denoise, negative, schedule)
    trace = GuidanceTrace(scale=float(scale), skipped_uncond=math.isclose(scale, 1.0))

    def guided(x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        trace.calls += 1
        cond = cond_fn(x, sigma, **kwargs)
        if trace.skipped_uncond:
            return cond
        uncond = uncond_fn(x, sigma, **kwargs)
        return uncond + (cond - uncond) * scale

    guided.trace = trace  # type: ignore[attr-defined]
    return guided


@dataclasses.dataclass
class SamplerSettings:
    """The KSampler's knobs. seed -1 draws a random seed; the one used is reported back."""

    seed: int = 0
    steps: int = 20
    cfg: float = 7.5
    sampler: str = "euler"
    scheduler: str = "normal"
    denoise: float = 1.0

    def check(self) -> None:
        """One clear sentence for the first bad value."""
        if self.sampler not in SAMPLERS:
            raise InputError(f"Sampler {self.sampler!r} is not known; expected one of {', '.join(SAMPLERS)}.")
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"Scheduler {self.scheduler!r} is not known; expected one of {', '.join(SCHEDULERS)}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 10000:
            raise InputError(f"Steps must be a whole number from 1 to 10000, got {self.steps!r}.")
        if not isinstance(self.cfg, int | float) or not 0.0 <= self.cfg <= 100.0 or math.isnan(self.cfg):
            raise InputError(f"CFG must be a number from 0 to 100, got {self.cfg!r}.")
        if not isinstance(self.denoise, int | float) or not 0.0 <= self.denoise <= 1.0:
            raise InputError(f"Denoise must be a number from 0 to 1, got {self.denoise!r}.")


@dataclasses.dataclass
class Step:
    """One sampler step, as reported to `on_step`. Latents are the sampler's SCALED latents (B, 4, h, w)."""

    index: int  # 0-based
    total: int
    sigma: float
    x: Tensor  # the noisy latent the step started from
    denoised: Tensor  # the model's guess of the final latent at this step (x0)


@dataclasses.dataclass
class SampleResult:
    latent: Tensor  # RAW latents (B, 4, h, w), ready for the VAE
    seed: int  # the seed actually used (differs from the request when it was -1)
    sigmas: Tensor
    guidance: GuidanceTrace


OnStep = Callable[[Step], None]


def _masked(denoise: Callable[..., Tensor], latent: Tensor, noise: Tensor, mask: Tensor) -> Callable[..., Tensor]:
    """Inpainting with a noise mask (ComfyUI's noise_mask semantics): only where mask = 1 is denoised.

    Before each call the kept region (mask = 0) is reset to the original latent noised to the current sigma, and
    the prediction there is replaced by the original latent, so the sampler only ever changes the masked region.
    """

    def masked(x: Tensor, sigma: Tensor, **kwargs) -> Tensor:
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        x = x * mask + (latent + noise * s) * (1 - mask)
        return denoise(x, sigma, **kwargs) * mask + latent * (1 - mask)

    return masked


def prepare_mask(mask: Tensor, latent: Tensor) -> Tensor:
    """A (B or 1, H, W) pixel mask in [0, 1] -> (B, 1, h, w) at the latent's size (bilinear, as ComfyUI)."""
    m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    m = F.interpolate(m, size=latent.shape[-2:], mode="bilinear")
    if m.shape[0] < latent.shape[0]:
        m = m.repeat(math.ceil(latent.shape[0] / m.shape[0]), 1, 1, 1)[: latent.shape[0]]
    return m.to(latent.device, latent.dtype)


@torch.no_grad()
def sample(
    model: DiffusionModel,
    latent: Tensor,
    positive: Tensor | Sequence[Cond],
    negative: Tensor | Sequence[Cond],
    settings: SamplerSettings,
    *,
    noise_mask: Tensor | None = None,
    batch_index: list[int] | None = None,
    add_noise: bool = True,
    start_step: int | None = None,
    end_step: int | None = None,
    force_full_denoise: bool = True,
    on_step: OnStep | None = None,
    interrupt: threading.Event | None = None,
) -> SampleResult:
    """Denoise `latent` (RAW, (B, 4, h, w)) guided by the positive and negative conditionings: ComfyUI's KSampler.

    A conditioning is a context tensor (1, T, D) from `encode_prompt`, or a list of `Cond` (areas, strengths).

    - txt2img: an all-zero latent and denoise 1: sampling starts from pure noise at sigma_max.
    - img2img: an encoded image and denoise < 1: the image is noised to a middle sigma and sampling starts there.
    - inpainting: `noise_mask` (B or 1, H, W) limits the change to where the mask is 1.
    - KSamplerAdvanced: `start_step`/`end_step` cut the sigma list; `add_noise=False` skips the initial noise;
      `force_full_denoise=False` returns the leftover noise when stopping early.
    Noise comes from `settings.seed` on the CPU (ComfyUI's rule), so a seed means the same image on every device.
    """
    settings.check()
    seed = resolve_seed(settings.seed)
    sigmas = sigmas_for(settings.scheduler, model.schedule, settings.steps, settings.denoise)
    if end_step is not None and end_step < len(sigmas) - 1:
        sigmas = sigmas[: end_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0.0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:  # nothing left to do
            return SampleResult(latent, seed, sigmas[-1:], GuidanceTrace(settings.cfg, False))
        sigmas = sigmas[start_step:]
    check_sampling_cost(latent.shape, len(sigmas) - 1)  # the steps that will run, after denoise and the cuts

    noise = initial_noise(seed, latent.shape, batch_index) if add_noise else torch.zeros(latent.shape)
    config = model.unet.config
    positive = with_vectors(_as_conds(positive), config, latent.shape)  # SDXL's y; SD1.x/2.x: unchanged
    negative = with_vectors(_as_conds(negative), config, latent.shape, negative=True)
    guided = guide(model.denoiser(), positive, negative, settings.cfg, model.schedule)
    out = sample_sigmas(
        model, latent, sigmas, guided, settings.sampler, noise, seed,
        noise_mask=noise_mask, on_step=on_step, interrupt=interrupt,
    )  # fmt: skip
    return SampleResult(out, seed, sigmas.cpu(), guided.trace)


@torch.no_grad()
def sample_sigmas(
    model: DiffusionModel,
    latent: Tensor,
    sigmas: Tensor,
    guided: Callable[..., Tensor],
    sampler: str,
    noise: Tensor,
    seed: int,
    *,
    sampler_options: dict | None = None,
    noise_mask: Tensor | None = None,
    on_step: OnStep | None = None,
    interrupt: threading.Event | None = None,
) -> Tensor:
    """The sampling loop itself, once every choice is made: ComfyUI's SamplerCustomAdvanced, and what `sample`
    (the KSampler) calls after computing its sigmas, noise and guidance. Returns the RAW latent.

    latent: RAW (B, 4, h, w); sigmas: the (N + 1,) noise levels to walk; guided(x, sigma) -> x0 (guidance done);
    sampler: a name of SAMPLERS, called with `sampler_options` (eta, s_noise...); noise: (B, 4, h, w) N(0, I) or
    zeros, scaled to sigmas[0] here (`start_latent`); seed: the per-step noise of ancestral and SDE samplers.
    """
    device, dtype = model.device, torch.float32
    sigmas = sigmas.to(device, dtype)
    scaled = latent.to(device, dtype) * model.latent_scale  # (B, 4, h, w), the sampler's space
    noise = noise.to(device, dtype)
    # Noised to sigmas[0]; a lone sigma means no step, and the latent comes back noised to it (ComfyUI's rule too).
    x = start_latent(model.schedule, sigmas, noise, scaled)

    denoise: Callable[..., Tensor] = guided
    if noise_mask is not None:
        mask = prepare_mask(noise_mask, scaled)
        denoise = _masked(guided, scaled, noise, mask)

    total = len(sigmas) - 1

    def callback(info: dict) -> None:
        check_interrupt(interrupt)
        if on_step is not None:
            on_step(Step(info["i"], total, float(info["sigma"]), info["x"], info["denoised"]))

    if total > 0:
        check_interrupt(interrupt)
        # Per-step noise of ancestral/SDE samplers: its own stream, seeded from the seed (see noise.py).
        noise_sampler = seeded_noise_sampler(x, seed)
        with patched(model.unet, model.patches):
            x = SAMPLERS[sampler](denoise, x, sigmas, callback=callback, noise_sampler=noise_sampler,
                                  **(sampler_options or {}))  # fmt: skip
        if noise_mask is not None:
            x = x * mask + scaled * (1 - mask)
    return x / model.latent_scale


# --------------------------------------------------------------------------------------------------------------
# Latents <-> images
# --------------------------------------------------------------------------------------------------------------


def empty_latent(width: int, height: int, batch: int = 1, channels: int = 4, downscale: int = 8) -> Tensor:
    """EmptyLatentImage: zeros (batch, 4, height/8, width/8). The sampler adds all the noise."""
    for name, value in (("Width", width), ("Height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < downscale or value % downscale:
            raise InputError(f"{name} must be a positive multiple of {downscale}, got {value!r}.")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 4096:
        raise InputError(f"Batch size must be a whole number from 1 to 4096, got {batch!r}.")
    check_image_batch(batch, height, width)
    return torch.zeros(batch, channels, height // downscale, width // downscale)


VAE_BATCH_PIXELS = 8 * 512 * 512  # image pixels through the VAE in one pass: bigger batches go a few at a time


def _vae_chunks(batch: Tensor, pixels_per_image: int) -> tuple[Tensor, ...]:
    """`batch` split along its first axis into chunks of at most VAE_BATCH_PIXELS image pixels (one image at
    least). The VAE treats each image on its own, so chunks only bound memory and let an interrupt in between."""
    return batch.split(max(1, VAE_BATCH_PIXELS // pixels_per_image))


def _float32_copy(vae: VAE) -> VAE:
    """A readable float32 VAE with `vae`'s weights (the fast VAE keeps the readable state_dict layout)."""
    from atelier.models.vae import VAE

    with devices.building(sum(p.numel() for p in vae.parameters())):
        wide = VAE(vae.config)
    state = {k: v.float().contiguous() for k, v in vae.state_dict().items()}
    wide.load_state_dict(state, strict=True, assign=True)
    return wide.eval()


def _decode_chunk(vae: VAE, z: Tensor, tile: int | None, interrupt: threading.Event | None) -> Tensor:
    if tile is None:
        return vae.decode(z)
    return vae.decode_tiled(z, tile, before_tile=lambda: check_interrupt(interrupt))


@torch.no_grad()
def decode(vae: VAE, latent: Tensor, tile: int | None = None, interrupt: threading.Event | None = None) -> Tensor:
    """RAW latents (B, 4, h, w) -> images (B, 3, 8h, 8w) clamped to [-1, 1]. Large images decode tile by tile,
    large batches a few images at a time; `interrupt` is checked before each tile and each chunk.

    fp16: SDXL's own VAE overflows in half precision (activations of its decoder pass 65504, fp16's largest
    number, and become inf, then NaN: a black image), which is why "sdxl-vae-fp16-fix" (the same network
    fine-tuned to keep its activations small, same key layout, loaded with VAELoader) exists. A chunk that comes
    out non-finite in fp16 is decoded again in fp32 on a float32 copy of the VAE, and the log says so. bf16, the
    default on GPUs that have it, has fp32's range and never overflows there."""
    f = vae.config.downscale
    height, width = latent.shape[-2] * f, latent.shape[-1] * f
    check_image_batch(latent.shape[0], height, width)
    p = next(vae.parameters())
    if tile is None and latent.shape[-1] * latent.shape[-2] > 128 * 128:
        tile = 64
    images = []
    for chunk in _vae_chunks(latent, height * width):
        check_interrupt(interrupt)
        z = chunk.to(p.device, p.dtype)
        out = _decode_chunk(vae, z, tile, interrupt)
        if p.dtype == torch.float16 and not bool(torch.isfinite(out).all()):
            log.warning("The VAE overflowed in fp16 (non-finite pixels); decoding again in fp32. An fp16-safe VAE "
                        "(e.g. sdxl-vae-fp16-fix, with VAELoader) avoids the second pass.")  # fmt: skip
            out = _decode_chunk(_float32_copy(vae), chunk.to(p.device, torch.float32), tile, interrupt)
        images.append(out.float().clamp(-1, 1).cpu())
    return torch.cat(images)


@torch.no_grad()
def encode(vae: VAE, images: Tensor, tile: int | None = None, interrupt: threading.Event | None = None) -> Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> RAW latents (B, 4, H/8, W/8), the posterior's mean (deterministic).
    Tiles and chunks as `decode`, with the same checks for `interrupt`."""
    check_image_batch(images.shape[0], images.shape[-2], images.shape[-1])
    p = next(vae.parameters())
    if tile is None and images.shape[-1] * images.shape[-2] > 1024 * 1024:
        tile = 64
    latents = []
    for chunk in _vae_chunks(images, images.shape[-2] * images.shape[-1]):
        check_interrupt(interrupt)
        x = chunk.to(p.device, p.dtype)
        if tile is None:
            posterior = vae.encode(x)
        else:
            posterior = vae.encode_tiled(x, tile, before_tile=lambda: check_interrupt(interrupt))
        latents.append(posterior.mode().float().cpu())
    return torch.cat(latents)


# --------------------------------------------------------------------------------------------------------------
# A fast look at a latent without the VAE
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def fit_latent_to_rgb(vae: VAE, size: int = 64, images: Tensor | None = None) -> Tensor:
    """A (5, 3) linear map latent -> RGB (4 weights + a bias per colour), fitted by least squares.

    Each latent pixel stands for an 8x8 block of the image; a linear map from its 4 channels to the block's mean
    colour is what a live preview needs: it costs nothing next to the VAE decoder and shows shapes and colours
    while the sampler runs. Fitted on `images` (B, 3, H, W) in [-1, 1] when given (pictures like the model's own:
    the embedded model is fitted on rendered scenes), else on flat colours (fine for SD's VAE). Only a sketch: a
    VAE's decoder is far from linear.
    """
    p = next(vae.parameters())
    if images is None:
        levels = torch.tensor([-1.0, -0.3, 0.3, 1.0])
        colours = torch.cartesian_prod(levels, levels, levels)  # (64, 3) in [-1, 1]
        images = colours[:, :, None, None].expand(-1, -1, size, size)
    latents = torch.cat([vae.encode(chunk.to(p.device, p.dtype)).mode().float().cpu() for chunk in images.split(64)])
    blocks = F.avg_pool2d(images.float().cpu(), vae.config.downscale)  # (B, 3, h, w): the colour under each latent
    z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (B*h*w, 4)
    design = torch.cat([z, torch.ones(len(z), 1)], dim=1)  # (B*h*w, 5)
    return torch.linalg.lstsq(design, blocks.permute(0, 2, 3, 1).reshape(-1, 3)).solution  # (5, 3)


def latent_preview(latent: Tensor, projection: Tensor) -> Tensor:
    """RAW latents (B, 4, h, w) -> uint8 RGB previews (B, h, w, 3) through the fitted linear map."""
    z = latent.float().cpu().permute(0, 2, 3, 1)  # (B, h, w, 4)
    rgb = z @ projection[:4] + projection[4]  # (B, h, w, 3) in about [-1, 1]
    return signed_to_uint8(rgb)
