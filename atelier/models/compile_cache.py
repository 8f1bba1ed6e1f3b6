"""Compiled kernels kept on disk: the second start of `atelier generate` or `atelier serve` compiles nothing again.

`torch.compile` turns the fast path's blocks into generated kernels (fast.py): Dynamo traces the Python into FX
graphs, AOTAutograd and Inductor lower them, Triton (GPU) or a C++ compiler (CPU) builds the kernels, and the
autotuner times candidate configurations. On an H200 that first image costs about 50 s, every time a command starts,
unless the results are kept. PyTorch can keep them: Inductor's FX-graph cache and AOTAutograd's cache write each
compiled graph under TORCHINDUCTOR_CACHE_DIR, keyed by the graph itself (its operations, shapes, dtypes, strides and
the compiler's settings), and Triton keeps its binaries and autotuning results under TRITON_CACHE_DIR. A warm start
still traces with Dynamo (seconds), then finds every kernel on disk.

What those keys do not cover is the machine around them, so the folder is Atelier's own choice, one per
environment (`environment_key`): the torch, CUDA, cuDNN and Triton versions, the GPU's name and compute capability
(or the CPU's), Python's version and the source of Atelier's fast path. A new torch, another GPU or a changed fast.py
gets a fresh folder and never reads an artefact built for something else; another model shape is a different graph,
which Inductor's own key separates inside one folder.

    ~/.cache/atelier/compile/<environment key>/inductor/   FX graphs, AOTAutograd entries, generated code
                                              /triton/     kernel binaries and autotuning choices

The root is $ATELIER_COMPILE_CACHE, else $XDG_CACHE_HOME/atelier/compile, else ~/.cache/atelier/compile.
Variables a user set themselves (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) are left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import torch

# What compiled code traces.
_FAST_SOURCES = ("fast.py", "aot.py", "fp8.py", "attention.py", "unet.py", "vae.py", "clip.py", "layers.py")


def default_root() -> Path:
    if os.environ.get("ATELIER_COMPILE_CACHE"):
        return Path(os.environ["ATELIER_COMPILE_CACHE"])
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "atelier" / "compile"


def environment(device: torch.device) -> dict[str, str]:
    """Everything outside a graph that decides what its compiled kernels are (see the module's docstring)."""
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "fast_path": _sources_digest(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = "none"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        env.update(
            device=torch.cuda.get_device_name(index),
            capability=f"{major}.{minor}",
            cuda=str(torch.version.cuda),
            cudnn=str(torch.backends.cudnn.version()),
        )
    else:
        env["device"] = f"{device.type}:{platform.processor() or platform.machine()}"
    return env


def environment_key(device: torch.device) -> str:
    """A short name for the environment: 16 hex digits of the SHA-256 of `environment(device)`."""
    text = json.dumps(environment(device), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sources_digest() -> str:
    models = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _FAST_SOURCES:
        digest.update(name.encode() + b"\0" + (models / name).read_bytes())
    return digest.hexdigest()[:16]


def use_compile_cache(device: torch.device, root: Path | None = None) -> Path:
    """Point Inductor and Triton at this environment's folder under `root` and switch their caches on; returns
    the folder. Call it before the first compile (Inductor reads the variables when it first writes)."""
    folder = (root or default_root()) / environment_key(device)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "environment.json").write_text(json.dumps(environment(device), indent=1, sort_keys=True) + "\n")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    import torch._functorch.config as functorch
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    if hasattr(inductor, "autotune_local_cache"):
        inductor.autotune_local_cache = True

    if hasattr(functorch, "enable_autograd_cache"):
        functorch.enable_autograd_cache = True
    return folder
