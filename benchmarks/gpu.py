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
import dataclasses
import gc
import json
import os
import platform
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
}
DEFAULT_VARIANTS = (
    "diffusers,readable,fused,fused+cl,fused+cl+flash,fused+cl+cudnn,graphs,blocks,blocks+graphs,full+graphs"
)
CPU_VARIANTS = "diffusers,readable,fused,fused+cl"  # no graphs on a CPU, and compiling there takes minutes
PROMPT = "a red house under a yellow sun"


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
    rows = []
    for name in variants:
        if name.startswith("diffusers") and reference is None:
            rows.append({"variant": name, "skipped": "diffusers is not installed"})
            continue
        if "graphs" in name and s.device.type != "cuda":
            rows.append({"variant": name, "skipped": "CUDA graphs need a CUDA GPU"})
            continue
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
        with torch.no_grad():
            out = model(x, t, context)  # conversion, compilation and capture happen here
            sync(s.device)
            setup = time.perf_counter() - t0
            ms = median_ms(lambda m=model: m(x, t, context), s.device, s.repeat)
        rows.append(
            {
                "variant": name,
                "ms": round(ms, 3),
                "it_s": round(1000 / ms, 1),
                "tflop_s": round(flops / ms / 1e9, 2),
                "setup_s": round(setup, 1),
                "peak_gb": peak_gb(s.device),
                **differences(out, expected, exact),
            }
        )
        print_rows(rows[-1:], header=len(rows) == 1)
        del model
    return [{"flops_per_forward": flops}, *rows]


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


def random_checkpoint(s: Setup):
    """A Checkpoint of random SD1.5-sized (or tiny) modules with the SD1.x tokenizer."""
    from atelier.models.checkpoint import Checkpoint
    from atelier.models.clip import CLIPTextEncoder
    from atelier.models.tokenizer import CLIPTokenizer

    torch.manual_seed(0)
    modules = [UNet(s.unet_config), VAE(s.vae_config), CLIPTextEncoder(s.text_config)]
    unet, vae, text = (m.to(s.device, s.dtype).eval().requires_grad_(False) for m in modules)
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
        s.dtype,
        s.device,
    )


def _txt2img_rows(s: Setup, ckpt, label: str, size: int, batches: tuple[int, ...], header: bool) -> list[dict]:
    from atelier.generation import GenerationParams, run

    rows = []
    for batch in batches:
        params = GenerationParams(PROMPT, seed=1, steps=20, cfg=7.5, width=size, height=size, batch=batch)
        reset_peak(s.device)
        first = wall_s(lambda p=params: run(ckpt, p), s.device)  # includes compilation and capture
        repeat = 3 if batch == 1 else 1
        seconds = statistics.median(wall_s(lambda p=params: run(ckpt, p), s.device) for _ in range(repeat))
        row = {"what": f"txt2img {size}x{size}, 20 steps, CFG 7.5", "impl": label, "batch": batch}
        rows.append(row | {"first_s": round(first, 2), "s": round(seconds, 3), "peak_gb": peak_gb(s.device)})
        print_rows(rows[-1:], header=header and len(rows) == 1)
    return rows


def section_txt2img(s: Setup) -> list[dict]:
    ckpt = random_checkpoint(s)
    size = s.latent * 8
    rows = _txt2img_rows(s, ckpt, "readable", size, (1,), header=True)
    fast_options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    rows += _txt2img_rows(s, accelerate(ckpt, enabled=True, options=fast_options), "fast", size, (1, 8), False)
    return rows


def section_embedded(s: Setup) -> list[dict]:
    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.library import embedded_model_path, native_size

    path = embedded_model_path()
    size = native_size(path)
    ckpt = load_checkpoint(path, device=s.device, dtype=s.dtype)
    rows = _txt2img_rows(s, ckpt, "readable", size, (1,), header=True)
    fast_options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    rows += _txt2img_rows(s, accelerate(ckpt, enabled=True, options=fast_options), "fast", size, (1,), False)
    return [r | {"model": "embedded"} for r in rows]


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
            command = [
                sys.executable,
                "-m",
                "atelier.cli",
                "generate",
                PROMPT,
                "--model",
                str(path),
                "--seed",
                "1",
                "--steps",
                "20",
                "--out",
                folder,
                "--device",
                str(s.device),
                *extra,
            ]
            # A fresh compiler cache, so that "fast" pays its whole compilation as a first run on a machine does.
            env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(dir=folder), "PYTHONUNBUFFERED": "1"}
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
            seconds = time.perf_counter() - t0
            row = {"what": "atelier generate, start to PNG", "impl": label, "s": round(seconds, 1)}
            if done.returncode != 0:
                row["error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else str(done.returncode)
            rows.append(row)
            print_rows(rows[-1:], header=len(rows) == 1)
    return rows


# --------------------------------------------------------------------------------------------------------------
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
    from models import _reference_family_unet

    cfg = sdxl_config(s)
    return _paired(s, lambda: UNet(cfg), lambda: _reference_family_unet(cfg))


def diffusers_best(reference: nn.Module, s: Setup) -> Callable[..., torch.Tensor]:
    """diffusers' recipe for a fast SDXL UNet (its "Speed up inference" guide): fused QKV projections,
    channels_last, and torch.compile of the whole UNet (fullgraph, with the guide's inductor settings). Those
    settings are global and compilation is lazy, so they stay on for the rest of the process: sections after this
    one compile with them too (ours fast in sdxl_txt2img included)."""
    import torch._inductor.config as inductor

    inductor.conv_1x1_as_mm = True
    inductor.coordinate_descent_tuning = True
    inductor.epilogue_fusion = False
    inductor.coordinate_descent_check_all_directions = True
    reference.fuse_qkv_projections()
    reference.to(memory_format=torch.channels_last)
    if s.device.type != "cuda":
        return reference  # no compilation on a CPU (minutes of C++ builds); the rows say so
    return torch.compile(reference, mode=s.diffusers_compile_mode, fullgraph=True)


def section_sdxl_unet(s: Setup) -> list[dict]:
    readable, reference = paired_sdxl_unets(s)
    x, t, context, y, pooled, sizes = sdxl_inputs(s)
    added = {"text_embeds": pooled, "time_ids": sizes}
    with torch.no_grad():
        expected = readable(x, t, context, y)
        exact = exact_output(readable, lambda m: m(x.float(), t, context.float(), y.float()))
        flops = count_flops(lambda: readable(x, t, context, y))
    n = sdxl_latent(s)
    rows = []

    def measure(impl: str, make: Callable[[], Callable[[], torch.Tensor]]) -> None:
        """make() builds the call (conversion, compilation: timed as setup with the first call)."""
        reset_peak(s.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            call = make()
            out = call()
            sync(s.device)
            setup = time.perf_counter() - t0
            ms = median_ms(call, s.device, s.repeat)
        rows.append({"what": f"SDXL UNet, batch 2, {n}x{n} latent", "impl": impl, "ms": round(ms, 3),
                     "it_s": round(1000 / ms, 2), "tflop_s": round(flops / ms / 1e9, 2), "setup_s": round(setup, 1),
                     "peak_gb": peak_gb(s.device), **differences(out, expected, exact)})  # fmt: skip
        print_rows(rows[-1:], header=len(rows) == 1)

    def diffusers_call(unet: Callable[..., object]) -> Callable[[], torch.Tensor]:
        return lambda: unet(x, t, context, added_cond_kwargs=added).sample

    def ours_call(unet: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
        return lambda: unet(x, t, context, y)

    options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    if reference is not None:
        measure("diffusers eager", lambda: diffusers_call(reference))
    measure("ours readable", lambda: ours_call(readable))
    measure("ours fast", lambda: ours_call(fast_unet(readable, options)))  # readable's weights go channels_last
    best = "diffusers best" if s.device.type == "cuda" else "diffusers fused+cl (no compile on a CPU)"
    if reference is not None:  # last: fusing the projections changes diffusers' module in place
        measure(best, lambda: diffusers_call(diffusers_best(reference, s)))
    return [{"flops_per_forward": flops}, *rows]


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


def diffusers_sdxl_pipeline(s: Setup, reference_unet: nn.Module, reference_vae: nn.Module):
    """StableDiffusionXLPipeline on the same random UNet and VAE, without text encoders (embeddings are given)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)  # SDXL's scheduler_config
    pipe = StableDiffusionXLPipeline(
        vae=reference_vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
        unet=reference_unet, scheduler=scheduler, add_watermarker=False,
    )  # fmt: skip
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
    rows = []

    def measure(impl: str, fn: Callable[[], object]) -> None:
        reset_peak(s.device)
        first = wall_s(fn, s.device)  # includes compilation and capture
        seconds = statistics.median(wall_s(fn, s.device) for _ in range(repeat))
        rows.append({"what": f"SDXL txt2img {size}x{size}, {steps} steps, CFG 7.5", "impl": impl,
                     "first_s": round(first, 2), "s": round(seconds, 3), "it_s": round(steps / seconds, 2),
                     "peak_gb": peak_gb(s.device)})  # fmt: skip
        print_rows(rows[-1:], header=len(rows) == 1)

    if reference is not None:
        reference_vae.config.force_upcast = False  # the VAE in bf16/fp16 as ours (an fp16-safe VAE's setting)
        pipe = diffusers_sdxl_pipeline(s, reference, reference_vae)
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
            pipe.unet = diffusers_best(reference, s)
            best = "diffusers best" if s.device.type == "cuda" else "diffusers fused+cl (no compile on a CPU)"
            measure(f"{best} (from embeddings)", diffusers_run)
        del pipe

    ckpt = random_sdxl_checkpoint(s, readable, readable_vae)
    params = GenerationParams(PROMPT, seed=1, steps=steps, cfg=7.5, width=size, height=size)
    measure("ours readable (from the prompt)", lambda: run(ckpt, params))
    fast_options = FastOptions() if s.device.type == "cuda" else FastOptions.eager()
    fast = accelerate(ckpt, enabled=True, options=fast_options)
    measure("ours fast (from the prompt)", lambda: run(fast, params))
    return rows


SECTIONS = {
    "unet": section_unet,
    "loop": section_loop,
    "vae": section_vae,
    "txt2img": section_txt2img,
    "first": section_first,
    "embedded": section_embedded,
    "sdxl_unet": section_sdxl_unet,
    "sdxl_txt2img": section_sdxl_txt2img,
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
        print("  ".join(f"{row[k]!s:>14}" for k in keys), flush=True)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: the best available)")
    parser.add_argument("--dtype", help="fp16 or bf16 on a GPU (default: bf16 where supported), fp32 on a CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: checks that the script runs")
    parser.add_argument("--sections", default="unet,loop,vae,txt2img,embedded", help=f"from {','.join(SECTIONS)}")
    parser.add_argument("--variants", help=f"UNet rows, from {','.join(VARIANTS)}")
    parser.add_argument("--repeat", type=int, help="timed calls per measurement (default 50 on a GPU, 3 on a CPU)")
    parser.add_argument("--json", type=Path, help="write the results here (after every section)")
    parser.add_argument("--diffusers-compile-mode", default="max-autotune",
                        help="torch.compile mode of the 'diffusers best' SDXL rows (default: max-autotune, as "
                             "diffusers' guide; reduce-overhead or default compile faster)")  # fmt: skip
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    repeat = args.repeat or (50 if device.type == "cuda" else 3)
    s = Setup(device, pick_dtype(device, args.dtype), args.tiny, repeat, args.diffusers_compile_mode)
    variants = (args.variants or (DEFAULT_VARIANTS if device.type == "cuda" else CPU_VARIANTS)).split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [x for x in args.sections.split(",") if x not in SECTIONS]
    if unknown:
        parser.error(f"unknown section or variant: {', '.join(unknown)}")

    result = {"environment": environment(s), "sections": {}}
    print(json.dumps(result["environment"]))
    if device.type != "cuda":
        print("No CUDA device: these are CPU figures; CUDA graphs are skipped and the GPU goals need a GPU.")
    for name in args.sections.split(","):
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        rows = SECTIONS[name](s, variants) if name == "unet" else SECTIONS[name](s)
        result["sections"][name] = {"seconds": round(time.perf_counter() - t0, 1), "rows": rows}
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
