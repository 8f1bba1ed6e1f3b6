"""Several people's txt2img in one sampling call, each image exactly the one its job makes alone.

A classroom server gets many requests with the same model, size, steps, sampler, scheduler, CFG and denoise, and
different prompts and seeds. On a GPU one sampling call over a batch costs far less than one call per image; each
member of the batch must still get its own image, pixel for pixel. Three things could make a batched image differ
from the lone one; each is handled here.

1. Starting noise. `pipeline.sample` draws a batch's noise from ONE seed (ComfyUI's rule: image i of a batch of N
   is slice i of randn(N, 4, h, w) after manual_seed(seed)). A member draws from its own seed, as its own job
   does: `member_noise(seed, index, of)` is image `index` of a job of `of` images, so the images of a job cut
   into parts (server/merging.py) come back as they would from the whole job.
2. Per-step noise of ancestral and SDE samplers. Alone, one stream seeded from the seed draws (N, 4, h, w) per
   step. Here each member keeps such a stream and takes its own slice (`MemberNoise`). Every sampler treats the
   images of a batch independently (sampling/samplers.py: per-image sigmas, element-wise updates), so with the
   noise per member any sampler gives each member its lone result.
3. Rounding. A float result may depend on the batch size when a kernel is chosen by shape. Measured on the CPU
   (torch 2.13, fp32): the UNet's time embedding (a (B, 320) @ (320, 1280) product) rounded each row differently
   for B = 2 and B = 16, which moved the UNet's output by up to 2e-6; one shared timestep is now embedded once
   (UNet.forward, Denoiser), which made the UNet's output per image independent of B (checked for B = 2 .. 16).
   Torch's CPU convolution takes another kernel for a batch of ONE small input (ATen's use_mkldnn rule: native
   im2col below 20480 input values, oneDNN for more or for a batch of 2+). Guided sampling always runs cond and
   uncond together, a batch of 2 or more, so it never meets that rule; decoding does, and `decode_member`
   decodes each image as its lone job does (alone for a one-image job, in a batch of two for an image that its
   job decodes with others). CFG 1 skips the uncond pass, so a lone one-image job samples a batch of one:
   merging.py does not merge CFG 1 jobs.
   The UNet's products are a third case, found on an Intel Xeon (Sapphire Rapids: AVX-512, AMX; torch 2.13 with
   MKL 2024.2, fp32, 1 or 2 threads) after the CI machine never showed it: MKL's SGEMM, which every nn.Linear
   calls with the batch and the tokens folded into M rows, rounds a row differently for different M. For
   (M, 256) @ (256, 64), the tiny test UNet's feed-forward output at its 2x2 level, a row is the same for M = 2
   .. 10 and again for M >= 11, but not across the two (M = 1 is a third case); (M, 1280) @ (1280, 320) changes
   at M = 16 and, with 2 threads, again at M = 240. With K of 64 or 128 no row changed. A row does not depend on
   the other rows' values nor on its place among them, only on M. A lone one-image job multiplies 2 x 4 rows
   there and a merged batch of 4 members 32, so its latent moved by ~1e-7 per UNet call, ~1e-4 after 4 steps.
   No environment setting removed it (OMP_NUM_THREADS=1, ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA,
   MKL_ENABLE_INSTRUCTIONS=AVX2, MKL_CBWR=COMPATIBLE). So on the CPU, `LoneShapedGuidance` sends each member
   through the UNet as its lone job does: `of` copies of its image, [cond; uncond], a batch of 2 x `of`; the
   member keeps its own row. Every shape the UNet meets is then its lone job's and the rounding is too. A CPU
   batch thus costs what its members' lone jobs cost (more for a part of a job of several images, which samples
   its copies too): on a CPU merging saves nothing, but keeps every image exact. On a GPU, what merging is for,
   the members share one call.

On the CPU in fp32 a member's latent and PNG are then identical to its lone job's (tests/test_batching.py). On a
GPU, cuDNN and cuBLAS choose kernels by batch size, so batched images match lone ones up to rounding only.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

from atelier import pipeline
from atelier.errors import InputError
from atelier.limits import check_sampling_cost
from atelier.pipeline import DiffusionModel, SamplerSettings, Step, check_interrupt, decode, empty_latent
from atelier.sampling.denoisers import start_latent
from atelier.sampling.guidance import cfg_denoiser
from atelier.sampling.noise import initial_noise, seeded_noise_sampler
from atelier.sampling.samplers import SAMPLERS
from atelier.sampling.schedules import sigmas_for

if TYPE_CHECKING:
    from atelier.models.vae import VAE

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Member:
    """One image of a batched sampling call: its conditioning and where its noise comes from."""

    positive: Tensor  # (1, T, D): its prompt's context, from pipeline.encode_prompt
    negative: Tensor  # (1, T', D): its negative prompt's context
    seed: int  # its job's seed (already resolved: not -1)
    index: int = 0  # which image of its job this is ...
    of: int = 1  # ... out of how many: the job's batch size, whose noise comes from the one seed
    # SDXL: each side's vector y (1, adm), pooled text + size embeddings (pipeline.with_vectors); None otherwise
    positive_y: Tensor | None = None
    negative_y: Tensor | None = None


def member_noise(seed: int, index: int, of: int, shape: Sequence[int]) -> Tensor:
    """(1, C, h, w) float32 on the CPU: image `index` of the starting noise a job of `of` images draws from `seed`."""
    if not 0 <= index < of:
        raise InputError(f"Image index {index} is outside a job of {of} images; expected 0 to {of - 1}.")
    return initial_noise(seed, (of, *shape))[index : index + 1]


class MemberNoise:
    """The per-step noise of ancestral and SDE samplers for a batch of members: `noise_sampler(sigma, sigma_next)`.

    Each member has the stream its lone job would use (seeded_noise_sampler with the job's seed, drawing the whole
    job's (of, C, h, w)) and gets its own slice; the slices are stacked in the batch's order: (B, C, h, w).
    A member of a job of N images thus draws N images' worth per step to keep one: random numbers on the CPU, cheap
    next to a UNet call while N is a handful of images.
    """

    def __init__(self, members: Sequence[Member], x: Tensor) -> None:
        self.rows = [m.index for m in members]
        self.streams = [seeded_noise_sampler(x.new_empty((m.of, *x.shape[1:])), m.seed) for m in members]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.cat([draw(sigma, sigma_next)[i : i + 1] for draw, i in zip(self.streams, self.rows, strict=True)])


class LoneShapedGuidance:
    """The guided denoiser `guided(x, sigma) -> x0` of a batch of members on the CPU: each member's image goes
    through the UNet in a call shaped exactly as its lone job's.

    A lone job of N images asks the UNet for a batch of 2N (N cond, then N uncond: guidance.cfg_denoiser). Here a
    member of a job of `of` images is sent as `of` copies of its own image, so the UNet sees the shapes its lone
    job gave it and the member's row rounds as it did there (MKL's float32 GEMM rounds a row differently for
    different row counts; see the module's docstring). The copies are work thrown away, the price of exact
    images on a CPU; GPUs take the merged path.
    """

    def __init__(self, model: DiffusionModel, members: Sequence[Member], cfg: float) -> None:
        denoise = model.denoiser()
        self.members = list(members)
        # One guidance wrapper per member, with its own contexts (1, T, D) and (1, T', D), as its lone job builds.
        self.guided = [
            cfg_denoiser(denoise, m.positive.to(model.device), m.negative.to(model.device), cfg,
                         *_vectors([m], model.device))
            for m in members
        ]  # fmt: skip

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args) -> Tensor:
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma  # (B,)
        rows = []
        for i, (m, guided) in enumerate(zip(self.members, self.guided, strict=True)):
            alone = x[i : i + 1].repeat(m.of, 1, 1, 1)  # (of, C, h, w): the batch its lone job samples
            rows.append(guided(alone, sigma[i : i + 1].repeat(m.of), **extra_args)[m.index : m.index + 1])
        return torch.cat(rows)  # (B, C, h, w)


OnMemberStep = Callable[[Sequence[int], Step], None]  # (positions in `members` of the step's rows, the step)


@torch.no_grad()
def sample_members(
    model: DiffusionModel,
    members: Sequence[Member],
    settings: SamplerSettings,
    width: int,
    height: int,
    on_step: OnMemberStep | None = None,
    interrupt: threading.Event | None = None,
) -> list[Tensor]:
    """txt2img for every member in as few sampling calls as possible: RAW latents, one (1, 4, h, w) per member.

    `settings` are shared (its seed is not used: each member brings its own). Members whose contexts have the
    same lengths (77 tokens per 75-token chunk of prompt) share one call; other lengths go in calls of their own.
    `on_step(rows, step)` sees each step of each call, `rows` saying which members the step's images are.
    """
    settings.check()
    if not members:
        raise InputError("A batched sampling call needs at least one member; got none.")
    shape = empty_latent(width, height, 1).shape[1:]  # (4, h, w); checks the size
    groups: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault((m.positive.shape[1], m.negative.shape[1]), []).append(i)
    latents: list[Tensor | None] = [None] * len(members)
    for rows in groups.values():
        group = [members[i] for i in rows]
        if model.device.type != "cpu":  # see padded_size: a few batch shapes, each compiled and graphed once
            group = padded(group)
        report = None if on_step is None else (lambda step, rows=rows: on_step(rows, step))
        sampled = _sample_group(model, group, settings, shape, report, interrupt)  # (len(group), 4, h, w)
        for i, latent in zip(rows, sampled.split(1), strict=False):  # the padding rows are dropped
            latents[i] = latent
    return latents  # type: ignore[return-value]


def padded_size(n: int) -> int:
    """The batch a GPU samples or decodes for n members: the next power of two (1, 2, 4, 8, 16...).

    A compiled network is specialised to its input shapes and a CUDA graph is recorded for one shape
    (sampling/graphs.py), so every new batch size costs a compile (a minute for the SD1.5 UNet) and a capture.
    Merged batches come in every size from 1 to the server's --batch-size; rounded up to powers of two they come
    in log2(size) + 1 shapes. The extra rows repeat the last member and are dropped: on a GPU, where a batch is
    not bit for bit its lone jobs anyway, a few rows of wasted work buy a bounded set of shapes.
    """
    if n < 1:
        raise InputError(f"A batch needs at least one member; got {n}.")
    return 1 << (n - 1).bit_length()


def padded(items: Sequence[T]) -> list[T]:
    """`items` with its last one repeated up to padded_size(len(items)) (a GPU batch's padding rows)."""
    return [*items, *[items[-1]] * (padded_size(len(items)) - len(items))]


def _sample_group(
    model: DiffusionModel,
    members: Sequence[Member],
    settings: SamplerSettings,
    shape: Sequence[int],
    on_step: Callable[[Step], None] | None,
    interrupt: threading.Event | None,
) -> Tensor:
    """pipeline.sample's txt2img path (an empty latent, `settings.denoise` of the schedule) with noise per member."""
    device = model.device
    sigmas = sigmas_for(settings.scheduler, model.schedule, settings.steps, settings.denoise)
    check_sampling_cost((len(members), *shape), len(sigmas) - 1)  # as pipeline.sample: the steps that will run
    sigmas = sigmas.to(device)
    scaled = torch.zeros(len(members), *shape, device=device)  # (B, 4, h, w): EmptyLatentImage, scaled
    noise = torch.cat([member_noise(m.seed, m.index, m.of, shape) for m in members]).to(device)
    x = start_latent(model.schedule, sigmas, noise, scaled) if len(sigmas) > 1 else scaled
    if device.type == "cpu":
        guided: Callable[[Tensor, Tensor], Tensor] = LoneShapedGuidance(model, members, settings.cfg)
    else:
        # (B, T, D) and (B, T', D): the guidance wrapper runs [cond; uncond] as one batch of 2B, as for a lone job.
        positive = torch.cat([m.positive for m in members]).to(device)
        negative = torch.cat([m.negative for m in members]).to(device)
        guided = cfg_denoiser(model.denoiser(), positive, negative, settings.cfg, *_vectors(members, device))
    total = len(sigmas) - 1

    def callback(info: dict) -> None:
        check_interrupt(interrupt)
        if on_step is not None:
            on_step(Step(info["i"], total, float(info["sigma"]), info["x"], info["denoised"]))

    if total > 0:
        check_interrupt(interrupt)
        x = SAMPLERS[settings.sampler](guided, x, sigmas, callback=callback, noise_sampler=MemberNoise(members, x))
    return x / model.latent_scale


def _vectors(members: Sequence[Member], device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    """The members' SDXL vectors y stacked per side, (B, adm) each, or (None, None) for SD1.x and SD 2.x."""
    if members[0].positive_y is None or members[0].negative_y is None:
        return None, None
    return (
        torch.cat([m.positive_y for m in members]).to(device),  # type: ignore[misc]
        torch.cat([m.negative_y for m in members]).to(device),  # type: ignore[misc]
    )


def lone_decode_batch(index: int, of: int, pixels: int) -> int:
    """How many images the lone job of `of` images (of `pixels` pixels each) decodes together with image `index`:
    pipeline.decode sends a batch through the VAE in chunks of at most VAE_BATCH_PIXELS pixels."""
    per_chunk = max(1, pipeline.VAE_BATCH_PIXELS // pixels)
    return min(per_chunk, of - index // per_chunk * per_chunk)


@torch.no_grad()
def decode_members(vae: VAE, latents: Sequence[Tensor], places: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Each member's RAW latent (1, 4, h, w) -> its image (1, 3, 8h, 8w) in [-1, 1]. `places`: (index, of) of
    each member in its job. On the CPU each is decoded as its lone job decodes it (`decode_member`); elsewhere
    (a GPU, where images are equal within a tolerance, not bit for bit) all of them in one VAE call, padded as
    sample_members pads its batches (padded_size)."""
    if next(vae.parameters()).device.type == "cpu":
        return [decode_member(vae, z, index, of) for z, (index, of) in zip(latents, places, strict=True)]
    images = decode(vae, torch.cat(padded(latents)))  # pipeline.decode keeps its memory chunks
    return list(images.split(1))[: len(latents)]


@torch.no_grad()
def decode_member(vae: VAE, latent: Tensor, index: int = 0, of: int = 1) -> Tensor:
    """A member's RAW latent (1, 4, h, w) -> its image (1, 3, 8h, 8w) in [-1, 1], rounded as its lone job's.

    Torch's CPU convolutions compute each image of a batch of 2 or more exactly as in any other batch of 2 or
    more, not as in a batch of one (see the module's docstring). So an image the lone job decodes alone (a
    one-image job, or the last of a chunk of one) is decoded alone; any other is decoded next to a copy of itself.
    """
    pixels = latent.shape[-2] * latent.shape[-1] * vae.config.downscale**2
    if lone_decode_batch(index, of, pixels) == 1:
        return decode(vae, latent)
    return decode(vae, latent.repeat(2, 1, 1, 1))[:1]
