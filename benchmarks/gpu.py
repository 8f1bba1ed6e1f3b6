"""The fast path against the readable modules and diffusers, side by side in one process on the same random weights.

    python benchmarks/gpu.py --json $OUT/gpu-h100.json              # every section, SD1.5 sizes, on the GPU
    python benchmarks/gpu.py --sections unet,loop --variants readable,fused,blocks+graphs
    python benchmarks/gpu.py --device cpu --tiny                     # smoke check of this script on a CPU

Sections (--sections, comma-separated; default all but `first`):
    unet     UNet forward, batch 2 (cond + uncond), 64x64 latent, 77 tokens: one row per optimisation (--variants),
             each row adding to the one before: ms per forward (CUDA events, median), it/s, TFLOP/s (FLOPs counted
             on the readable forward), setup time (conversion, compilation, graph capture), peak GPU memory,
             relative error against the readable output
    loop     a 20-step Euler CFG 7.5 sampling loop (pipeline.sample) and diffusers' loop (EulerDiscreteScheduler):
             it/s, and per step: UNet, the rest of the step, the same loop with a no-op network
    vae      decode 512x512 (readable, fast, diffusers) and 2048x2048 through tiling
    txt2img  20 steps, CFG 7.5, 512x512, prompt to PIL image in a warm process (generation.run); batch 8
    first    `atelier generate` in a fresh process, start to PNG, compilation included (fast and --no-fast)
    embedded the shipped model at its native size, readable and fast
  Round two (issue 19), each row also written to the JSON as it comes:
    quality  fp8 vs bf16, bf16 vs fp32 (and fp8 vs fp32): per-image PSNR and largest pixel difference on 16 fixed
             prompts and seeds, random-weight SD1.5 and the embedded model (--quality-steps, default 10)
    sweep    images/s at batch 1, 2, 4, 8, 16 (20 steps, CFG 7.5, native size) and the batch that maximises it
    start    `atelier generate` twice in fresh processes on one fresh compile cache: cold, then warm
    batching the classroom's GPU tolerance: 16 fixed jobs merged in batches of 8 vs each alone, per-image PSNR
    profile  one UNet call under torch.profiler at batch 2 and 16, bf16 and fp8: kernels by device time, by kind
The UNet rows fp8, fp8-row, fp8+graphs, fp8+full put the fp8 projections (atelier/models/fp8.py) beside bf16.
Every section has a time budget (--budgets, and --budget for the whole run): it starts nothing it cannot finish
and says so in a "stopped" row. Results are printed as tables and, with --json, written after every section and
every row of the newer sections (a run cut short keeps what it did).

    python3 benchmarks/gpu.py --sections unet,txt2img,quality,sweep,start,profile --budget 480 \
        --variants readable,graphs,fp8+graphs,blocks+graphs,fp8,fp8-row --json $OUT/gpu-h200.json
    sdxl_unet     SDXL base UNet forward, batch 2, 128x128 latent (a 1024x1024 image), 77 tokens, vector y 2816:
                  diffusers eager, diffusers at its best recipe (fused QKV, channels_last, torch.compile), ours
                  readable and ours fast (the default fast path: fused, channels_last, compiled blocks, CUDA graphs)
    sdxl_txt2img  30 steps, Euler, CFG 7.5, 1024x1024 to a PIL image, the same three: ours from the prompt
                  (generation.run, both text towers), diffusers' StableDiffusionXLPipeline from precomputed prompt
                  embeddings (its random weights need no tokenizer files), the VAE in the model's dtype for both
SDXL sections are not in the default list: `--sections sdxl_unet,sdxl_txt2img`.
Results are printed as tables and, with --json, written after every section (a run cut short keeps what it did).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from atelier.device import pick_device, pick_dtype
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.fast import FastOptions, accelerate, fast_unet, fast_vae
from atelier.models.unet import UNet
from atelier.models.vae import VAE

# Each row adds one change to the row before it (the diffusers rows stand apart).
VARIANTS: dict[str, FastOptions | None] = {
    "diffusers": None,
    "diffusers+compile": None,
    "readable": None,
    "fused": FastOptions(channels_last=False, compile="none", cuda_graphs=False),
    "fused+cl": FastOptions(compile="none", cuda_graphs=False),
    "fused+cl+flash": FastOptions(attention="flash", compile="none", cuda_graphs=False),
    "fused+cl+cudnn": FastOptions(attention="cudnn", compile="none", cuda_graphs=False),
    "graphs": FastOptions(compile="none"),
    "blocks": FastOptions(cuda_graphs=False),
    "blocks+graphs": FastOptions(),  # the default fast path
    "full+graphs": FastOptions(compile="full"),
    "autotune+graphs": FastOptions(compile="max-autotune"),
    # FP8 (e4m3) projections, fp8.py: each beside the bf16 row of the same compile mode.
    "fp8+graphs": FastOptions(compile="none", precision="fp8"),
    "fp8": FastOptions(precision="fp8"),  # blocks+graphs with fp8 projections
    "fp8-row": FastOptions(precision="fp8-row"),
    "fp8+full": FastOptions(compile="full", precision="fp8"),
    "fp8+fastaccum": FastOptions(precision="fp8", fp8_fast_accum=True),
    # A CPU's check of the fp8 rows: the same rounding in float32 (slower, never faster).
    "fp8-emulated": FastOptions(compile="none", cuda_graphs=False, precision="fp8", emulate_fp8=True),
}
DEFAULT_VARIANTS = (
    "diffusers,readable,fused,fused+cl,fused+cl+flash,fused+cl+cudnn,graphs,blocks,blocks+graphs,full+graphs"
)
CPU_VARIANTS = "diffusers,readable,fused,fused+cl,fp8-emulated"  # no graphs on a CPU, and compiling there takes minutes
PROMPT = "a red house under a yellow sun"
# The image-quality section's fixed prompts, each with its own seed (the seed is the index + 1000).
QUALITY_PROMPTS = (
    "a red house under a yellow sun",
    "a lighthouse on a cliff at dusk, oil painting",
    "a bowl of oranges on a wooden table",
    "a cat sleeping on a blue sofa",
    "a snowy mountain above a green valley",
    "a city street at night in the rain, neon signs",
    "a watercolour of a sailing boat on a calm sea",
    "a portrait of an old fisherman, charcoal drawing",
    "a field of sunflowers under a stormy sky",
    "a steam train crossing a stone bridge",
    "a bright coral reef with small fish",
    "a medieval castle in the fog",
    "a cup of coffee beside an open book",
    "an astronaut riding a horse on the moon",
    "a forest path in autumn, golden light",
    "a robot painting a landscape in a studio",
)


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 2) -> float:
    """Median time of one call in ms: CUDA events around each call on a GPU, the host clock on a CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def wall_s(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (matrix products, convolutions, attention), by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def differences(out: torch.Tensor, readable: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """How far an output is from the readable path's in the same precision (largest and mean absolute difference)
    and from the readable path in fp32 (relative L2 error), so that a half-precision row reads next to the
    readable path's own half-precision error."""
    diff = (out.float() - readable.float()).abs()
    return {
        "max_diff": round(diff.max().item(), 5),
        "mean_diff": round(diff.mean().item(), 6),
        "rel_error_fp32": round(relative_error(out, exact), 5),
    }


@torch.no_grad()
def exact_output(module: nn.Module, call: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
    """`call(module)` computed in fp32 on a copy of the module (the half-precision module stays as it is)."""
    import copy

    exact = copy.deepcopy(module).float()
    out = call(exact).float()
    del exact
    gc.collect()
    return out


# --------------------------------------------------------------------------------------------------------------
# Reference models
# --------------------------------------------------------------------------------------------------------------


def diffusers_available() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


def reference_unet(config: UNetConfig) -> nn.Module:
    from models import _reference_unet  # benchmarks/models.py, beside this file

    return _reference_unet(config)


def reference_vae(config: VAEConfig) -> nn.Module:
    from models import _reference_vae

    return _reference_vae(config)


def _paired(s: Setup, ours: Callable[[], nn.Module], theirs: Callable[[], nn.Module]) -> tuple:
    """Our module and diffusers' (None without diffusers) on the same random weights, on the device, frozen."""
    torch.manual_seed(0)
    readable = ours().eval().requires_grad_(False)
    reference = theirs().eval().requires_grad_(False) if diffusers_available() else None
    if reference is not None:
        readable.load_state_dict(reference.state_dict())
        reference.to(s.device, s.dtype)
    return readable.to(s.device, s.dtype), reference


def paired_unets(s: Setup) -> tuple[UNet, nn.Module | None]:
    return _paired(s, lambda: UNet(s.unet_config), lambda: reference_unet(s.unet_config))


def paired_vaes(s: Setup) -> tuple[VAE, nn.Module | None]:
    return _paired(s, lambda: VAE(s.vae_config), lambda: reference_vae(s.vae_config))


class NoNetwork(nn.Module):
    """Stands in for the UNet to time everything else in a sampling step: returns 0.5 * x."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@dataclasses.dataclass
class Setup:
    device: torch.device
    dtype: torch.dtype
    tiny: bool
    repeat: int
    args: argparse.Namespace | None = None  # the section-specific options (--quality-steps, --sweep-batches, ...)
    deadline: float = float("inf")  # time.perf_counter() by which the current section must stop starting work
    rows: list = dataclasses.field(default_factory=list)  # the current section's rows, saved as they come
    save: Callable[[], None] = lambda: None  # writes the JSON (main sets it)
    memo: dict = dataclasses.field(default_factory=dict)  # what sections share (the SDXL pair and its compile)

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def emit(self, row: dict) -> dict:
        """Print one row, add it to the section's rows and write the JSON (a run killed later keeps it)."""
        print_rows([row], header=not self.rows or list(row) != _header_shown)
        self.rows.append(row)
        self.save()
        return row

    def out_of_time(self, needed_s: float, what: str) -> bool:
        """True (and a row saying so) when less than `needed_s` is left of the section's budget."""
        if self.time_left() >= needed_s:
            return False
        self.emit({"stopped": f"budget: {what} needs about {needed_s:.0f} s, {max(self.time_left(), 0):.0f} s left"})
        return True

    @property
    def steps(self) -> int:
        """Sampling steps of the txt2img, embedded and sweep sections (20 unless --steps says otherwise)."""
        return self.args.steps if self.args is not None else 20

    @property
    def fp8_options(self) -> FastOptions:
        """The fp8 fast path for this device: native on an FP8 GPU, emulated (and eager) on a CPU."""
        if self.device.type == "cuda":
            return FastOptions(precision="fp8")
        return VARIANTS["fp8-emulated"]

    @property
    def fast_options(self) -> FastOptions:
        return FastOptions() if self.device.type == "cuda" else FastOptions.eager()
    diffusers_compile_mode: str = "max-autotune"  # the "diffusers best" SDXL rows' (its speed-up guide's mode)

    @property
    def unet_config(self) -> UNetConfig:
        return UNetConfig.tiny() if self.tiny else UNetConfig()

    @property
    def vae_config(self) -> VAEConfig:
        return VAEConfig.tiny() if self.tiny else VAEConfig()

    @property
    def text_config(self) -> TextEncoderConfig:
        return TextEncoderConfig.tiny() if self.tiny else TextEncoderConfig()

    @property
    def latent(self) -> int:
        return 8 if self.tiny else 64  # latent side: 64 = a 512x512 image

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, d = self.unet_config, self.device
        x = torch.randn(2, cfg.in_channels, self.latent, self.latent, device=d, dtype=self.dtype)
        context = torch.randn(2, 77, cfg.context_dim, device=d, dtype=self.dtype)
        return x, torch.tensor([999.0, 500.0], device=d), context


# --------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------


def section_unet(s: Setup, variants: list[str]) -> list[dict]:
    readable, reference = paired_unets(s)
    x, t, context = s.inputs()
    with torch.no_grad():
        expected = readable(x, t, context)
        exact = exact_output(readable, lambda m: m(x.float(), t, context.float()))
        flops = count_flops(lambda: readable(x, t, context))
    s.emit({"flops_per_forward": flops})
    for name in variants:
        if name.startswith("diffusers") and reference is None:
            s.emit({"variant": name, "skipped": "diffusers is not installed"})
            continue
        options = VARIANTS[name]
        if s.device.type != "cuda" and options is not None and (options.cuda_graphs or options.compile != "none"):
            s.emit({"variant": name, "skipped": "CUDA graphs need a CUDA GPU (and compiling on a CPU: minutes)"})
            continue
        compiles = "compile" in name or (options is not None and options.compile != "none")
        if s.out_of_time(60 if compiles else 5, f"variant {name}"):
            break
        reset_peak(s.device)
        t0 = time.perf_counter()
        if name == "readable":
            model = readable
        elif name == "diffusers":
            model = lambda x, t, c: reference(x, t, encoder_hidden_states=c).sample  # noqa: E731
        elif name == "diffusers+compile":
            reference.to(memory_format=torch.channels_last)
            compiled = torch.compile(reference, fullgraph=True)
            model = lambda x, t, c, f=compiled: f(x, t, encoder_hidden_states=c).sample  # noqa: E731
        else:
            model = fast_unet(readable, VARIANTS[name])
        try:
            with torch.no_grad():
                out = model(x, t, context)  # conversion, compilation and capture happen here
                sync(s.device)
                setup = time.perf_counter() - t0
                ms = median_ms(lambda m=model: m(x, t, context), s.device, s.repeat)
        except Exception as error:  # e.g. a torch without row-wise fp8 kernels: the row says so, the run goes on
            s.emit({"variant": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"})
            del model
            continue
        precision = getattr(model, "precision", None)
        check = {}
        if precision not in (None, "native") and not options.emulate_fp8:
            # The native kernels against the same rounding computed in float32: the math, not just the speed.
            emulated = fast_unet(
                readable, dataclasses.replace(options, compile="none", cuda_graphs=False, emulate_fp8=True)
            )
            with torch.no_grad():
                check = {"rel_error_vs_emulated": round(relative_error(out, emulated(x, t, context)), 5)}
            del emulated
        s.emit(
            {
                "variant": name,
                "ms": round(ms, 3),
                "it_s": round(1000 / ms, 1),
                "tflop_s": round(flops / ms / 1e9, 2),
                "setup_s": round(setup, 1),
                "peak_gb": peak_gb(s.device),
                **differences(out, expected, exact),
                **({"precision": precision, "fp8_layers": len(model.fp8_layers)} if precision else {}),
                **check,
            }
        )
        del model
    return s.rows


def _sample_loop(s: Setup, unet: nn.Module, steps: int = 20) -> Callable[[], object]:
    from atelier.pipeline import DiffusionModel, SamplerSettings, sample

    model = DiffusionModel(unet, 0.18215)
    latent = torch.zeros(1, 4, s.latent, s.latent)
    cond, uncond = (torch.randn(1, 77, s.unet_config.context_dim, device=s.device, dtype=s.dtype) for _ in "ab")
    settings = SamplerSettings(seed=1, steps=steps, cfg=7.5)
    return lambda: sample(model, latent, cond, uncond, settings)


def _diffusers_loop(s: Setup, reference: nn.Module, steps: int = 20) -> Callable[[], object]:
    """What StableDiffusionPipeline's denoising loop does (Euler scheduler, CFG batched)."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ctx = torch.randn(2, 77, s.unet_config.context_dim, device=s.device, dtype=s.dtype)

    def loop() -> torch.Tensor:
        scheduler.set_timesteps(steps, device=s.device)
        latents = torch.randn(1, 4, s.latent, s.latent, device=s.device, dtype=s.dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise = reference(inp, t, encoder_hidden_states=ctx).sample
            cond, uncond = noise.chunk(2)
            latents = scheduler.step(uncond + 7.5 * (cond - uncond), t, latents).prev_sample
        return latents

    return loop


def section_loop(s: Setup) -> list[dict]:
    steps = 20
    readable, reference = paired_unets(s)
    loops: dict[str, Callable[[], object]] = {}
    if reference is not None:
        loops["diffusers"] = _diffusers_loop(s, reference, steps)
    loops["readable"] = _sample_loop(s, readable, steps)
    loops["no network (rest of step)"] = _sample_loop(s, NoNetwork(s.unet_config).to(s.device, s.dtype), steps)
    options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    fast = fast_unet(readable, options)
    loops["fast"] = _sample_loop(s, fast, steps)
    rows = []
    with torch.no_grad():
        x, t, context = s.inputs()
        unet_ms = median_ms(lambda: fast(x, t, context), s.device, s.repeat)
        for name, loop in loops.items():
            wall_s(loop, s.device)  # warm-up (compilation, capture)
            seconds = statistics.median(wall_s(loop, s.device) for _ in range(3))
            step_ms = seconds * 1000 / steps
            row = {"loop": name, "it_s": round(steps / seconds, 1), "step_ms": round(step_ms, 3)}
            row |= {"unet_ms": round(unet_ms, 3), "rest_ms": round(step_ms - unet_ms, 3)} if name == "fast" else {}
            rows.append(row)
            print_rows(rows[-1:], header=len(rows) == 1)
    return rows


def section_vae(s: Setup) -> list[dict]:
    readable, reference = paired_vaes(s)
    z = torch.randn(1, 4, s.latent, s.latent, device=s.device, dtype=s.dtype)
    rows = []
    with torch.no_grad():
        expected = readable.decode(z)
        exact = exact_output(readable, lambda m: m.decode(z.float()))
        flops = count_flops(lambda: readable.decode(z))
        size = s.latent * 8

        def measure(name: str, decode: Callable[[], torch.Tensor], t0: float) -> None:
            out = decode()  # the fast path converts, compiles and captures here
            sync(s.device)
            setup = time.perf_counter() - t0
            ms = median_ms(decode, s.device, max(3, s.repeat // 4))
            row = {"what": f"decode {size}x{size}", "impl": name, "ms": round(ms, 2), "setup_s": round(setup, 1)}
            row |= {"tflop_s": round(flops / ms / 1e9, 2), "peak_gb": peak_gb(s.device)}
            rows.append(row | differences(out, expected, exact))
            print_rows(rows[-1:], header=len(rows) == 1)

        reset_peak(s.device)
        measure("readable", lambda: readable.decode(z), time.perf_counter())
        if reference is not None:
            reset_peak(s.device)
            measure("diffusers", lambda: reference.decode(z).sample, time.perf_counter())
        # Last: fast_vae switches the readable module's weights to channels_last in place.
        reset_peak(s.device)
        t0 = time.perf_counter()
        fast = fast_vae(readable, FastOptions() if s.device.type == "cuda" else FastOptions.eager())
        measure("fast", lambda: fast.decode(z), t0)
        from atelier.pipeline import decode as pipeline_decode

        big = torch.randn(1, 4, 4 * s.latent, 4 * s.latent)  # 2048x2048 at SD size: decoded 64-latent tile by tile
        pipeline_decode(fast, big)
        reset_peak(s.device)
        seconds = wall_s(lambda: pipeline_decode(fast, big), s.device)
        rows.append(
            {
                "what": f"decode {4 * size}x{4 * size} (tiled)",
                "impl": "fast",
                "ms": round(seconds * 1000, 1),
                "peak_gb": peak_gb(s.device),
            }
        )
        print_rows(rows[-1:], header=False)
    return rows


def random_checkpoint(s: Setup, dtype: torch.dtype | None = None):
    """A Checkpoint of random SD1.5-sized (or tiny) modules with the SD1.x tokenizer; the same weights (seed 0,
    drawn in fp32 on the device) in any `dtype` (default: the benchmark's)."""
    dtype = dtype or s.dtype
    from atelier.models.checkpoint import Checkpoint
    from atelier.models.clip import CLIPTextEncoder
    from atelier.models.tokenizer import CLIPTokenizer

    torch.manual_seed(0)
    with torch.device(s.device):  # drawn on the device (seconds on a CPU for SD1.5), then cast
        modules = [UNet(s.unet_config), VAE(s.vae_config), CLIPTextEncoder(s.text_config)]
    unet, vae, text = (m.to(s.device, dtype).eval().requires_grad_(False) for m in modules)
    return Checkpoint(
        unet,
        vae,
        text,
        CLIPTokenizer.from_default(),
        s.unet_config,
        s.vae_config,
        s.text_config,
        "sd1",
        Path("random"),
        dtype,
        s.device,
    )


def _txt2img_rows(s: Setup, ckpt, label: str, size: int, batches: tuple[int, ...], header: bool) -> list[dict]:
    from atelier.generation import GenerationParams, run

    rows = []
    for batch in batches:
        if s.out_of_time(20 if s.device.type == "cuda" else 5, f"txt2img {label} batch {batch}"):
            break
        params = GenerationParams(PROMPT, seed=1, steps=s.steps, cfg=7.5, width=size, height=size, batch=batch)
        reset_peak(s.device)
        first = wall_s(lambda p=params: run(ckpt, p), s.device)  # includes compilation and capture
        repeat = 3 if batch == 1 else 1
        seconds = statistics.median(wall_s(lambda p=params: run(ckpt, p), s.device) for _ in range(repeat))
        row = {"what": f"txt2img {size}x{size}, {s.steps} steps, CFG 7.5", "impl": label, "batch": batch}
        row |= {"first_s": round(first, 2), "s": round(seconds, 3), "images_s": round(batch / seconds, 2)}
        rows.append(s.emit(row | {"peak_gb": peak_gb(s.device)}))
    return rows


def section_txt2img(s: Setup) -> list[dict]:
    """Readable and fast at batch 1, fast bf16 and fast fp8 at batch 8 (fp8 emulated, hence slow, on a CPU)."""
    ckpt = random_checkpoint(s)
    size = s.latent * 8
    _txt2img_rows(s, ckpt, "readable", size, (1,), header=True)
    _txt2img_rows(s, accelerate(ckpt, enabled=True, options=s.fast_options), "fast", size, (1, 8), False)
    fp8_ckpt = accelerate(ckpt, enabled=True, options=s.fp8_options)
    label = f"fast {fp8_ckpt.unet.precision}" + (" (emulated)" if s.fp8_options.emulate_fp8 else "")
    _txt2img_rows(s, fp8_ckpt, label, size, (8, 1), False)
    return s.rows


def section_embedded(s: Setup) -> list[dict]:
    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.library import embedded_model_path, native_size

    path = embedded_model_path()
    size = native_size(path)
    ckpt = load_checkpoint(path, device=s.device, dtype=s.dtype)
    rows = _txt2img_rows(s, ckpt, "readable", size, (1,), header=True)
    fast_options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    rows += _txt2img_rows(s, accelerate(ckpt, enabled=True, options=fast_options), "fast", size, (1,), False)
    if s.device.type == "cuda":  # what --compile auto picks for this small UNet: CUDA graphs, no compile wait
        graphs_only = accelerate(ckpt, enabled=True, options=FastOptions(compile="none"))
        rows += _txt2img_rows(s, graphs_only, "fast, CUDA graphs only (compile auto)", size, (1,), False)
    return [r | {"model": "embedded"} for r in rows]


def generate_command(model: Path, steps: int, out: Path | str, device: torch.device, extra: list[str]) -> list[str]:
    """`atelier generate` of the benchmark's prompt, seed 1, in a fresh Python process (the `first` and `start`
    sections time it from process start to PNG)."""
    return [sys.executable, "-m", "atelier.cli", "generate", PROMPT, "--model", str(model), "--seed", "1",
            "--steps", str(steps), "--out", str(out), "--device", str(device), *extra]  # fmt: skip


def section_first(s: Setup) -> list[dict]:
    """`atelier generate` in a fresh process on a saved random checkpoint: start-up to PNG on disk."""
    from atelier.models.checkpoint import save_checkpoint

    ckpt = random_checkpoint(s)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(Path(folder) / "random-sd15.safetensors", ckpt.unet, ckpt.vae, ckpt.text_encoder)
        del ckpt
        reset_peak(s.device)
        for label, extra in (("fast", []), ("readable (--no-fast)", ["--no-fast"])):
            command = generate_command(path, 20, folder, s.device, extra)
            # A fresh compiler cache, so that "fast" pays its whole compilation as a first run on a machine does.
            env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(dir=folder), "PYTHONUNBUFFERED": "1"}
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
            seconds = time.perf_counter() - t0
            row = {"what": "atelier generate, start to PNG", "impl": label, "s": round(seconds, 1)}
            if done.returncode != 0:
                row["error"] = _failure(done)
            rows.append(row)
            print_rows(rows[-1:], header=len(rows) == 1)
    return rows


# --------------------------------------------------------------------------------------------------------------
# Round two (issue 19): image quality of fp8 and bf16, batch sweep, cold and warm start, where the time goes
# --------------------------------------------------------------------------------------------------------------


def _quality_models(s: Setup) -> list[tuple[str, Callable[[torch.dtype], object], int]]:
    """(name, checkpoint in a dtype, image side) for random-weight SD1.5 (tiny with --tiny) and the embedded model."""
    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.library import embedded_model_path, native_size

    path = embedded_model_path()
    embedded_size = native_size(path) if not s.tiny else 64
    models = {
        "random": (
            "sd15-random" if not s.tiny else "tiny-random",
            lambda dtype: random_checkpoint(s, dtype),
            s.latent * 8,
        ),
        "embedded": ("embedded", lambda dtype: load_checkpoint(path, device=s.device, dtype=dtype), embedded_size),
    }
    return [models[name] for name in s.args.models.split(",")]


def _images(ckpt, size: int, steps: int, count: int) -> list:
    """The quality set's images from `ckpt`: prompt i with seed 1000 + i, one image per call, as uint8 arrays."""
    import numpy as np

    from atelier.generation import GenerationParams, run

    out = []
    for i, prompt in enumerate(QUALITY_PROMPTS[:count]):
        params = GenerationParams(prompt, seed=1000 + i, steps=steps, cfg=7.5, width=size, height=size)
        with torch.no_grad():
            out.append(np.asarray(run(ckpt, params).images[0].convert("RGB"), dtype=np.uint8))
    return out


def psnr_and_max(a, b) -> tuple[float, int]:
    """PSNR in dB (peak 255; inf for identical images) and the largest pixel difference (0..255) of two images."""
    import numpy as np

    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float((diff**2).mean())
    return (float("inf") if mse == 0 else round(float(10 * np.log10(255.0**2 / mse)), 2)), int(np.abs(diff).max())


def _compare(label: str, model: str, images: list, reference: list) -> dict:
    pairs = [psnr_and_max(a, b) for a, b in zip(images, reference, strict=True)]
    finite = [p for p, _ in pairs if p != float("inf")]
    return {
        "model": model,
        "pair": label,
        "psnr_min": min(finite) if finite else "inf",
        "psnr_mean": round(sum(finite) / len(finite), 2) if finite else "inf",
        "max_diff": max(m for _, m in pairs),
        "identical": len(pairs) - len(finite),
        "per_image_psnr": [p if p != float("inf") else "inf" for p, _ in pairs],
        "per_image_max_diff": [m for _, m in pairs],
    }


def section_quality(s: Setup) -> list[dict]:
    """fp8 against bf16 and bf16 against fp32, on 16 fixed prompts and seeds, for each model.

    The four ways of computing one image set: readable fp32, readable bf16, fast bf16 and fast fp8 (the fast ones
    eager with CUDA graphs: compiling changes only rounding, and would cost a minute per model here). The pairs:
    "fp8 vs bf16" (fast fp8 against fast bf16: what fp8 alone changes), "bf16 vs fp32" (readable: what half
    precision alone changes), and "fp8 vs fp32". Fewer steps than 20 (--quality-steps) to keep it cheap.
    """
    steps, count = s.args.quality_steps, s.args.quality_images
    fast_bf16 = FastOptions(compile="none") if s.device.type == "cuda" else FastOptions.eager()
    fp8_options = dataclasses.replace(s.fp8_options, compile="none")
    s.emit(
        {
            "steps": steps,
            "images": count,
            "cfg": 7.5,
            "fast_options": "eager + CUDA graphs (no compile)" if s.device.type == "cuda" else "eager",
            "tf32": torch.backends.cuda.matmul.allow_tf32,
            "fp8_emulated": fp8_options.emulate_fp8,
        }
    )
    for model, load, size in _quality_models(s):
        if s.out_of_time(30 if s.device.type == "cuda" else 10, f"quality of {model}"):
            break
        t0 = time.perf_counter()
        sets = {}
        ckpt32 = load(torch.float32)
        sets["fp32"] = _images(ckpt32, size, steps, count)
        del ckpt32
        reset_peak(s.device)
        ckpt16 = load(torch.bfloat16)
        sets["bf16"] = _images(ckpt16, size, steps, count)
        sets["fast bf16"] = _images(accelerate(ckpt16, enabled=True, options=fast_bf16), size, steps, count)
        fp8_ckpt = accelerate(ckpt16, enabled=True, options=fp8_options)
        sets["fast fp8"] = _images(fp8_ckpt, size, steps, count)
        seconds = round(time.perf_counter() - t0, 1)
        for label, a, b in (
            ("fp8 vs bf16", "fast fp8", "fast bf16"),
            ("bf16 vs fp32", "bf16", "fp32"),
            ("fp8 vs fp32", "fast fp8", "fp32"),
            ("fast bf16 vs bf16", "fast bf16", "bf16"),
        ):
            row = _compare(label, model, sets[a], sets[b]) | {"size": size, "s": seconds}
            row["fp8_precision"] = fp8_ckpt.unet.precision
            s.emit(row)
        del ckpt16, fp8_ckpt, sets
        gc.collect()
    return s.rows


def section_batching(s: Setup) -> list[dict]:
    """The classroom's tolerance on a GPU: each of 16 fixed jobs (prompt i, seed 1000 + i, --steps, CFG 7.5) made
    alone, then as a member of merged batches of 8 (batching.py: one sampling call, one VAE call), the way
    `serve` runs them. Per-image PSNR and largest pixel difference of merged vs alone. On a CPU in fp32 they are
    identical (tests/test_batching.py); on a GPU cuBLAS and cuDNN pick kernels by batch size, so they differ by
    rounding, and a chaotic model (the embedded one) may end a trajectory in another drawing."""
    import numpy as np

    from atelier.batching import Member, decode_members, sample_members
    from atelier.imaging import bchw_signed_to_pil
    from atelier.pipeline import DiffusionModel, SamplerSettings, encode_prompt

    steps, count, group = s.steps, s.args.quality_images, 8
    options = FastOptions(compile="none") if s.device.type == "cuda" else FastOptions.eager()
    for model, load, size in _quality_models(s):
        if s.out_of_time(30 if s.device.type == "cuda" else 10, f"batching tolerance of {model}"):
            break
        t0 = time.perf_counter()
        ckpt = accelerate(load(s.dtype), enabled=True, options=options)
        alone = _images(ckpt, size, steps, count)
        encode = lambda text, c=ckpt: encode_prompt(c.text_encoder, c.tokenizer, text)  # noqa: E731
        members = [Member(encode(p), encode(""), 1000 + i, 0, 1) for i, p in enumerate(QUALITY_PROMPTS[:count])]
        settings = SamplerSettings(0, steps, 7.5, "euler", "normal", 1.0)
        diffusion = DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor)
        merged = []
        with torch.no_grad():
            for start in range(0, count, group):
                chunk = members[start : start + group]
                latents = sample_members(diffusion, chunk, settings, size, size)
                for image in decode_members(ckpt.vae, latents, [(0, 1)] * len(chunk)):
                    merged.append(np.asarray(bchw_signed_to_pil(image.float())[0].convert("RGB"), dtype=np.uint8))
        row = _compare(f"merged (batches of {group}) vs alone", model, merged, alone)
        s.emit(row | {"size": size, "steps": steps, "dtype": str(s.dtype), "s": round(time.perf_counter() - t0, 1)})
        del ckpt
        gc.collect()
    return s.rows


def section_sweep(s: Setup) -> list[dict]:
    """Images per second against batch size, 20 steps, CFG 7.5, native size: the batch the classroom should use.

    The fast path here is eager with CUDA graphs (--sweep-compile none, the default) or the default compiled one
    (--sweep-compile blocks: each batch size compiles once more, ~40 s on an H200 for SD1.5).
    """
    from atelier.generation import GenerationParams, run

    batches = [int(b) for b in s.args.sweep_batches.split(",")]
    options = FastOptions(compile=s.args.sweep_compile) if s.device.type == "cuda" else FastOptions.eager()
    s.emit(
        {"batches": batches, "steps": s.steps, "options": f"compile={options.compile}, graphs={options.cuda_graphs}"}
    )
    for model, load, size in _quality_models(s):
        ckpt = accelerate(load(s.dtype), enabled=True, options=options)
        best = None
        for batch in batches:
            if s.out_of_time(15 if s.device.type == "cuda" else 5, f"{model} batch {batch}"):
                break
            params = GenerationParams(PROMPT, seed=1, steps=s.steps, cfg=7.5, width=size, height=size, batch=batch)
            reset_peak(s.device)
            try:
                once = lambda p=params, c=ckpt: run(c, p)  # noqa: E731
                first = wall_s(once, s.device)  # graph capture (and compilation)
                seconds = min(wall_s(once, s.device) for _ in range(2 if batch <= 4 else 1))
            except torch.OutOfMemoryError:
                s.emit({"model": model, "batch": batch, "error": "out of GPU memory"})
                break
            row = {"model": model, "size": size, "batch": batch, "first_s": round(first, 2), "s": round(seconds, 3)}
            row |= {"images_s": round(batch / seconds, 2), "peak_gb": peak_gb(s.device)}
            s.emit(row)
            best = row if best is None or row["images_s"] > best["images_s"] else best
        if best is not None:
            s.emit({"model": model, "best_batch": best["batch"], "best_images_s": best["images_s"]})
        del ckpt
        gc.collect()
    return s.rows


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def section_start(s: Setup) -> list[dict]:
    """`atelier generate` twice in fresh processes on one fresh compile cache: cold (compiles, fills the cache),
    then warm (must find every kernel on disk). Start of the process to the PNG on disk, for the embedded model
    and (when the budget allows) a saved random SD1.5 checkpoint."""
    from atelier.models.checkpoint import save_checkpoint
    from atelier.models.library import embedded_model_path

    with tempfile.TemporaryDirectory() as folder:
        models = [("embedded", embedded_model_path(), 60)]
        if not s.tiny or s.args.start_sd15:
            models.append(("sd15-random", None, 120))
        for model, path, needed in models:
            if s.out_of_time(needed if s.device.type == "cuda" else 20, f"cold and warm start of {model}"):
                break
            if path is None:
                ckpt = random_checkpoint(s)
                path = save_checkpoint(Path(folder) / "random-sd15.safetensors", ckpt.unet, ckpt.vae, ckpt.text_encoder)
                del ckpt
                gc.collect()
                reset_peak(s.device)
            for n, flag_set in enumerate(s.args.start_flags.split(";")):  # each set: its own cold start
                flags, shown = flag_set.split(), " ".join(flag_set.split())
                if n and s.out_of_time(needed if s.device.type == "cuda" else 20, f"starts of {model} [{shown}]"):
                    break
                cache = Path(tempfile.mkdtemp(dir=folder))  # fresh: the first run is a machine's first run
                # Our own cache root, and none of the parent's Inductor/Triton folders (use_compile_cache picks them).
                env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
                env |= {"ATELIER_COMPILE_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
                for run_name in ("cold", "warm"):
                    out = Path(folder) / "out.png"
                    command = generate_command(path, s.args.start_steps, out, s.device, [*flags, "--timings"])
                    files_before = _count_files(cache)
                    t0 = time.perf_counter()
                    try:
                        done = subprocess.run(
                            command, capture_output=True, text=True, env=env, timeout=max(s.time_left(), 30)
                        )
                    except subprocess.TimeoutExpired:
                        s.emit({"model": model, "run": run_name, "flags": shown, "error": "timed out (section budget)"})
                        break
                    seconds = time.perf_counter() - t0
                    row = {
                        "what": "atelier generate, process start to PNG",
                        "model": model,
                        "run": run_name,
                        "s": round(seconds, 1),
                        "steps": s.args.start_steps,
                        "flags": shown,
                        "cache_files_before": files_before,
                        "cache_files_after": _count_files(cache),
                    }
                    row |= _start_phases(done.stderr, seconds)
                    if done.returncode != 0:
                        row["error"] = _failure(done)
                    s.emit(row)
    return s.rows


def _failure(done: subprocess.CompletedProcess) -> str:
    """A failed start in one line: its exit status and the last line that names an error (a progress bar or a
    warning's source line may come last); the last 20 lines of its stderr go to the log."""
    lines = [line for line in (done.stderr or "").strip().splitlines() if line.strip()]
    print("\n".join(["failed start, last lines of its stderr:", *lines[-20:]]), file=sys.stderr)
    named = [line for line in lines if "Error" in line or "error:" in line.lower()]
    return f"exit {done.returncode}: {(named or lines or [''])[-1].strip()[:300]}"


def _start_phases(stderr: str, total: float) -> dict:
    """Where a start's seconds went, from what `atelier generate` prints: the checkpoint's loading, the sampling
    call (its first UNet call compiles or reads the compile cache), and the rest (Python and torch imports, CUDA's
    start, building the fast path, the PNG); with --timings' line, each of those phases."""
    loaded = re.search(r"loaded in ([0-9.]+) s", stderr)
    sampled = re.search(r"^seed -?\d+, ([0-9.]+) s", stderr, re.M)
    if not (loaded and sampled):
        return {}
    load_s, sample_s = float(loaded.group(1)), float(sampled.group(1))
    phases = {"load_s": load_s, "sample_s": sample_s, "other_s": round(total - load_s - sample_s, 1)}
    timings = re.search(r"^timings: (.*)$", stderr, re.M)  # `generate --timings`: every phase, in the JSON only
    if timings:
        phases["timings"] = timings.group(1)
    return phases


_KERNEL_KINDS = (  # first match wins; names as cuBLAS, cuDNN, CUTLASS, flash attention and Inductor give them
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("fp8 gemm", ("e4m3", "f8f8", "fp8", "qgmma", "scaled_mm")),
    ("convolution", ("conv", "fprop", "dgrad", "implicit", "cudnn", "xmma_fprop")),
    ("gemm", ("gemm", "gemv", "cutlass", "cublas", "sm90_xmma", "nvjet", "matmul", "aten::mm", "addmm", "bmm")),
    ("fp8 scales and casts", ("amax", "clamp")),  # Inductor names a kernel by the ops it fuses
    ("norm", ("group_norm", "layer_norm", "red_fused", "per_fused")),
    ("elementwise", ("triton_poi", "triton_", "silu", "gelu", "add", "mul")),
    ("copy / layout", ("copy", "transpose", "permute", "cat", "memcpy", "memset")),
)


def _kernel_kind(name: str) -> str:
    lower = name.lower()
    for kind, needles in _KERNEL_KINDS:
        if any(n in lower for n in needles):
            return kind
    return "other"


def profile_call(fn: Callable[[], object], device: torch.device, top: int) -> dict:
    """One call of `fn` under torch.profiler: its kernels by device time (CPU ops' own time on a CPU), top first,
    and the totals per kind of kernel."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    kernels = []
    for event in prof.key_averages():
        if device.type == "cuda":
            if getattr(event, "device_type", None) != torch.autograd.DeviceType.CUDA:
                continue
            us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        else:
            us = event.self_cpu_time_total
        if us > 0:
            kernels.append({"kernel": event.key, "us": round(us, 1), "calls": event.count})
    if not kernels:  # a profiler that files kernels under their CPU ops: those ops' own device time
        for event in prof.key_averages():
            us = getattr(event, "self_device_time_total", 0)
            if us > 0:
                kernels.append({"kernel": event.key, "us": round(us, 1), "calls": event.count})
    kernels.sort(key=lambda k: -k["us"])
    total = sum(k["us"] for k in kernels) or 1.0
    kinds: dict[str, float] = {}
    for k in kernels:
        k["share"], k["kind"] = round(k["us"] / total, 4), _kernel_kind(k["kernel"])
        kinds[k["kind"]] = kinds.get(k["kind"], 0.0) + k["us"]
        k["kernel"] = k["kernel"][:200]  # template arguments make some names kilobytes long
    by_kind = {
        kind: {"us": round(us, 1), "share": round(us / total, 4)}
        for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1])
    }
    return {"total_us": round(total, 1), "kernels_counted": len(kernels), "by_kind": by_kind, "top": kernels[:top]}


def section_profile(s: Setup) -> list[dict]:
    """Where one UNet call spends its time, kernel by kernel (torch.profiler), at batch 2 and 16, 64x64 latent,
    in bf16 and fp8: the fast path compiled per block, without CUDA graphs (the profiler sees each kernel)."""
    with torch.device(s.device):
        readable = UNet(s.unet_config).to(s.dtype).eval().requires_grad_(False)
    cfg = s.unet_config
    for label, options in (("bf16", s.fast_options), ("fp8", s.fp8_options)):
        options = dataclasses.replace(options, cuda_graphs=False)
        model = fast_unet(readable, options)
        for batch in [int(b) for b in s.args.profile_batches.split(",")]:
            if s.out_of_time(45 if s.device.type == "cuda" else 5, f"profile {label} batch {batch}"):
                return s.rows
            x = torch.randn(batch, cfg.in_channels, s.latent, s.latent, device=s.device, dtype=s.dtype)
            t = torch.full((batch,), 500.0, device=s.device)
            context = torch.randn(batch, 77, cfg.context_dim, device=s.device, dtype=s.dtype)
            with torch.no_grad():
                call = lambda m=model, a=(x, t, context): m(*a)  # noqa: E731
                t0 = time.perf_counter()
                call()  # compiles
                setup = time.perf_counter() - t0
                ms = median_ms(call, s.device, max(3, s.repeat // 5))
                profiled = profile_call(call, s.device, s.args.profile_top)
            row = {
                "precision": model.precision,
                "batch": batch,
                "latent": s.latent,
                "ms": round(ms, 3),
                "setup_s": round(setup, 1),
                "options": f"compile={options.compile}, no CUDA graphs",
            }
            s.emit(row | profiled)
        del model
        gc.collect()
    return s.rows
# SDXL: the same random weights in our modules and diffusers'
# --------------------------------------------------------------------------------------------------------------

# A small SDXL shape for --tiny (three levels, depths 0/2/3, linear projections, a vector y).
TINY_SDXL = UNetConfig(
    block_channels=(32, 64, 64), layers_per_block=1, cross_attention_levels=(False, True, True),
    attention_head_dim=16, transformer_depth=(0, 2, 3), linear_projection=True, context_dim=40,
    adm_in_channels=16 + 6 * 8, size_embed_dim=8, norm_groups=8,
)  # fmt: skip


def sdxl_config(s: Setup) -> UNetConfig:
    return TINY_SDXL if s.tiny else UNetConfig.sdxl()


def sdxl_latent(s: Setup) -> int:
    return 8 if s.tiny else 128  # latent side: 128 = a 1024x1024 image


def sdxl_inputs(s: Setup) -> tuple[torch.Tensor, ...]:
    """x (2, 4, h, w), t (2,), context (2, 77, 2048), y (2, 2816), and diffusers' pooled and time ids for that y."""
    from atelier.models.unet import sdxl_vector

    cfg, d, n = sdxl_config(s), s.device, sdxl_latent(s)
    pooled_width = cfg.adm_in_channels - 6 * cfg.size_embed_dim
    x = torch.randn(2, 4, n, n, device=d, dtype=s.dtype)
    context = torch.randn(2, 77, cfg.context_dim, device=d, dtype=s.dtype)
    pooled = torch.randn(2, pooled_width, device=d, dtype=s.dtype)
    sizes = torch.tensor([[8.0 * n, 8.0 * n, 0, 0, 8.0 * n, 8.0 * n]] * 2, device=d)
    y = sdxl_vector(pooled, sizes, cfg.size_embed_dim)
    return x, torch.tensor([999.0, 500.0], device=d), context, y, pooled, sizes.to(s.dtype)


def paired_sdxl_unets(s: Setup) -> tuple[UNet, nn.Module | None]:
    """Our SDXL UNet and diffusers' with the same random weights, made once per run (2.6 G parameters each)."""
    from models import _reference_family_unet

    if "sdxl_pair" not in s.memo:
        cfg = sdxl_config(s)
        s.memo["sdxl_pair"] = _paired(s, lambda: UNet(cfg), lambda: _reference_family_unet(cfg))
    return s.memo["sdxl_pair"]


# The inductor settings of diffusers' "Speed up inference" guide. Compilation is lazy: they are patched in only
# around the first (compiling) call, so that nothing compiled afterwards (ours included) inherits them.
DIFFUSERS_INDUCTOR = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False,
                      "coordinate_descent_check_all_directions": True}  # fmt: skip


def diffusers_inductor(s: Setup) -> contextlib.AbstractContextManager:
    """The guide's inductor flags (--diffusers-inductor guide, the default) or none (default)."""
    import torch._inductor.config as inductor

    guide = s.args is None or s.args.diffusers_inductor == "guide"
    return inductor.patch(DIFFUSERS_INDUCTOR) if guide else contextlib.nullcontext()


def diffusers_best(s: Setup) -> nn.Module:
    """diffusers' recipe for a fast SDXL UNet (its guide): fused QKV projections, channels_last, and torch.compile
    of the whole UNet (fullgraph; its first call under `diffusers_inductor()`). Made once per run, on the shared
    reference UNet: sdxl_unet and sdxl_txt2img have the same shapes (batch 2, 128x128), so one compile serves both.
    Fusing changes the reference in place: call it after the eager rows."""
    if "sdxl_best" not in s.memo:
        _, reference = paired_sdxl_unets(s)
        reference.fuse_qkv_projections()
        reference.to(memory_format=torch.channels_last)
        # no compilation on a CPU (minutes of C++ builds); the rows say so
        compiled = torch.compile(reference, mode=s.diffusers_compile_mode, fullgraph=True)
        s.memo["sdxl_best"] = compiled if s.device.type == "cuda" else reference
    return s.memo["sdxl_best"]


def diffusers_best_label(s: Setup) -> str:
    if s.device.type != "cuda":
        return "diffusers fused+cl (no compile on a CPU)"
    if s.args is not None and s.args.diffusers_inductor == "default":
        return f"diffusers compiled ({s.diffusers_compile_mode}, default inductor flags)"
    return "diffusers best"


def diffusers_best_needs(s: Setup) -> float:
    """Seconds of budget the 'diffusers best' compile needs (--diffusers-best-s)."""
    return s.args.diffusers_best_s if s.args is not None else DIFFUSERS_BEST_COMPILE_S


# diffusers' best recipe compiles its whole SDXL UNet with coordinate-descent tuning: more than 7 minutes on an
# H200 (2026-12-03), so a section starts it only with this much of its budget left.
DIFFUSERS_BEST_COMPILE_S = 480


def section_sdxl_unet(s: Setup) -> list[dict]:
    readable, reference = paired_sdxl_unets(s)
    x, t, context, y, pooled, sizes = sdxl_inputs(s)
    added = {"text_embeds": pooled, "time_ids": sizes}
    with torch.no_grad():
        expected = readable(x, t, context, y)
        exact = exact_output(readable, lambda m: m(x.float(), t, context.float(), y.float()))
        flops = count_flops(lambda: readable(x, t, context, y))
    n = sdxl_latent(s)
    s.emit({"flops_per_forward": flops})

    def measure(impl: str, make: Callable[[], Callable[[], torch.Tensor]], first=contextlib.nullcontext) -> None:
        """make() builds the call (conversion, compilation: timed as setup with the first call, inside first())."""
        reset_peak(s.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            with first():
                call = make()
                out = call().clone()  # a CUDA-graph replay would overwrite the output in place
                sync(s.device)
            setup = time.perf_counter() - t0
            ms = median_ms(call, s.device, s.repeat)
        s.emit({"what": f"SDXL UNet, batch 2, {n}x{n} latent", "impl": impl, "ms": round(ms, 3),
                "it_s": round(1000 / ms, 2), "tflop_s": round(flops / ms / 1e9, 2), "setup_s": round(setup, 1),
                "peak_gb": peak_gb(s.device), **differences(out, expected, exact)})  # fmt: skip

    def diffusers_call(unet: Callable[..., object]) -> Callable[[], torch.Tensor]:
        return lambda: unet(x, t, context, added_cond_kwargs=added).sample

    def ours_call(unet: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
        return lambda: unet(x, t, context, y)

    options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    measure("ours readable", lambda: ours_call(readable))
    measure("ours fast", lambda: ours_call(fast_unet(readable, options)))  # readable's weights go channels_last
    if reference is not None:
        measure("diffusers eager", lambda: diffusers_call(reference))
        # last: fusing the projections changes diffusers' module in place
        if s.device.type != "cuda" or not s.out_of_time(diffusers_best_needs(s), "diffusers best's compile"):
            measure(diffusers_best_label(s), lambda: diffusers_call(diffusers_best(s)),
                    first=lambda: diffusers_inductor(s))  # fmt: skip
    return s.rows


def random_sdxl_checkpoint(s: Setup, unet: UNet, vae: VAE):
    """A Checkpoint of SDXL base shape around `unet` and `vae`: random CLIP-L and bigG towers, both tokenizers."""
    from atelier.models.checkpoint import Checkpoint
    from atelier.models.clip import SDXLTextEncoder
    from atelier.models.tokenizer import CLIPTokenizer

    cfg = sdxl_config(s)
    g_width = cfg.adm_in_channels - 6 * cfg.size_embed_dim
    clip_l = TextEncoderConfig.tiny() if s.tiny else TextEncoderConfig()
    clip_g = (
        TextEncoderConfig(width=8, layers=2, heads=1, mlp_width=16, activation="gelu", projection_dim=g_width)
        if s.tiny
        else TextEncoderConfig.open_clip_bigg()
    )
    if s.tiny:
        clip_l = dataclasses.replace(clip_l, width=cfg.context_dim - clip_g.width, heads=4)
    torch.manual_seed(1)
    with torch.device(s.device):  # random init on the device: bigG alone is 695 M parameters
        text = SDXLTextEncoder(clip_l, clip_g).to(s.dtype).eval().requires_grad_(False)
    tokenizers = (CLIPTokenizer.from_default(), CLIPTokenizer.from_default(pad_with_end=False))
    return Checkpoint(unet, vae, text, tokenizers, cfg, vae.config, clip_g, "sdxl", Path("random-sdxl"), s.dtype,
                      s.device, variant="SDXL base", clip_skip=2)  # fmt: skip


class DiffusersSDXLLoop:
    """StableDiffusionXLPipeline's denoising loop written out with diffusers' own UNet, scheduler and VAE, for a
    machine without `transformers` (which the pipeline class imports): the same calls, in the same order, as the
    pipeline's __call__ from precomputed embeddings (CFG as one batch of 2, add_time_ids from the size)."""

    def __init__(self, unet: nn.Module, vae: nn.Module, scheduler) -> None:
        self.unet, self.vae, self.scheduler = unet, vae, scheduler

    @torch.no_grad()
    def __call__(self, num_inference_steps: int, guidance_scale: float, height: int, width: int, prompt_embeds,
                 negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds):  # fmt: skip
        device, dtype = prompt_embeds.device, prompt_embeds.dtype
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (1, 4, height // 8, width // 8)
        latents = torch.randn(shape, device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        context = torch.cat([negative_prompt_embeds, prompt_embeds])  # (2, 77, 2048): [uncond; cond]
        time_ids = torch.tensor([[height, width, 0, 0, height, width]] * 2, device=device, dtype=dtype)
        added = {"text_embeds": torch.cat([negative_pooled_prompt_embeds, pooled_prompt_embeds]), "time_ids": time_ids}
        for t in self.scheduler.timesteps:
            model_in = self.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise = self.unet(model_in, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
            uncond, cond = noise.chunk(2)
            latents = self.scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
        image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        pixels = ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        from PIL import Image

        return dataclasses.make_dataclass("Output", ["images"])([Image.fromarray(a) for a in pixels])


def diffusers_sdxl_pipeline(s: Setup, reference_unet: nn.Module, reference_vae: nn.Module):
    """StableDiffusionXLPipeline on the same random UNet and VAE, without text encoders (embeddings are given);
    its loop written out (DiffusersSDXLLoop) where `transformers` is missing."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)  # SDXL's scheduler_config
    try:  # without transformers, diffusers gives a placeholder class that raises ImportError when built
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(
            vae=reference_vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
            unet=reference_unet, scheduler=scheduler, add_watermarker=False,
        )  # fmt: skip
    except (ImportError, RuntimeError) as error:  # RuntimeError: diffusers' lazy import of a missing pipeline
        if isinstance(error, RuntimeError) and "Failed to import" not in str(error):
            raise  # a CUDA error or out of memory, not a missing package
        print(f"transformers or the pipeline is missing: diffusers' SDXL rows run {DiffusersSDXLLoop.__name__}",
              file=sys.stderr)  # fmt: skip
        return DiffusersSDXLLoop(reference_unet, reference_vae, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def section_sdxl_txt2img(s: Setup) -> list[dict]:
    from models import _reference_vae

    from atelier.generation import GenerationParams, run

    steps, size = (3 if s.tiny else 30), sdxl_latent(s) * 8  # --tiny only checks that the section runs
    repeat = 1 if s.tiny else 3
    readable, reference = paired_sdxl_unets(s)
    vae_config = dataclasses.replace(s.vae_config, scaling_factor=0.13025)
    readable_vae, reference_vae = _paired(s, lambda: VAE(vae_config), lambda: _reference_vae(vae_config))

    def measure(impl: str, fn: Callable[[], object], first=contextlib.nullcontext) -> None:
        reset_peak(s.device)
        with first():
            first_s = wall_s(fn, s.device)  # includes compilation and capture
        seconds = statistics.median(wall_s(fn, s.device) for _ in range(repeat))
        s.emit({"what": f"SDXL txt2img {size}x{size}, {steps} steps, CFG 7.5", "impl": impl,
                "first_s": round(first_s, 2), "s": round(seconds, 3), "it_s": round(steps / seconds, 2),
                "peak_gb": peak_gb(s.device)})  # fmt: skip

    ckpt = random_sdxl_checkpoint(s, readable, readable_vae)
    params = GenerationParams(PROMPT, seed=1, steps=steps, cfg=7.5, width=size, height=size)
    measure("ours readable (from the prompt)", lambda: run(ckpt, params))
    fast_options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    fast = accelerate(ckpt, enabled=True, options=fast_options)
    measure("ours fast (from the prompt)", lambda: run(fast, params))
    if reference is not None:
        reference_vae.config.force_upcast = False  # the VAE in bf16/fp16 as ours (an fp16-safe VAE's setting)
        eager = reference
        if "sdxl_best" in s.memo:  # the shared reference is fused now: the eager rows get a plain UNet of their own
            from models import _reference_family_unet

            with torch.device(s.device):  # random weights (only the time is read), drawn on the device
                eager = _reference_family_unet(sdxl_config(s)).to(s.dtype).eval().requires_grad_(False)
        pipe = diffusers_sdxl_pipeline(s, eager, reference_vae)
        cfg = sdxl_config(s)
        g = torch.Generator(s.device).manual_seed(0)
        width = cfg.adm_in_channels - 6 * cfg.size_embed_dim
        embeds = {
            "prompt_embeds": torch.randn(1, 77, cfg.context_dim, device=s.device, dtype=s.dtype, generator=g),
            "negative_prompt_embeds": torch.zeros(1, 77, cfg.context_dim, device=s.device, dtype=s.dtype),
            "pooled_prompt_embeds": torch.randn(1, width, device=s.device, dtype=s.dtype, generator=g),
            "negative_pooled_prompt_embeds": torch.zeros(1, width, device=s.device, dtype=s.dtype),
        }

        def diffusers_run() -> object:
            return pipe(num_inference_steps=steps, guidance_scale=7.5, height=size, width=size, **embeds).images

        with torch.no_grad():
            measure("diffusers eager (from embeddings)", diffusers_run)
            del eager
            needed = 0 if "sdxl_best" in s.memo or s.device.type != "cuda" else diffusers_best_needs(s)
            if not s.out_of_time(needed, "diffusers best's compile"):
                pipe.unet = diffusers_best(s)
                measure(f"{diffusers_best_label(s)} (from embeddings)", diffusers_run,
                        first=lambda: diffusers_inductor(s))  # fmt: skip
        del pipe
    return s.rows


SECTIONS = {
    "unet": section_unet,
    "loop": section_loop,
    "vae": section_vae,
    "txt2img": section_txt2img,
    "first": section_first,
    "embedded": section_embedded,
    "quality": section_quality,
    "sweep": section_sweep,
    "start": section_start,
    "batching": section_batching,
    "profile": section_profile,
    "sdxl_unet": section_sdxl_unet,
    "sdxl_txt2img": section_sdxl_txt2img,
}
# Seconds each section may take by default (--budgets overrides); a section starts nothing it cannot finish.
BUDGETS = {
    "unet": 240,
    "loop": 60,
    "vae": 60,
    "txt2img": 150,
    "first": 150,
    "embedded": 60,
    "quality": 90,
    "sweep": 60,
    "start": 150,
    "batching": 90,
    "profile": 90,
    "sdxl_unet": 300,
    "sdxl_txt2img": 300,
}


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


_header_shown: list[str] = []  # the columns of the last header printed


def print_rows(rows: list[dict], header: bool) -> None:
    """Rows as a table; a header line is printed when asked or when a row brings other columns."""
    for row in rows:
        keys = list(row)
        if header or keys != _header_shown:
            print("  ".join(f"{k:>14}" for k in keys))
            _header_shown[:] = keys
            header = False
        print("  ".join(f"{_cell(row[k]):>14}" for k in keys), flush=True)


def _cell(value: object, width: int = 60) -> str:
    """A table cell: long values (per-image lists, kernel tables) cut short; the JSON keeps them whole."""
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def summary(result: dict) -> list[str]:
    """The run's headline figures, one line each, printed last (the end of the output is what a device call
    returns)."""
    lines = []
    for name, section in result["sections"].items():
        for row in section["rows"]:
            if "stopped" in row or "error" in row:
                lines.append(f"{name}: {_cell(row.get('variant', ''), 20)} {row.get('stopped') or row.get('error')}")
            elif name == "unet" and "it_s" in row:
                extra = f" vs emulated {row['rel_error_vs_emulated']}" if "rel_error_vs_emulated" in row else ""
                lines.append(
                    f"unet b2 {row['variant']:>14}: {row['it_s']:>7} it/s, rel err {row['rel_error_fp32']}{extra}"
                )
            elif "images_s" in row and "best_batch" not in row:
                what = f"{row.get('impl', row.get('model'))} b{row['batch']}"
                lines.append(f"{name} {what:>24}: {row['images_s']:>7} images/s ({row['s']} s)")
            elif "best_batch" in row:
                lines.append(f"sweep {row['model']}: best batch {row['best_batch']}, {row['best_images_s']} images/s")
            elif "pair" in row:
                lines.append(
                    f"quality {row['model']} {row['pair']:>18}: PSNR min {row['psnr_min']} mean "
                    f"{row['psnr_mean']} dB, max diff {row['max_diff']}"
                )
            elif "run" in row and "s" in row:
                flags = f" [{row['flags']}]" if row.get("flags") else ""
                phases = f"; load {row['load_s']} s, sampling {row['sample_s']} s" if "sample_s" in row else ""
                lines.append(
                    f"start {row['model']}{flags} {row['run']}: {row['s']} s (cache files {row['cache_files_before']}"
                    f" -> {row['cache_files_after']}{phases})"
                )
            elif "by_kind" in row:
                kinds = ", ".join(f"{k} {v['share']:.0%}" for k, v in list(row["by_kind"].items())[:6])
                lines.append(f"profile {row['precision']} b{row['batch']}: {row['ms']} ms; {kinds}")
    return lines


def environment(s: Setup) -> dict:
    env = {
        "device": str(s.device),
        "dtype": str(s.dtype),
        "torch": torch.__version__,
        "tiny": s.tiny,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if s.device.type == "cuda":
        env |= {
            "gpu": torch.cuda.get_device_name(s.device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    else:
        env["cpu"] = platform.processor() or platform.machine()
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        env["diffusers"] = None
    return env


def _budgets(text: str | None) -> dict[str, float]:
    budgets = dict(BUDGETS)
    for item in (text or "").split(","):
        if item:
            name, _, seconds = item.partition("=")
            budgets[name] = float(seconds)
    return budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: the best available)")
    parser.add_argument("--dtype", help="fp16 or bf16 on a GPU (default: bf16 where supported), fp32 on a CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: checks that the script runs")
    parser.add_argument("--compile-cache", type=Path, help="GPU: keep compiled kernels here for the next run "
                        "(default: a fresh folder; first-call times then include every compile)")  # fmt: skip
    parser.add_argument("--sections", default="unet,loop,vae,txt2img,embedded", help=f"from {','.join(SECTIONS)}")
    parser.add_argument("--variants", help=f"UNet rows, from {','.join(VARIANTS)}")
    parser.add_argument("--repeat", type=int, help="timed calls per measurement (default 50 on a GPU, 3 on a CPU)")
    parser.add_argument(
        "--json", type=Path, help="write the results here (after every section, and every row of the newer sections)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=float("inf"),
        help="seconds for the whole run: no section starts work it cannot finish in what is left",
    )
    parser.add_argument(
        "--budgets",
        help="seconds per section, e.g. unet=200,quality=60 (defaults: "
        + ",".join(f"{k}={v:g}" for k, v in BUDGETS.items())
        + ")",
    )
    parser.add_argument("--steps", type=int, default=20, help="txt2img, embedded and sweep: sampling steps")
    parser.add_argument(
        "--models",
        default="random,embedded",
        help="quality and sweep: random (SD1.5 sizes, random weights) and/or embedded",
    )
    parser.add_argument("--quality-steps", type=int, default=10, help="quality: sampling steps per image")
    parser.add_argument("--quality-images", type=int, default=16, help="quality: how many of the 16 prompts")
    parser.add_argument("--sweep-batches", help="sweep: batch sizes (default 1,2,4,8,16; 1,2,4 with --tiny)")
    parser.add_argument(
        "--sweep-compile",
        default="none",
        choices=["none", "blocks"],
        help="sweep: the fast path's compile mode (none: eager with CUDA graphs, no compile per batch)",
    )
    parser.add_argument("--start-steps", type=int, default=20, help="start: steps of the generated image")
    parser.add_argument(
        "--start-flags", default="",
        help="start: more `atelier generate` flags, e.g. '--precision fp8'; sets separated by ';' each get their own "
        "cold and warm start, e.g. ';--compile aot' (the default, then aot)",
    )
    parser.add_argument("--start-sd15", action="store_true", help="start: with --tiny, also the saved random model")
    parser.add_argument("--profile-batches", default="2,16", help="profile: UNet batch sizes")
    parser.add_argument("--profile-top", type=int, default=25, help="profile: kernels listed per call")
    parser.add_argument("--diffusers-compile-mode", default="max-autotune",
                        help="torch.compile mode of the 'diffusers best' SDXL rows (default: max-autotune, as "
                             "diffusers' guide; reduce-overhead or default compile faster)")  # fmt: skip
    parser.add_argument("--diffusers-inductor", choices=["guide", "default"], default="guide",
                        help="inductor flags of the 'diffusers best' rows: its guide's (coordinate-descent tuning: "
                             "minutes more of compile) or torch's defaults; the rows' names say which")  # fmt: skip
    parser.add_argument("--diffusers-best-s", type=float, default=DIFFUSERS_BEST_COMPILE_S,
                        help="seconds of budget a section needs left to start the 'diffusers best' compile "
                             f"(default {DIFFUSERS_BEST_COMPILE_S}; less with a warm --compile-cache)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.sweep_batches is None:
        args.sweep_batches = "1,2,4" if args.tiny else "1,2,4,8,16"
    device = pick_device(args.device)
    repeat = args.repeat or (50 if device.type == "cuda" else 3)
    s = Setup(device, pick_dtype(device, args.dtype), args.tiny, repeat, args=args,
              diffusers_compile_mode=args.diffusers_compile_mode)
    variants = (args.variants or (DEFAULT_VARIANTS if device.type == "cuda" else CPU_VARIANTS)).split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [x for x in args.sections.split(",") if x not in SECTIONS]
    if unknown:
        parser.error(f"unknown section or variant: {', '.join(unknown)}")
    budgets = _budgets(args.budgets)
    if device.type == "cuda":
        # One fresh compile cache for this run: a block compiled in one section is found on disk by the next
        # (another module instance is traced again, but its kernels are not rebuilt).
        from atelier.models.compile_cache import use_compile_cache

        # --compile-cache DIR keeps it for the next run (diffusers' SDXL compile, minutes, in a second call).
        use_compile_cache(device, args.compile_cache or Path(tempfile.mkdtemp(prefix="atelier-bench-compile-")))

    run_start = time.perf_counter()
    result = {"environment": environment(s), "arguments": vars(args) | {"budget": args.budget}, "sections": {}}
    result["arguments"] = {k: (str(v) if isinstance(v, Path | float) else v) for k, v in result["arguments"].items()}
    print(json.dumps(result["environment"]))
    if args.json:
        s.save = lambda: args.json.write_text(json.dumps(result, indent=1, default=str))
    if device.type != "cuda":
        print("No CUDA device: these are CPU figures; CUDA graphs are skipped and the GPU goals need a GPU.")
    for name in args.sections.split(","):
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        s.deadline = min(run_start + args.budget, t0 + budgets.get(name, float("inf")))
        s.rows = []
        entry = result["sections"][name] = {"budget_s": round(s.deadline - t0, 1), "rows": s.rows, "done": False}
        try:
            rows = SECTIONS[name](s, variants) if name == "unet" else SECTIONS[name](s)
        except Exception as error:  # one broken section must not lose the others' results
            import traceback

            traceback.print_exc()
            rows = [
                *s.rows,
                {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"},
            ]
        entry |= {"seconds": round(time.perf_counter() - t0, 1), "rows": rows, "done": True}
        s.save()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n== summary ==\n" + "\n".join(summary(result)))
    print(f"whole run: {time.perf_counter() - run_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
