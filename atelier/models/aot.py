"""The UNet compiled ahead of time (AOTInductor): a second start loads its kernels from disk in a fraction of a second.

`torch.compile` (fast.py's "blocks" and "full") compiles when the model is first called, and even with its caches
warm (compile_cache.py) every new process traces the Python again with Dynamo and reloads each kernel: about 30 s
on an H200 before the first image. Ahead-of-time compilation does that work once and keeps the result as a
package: `torch.export` captures the UNet's forward as one graph for one input signature (shapes, dtypes,
device), Inductor turns it into a shared library of kernels (`aoti_compile_and_package`), and a later process
only opens the file (`aoti_load_package`) and points it at the weights it already has.

The weights are not inside the package (`package_constants_in_so` off): the loaded model reads the UNet's own
parameter tensors (`load_constants(..., user_managed=True)`), so a package serves every checkpoint of the same
architecture, takes megabytes instead of gigabytes, and sees a LoRA merged into the weights in place. A package is
found by a key over everything that decides its code: the environment (compile_cache.environment_key: torch, GPU,
the fast path's source), the UNet's config, the fast options that change the graph, the weights' dtypes and
memory layouts, and the input signature. It is written to a temporary name and renamed, so a crash never leaves a
half-written package where a later start would read it.

    <compile cache root>/<environment key>/aoti/<signature key>.pt2
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atelier.models.compile_cache import default_root, environment_key

log = logging.getLogger(__name__)

# Weights stay out of the package, and none is written into the code either: Inductor would otherwise inline a
# 1-D tensor of at most 8 numbers (a small bias) as literals, which the next checkpoint could not replace.
_INDUCTOR = {"aot_inductor.package_constants_in_so": False, "always_keep_tensor_constants": True}

# The fast options that change the exported graph (the others act outside it: compile mode, graphs, caches).
_GRAPH_OPTIONS = ("fuse_projections", "channels_last", "attention", "precision", "emulate_fp8", "fp8_fast_accum")


def _tensor_signature(x: torch.Tensor) -> tuple:
    return (tuple(x.shape), tuple(x.stride()), str(x.dtype), x.device.type)


def model_description(unet: nn.Module) -> str:
    """What, besides the inputs, decides the exported code: config, graph-changing options, weights' dtypes and
    convolution weights' memory layouts (channels_last or not)."""
    options = getattr(unet, "options", None)
    weights = {str(p.dtype) for p in unet.parameters()} | {
        f"{tuple(p.shape)}:{tuple(p.stride())}" for p in unet.parameters() if p.ndim == 4
    }
    described = {
        "config": dataclasses.asdict(unet.config),
        "options": {name: getattr(options, name, None) for name in _GRAPH_OPTIONS},
        "weights": sorted(weights),
    }
    return json.dumps(described, sort_keys=True, default=str)


def package_key(model: str, inputs: tuple[torch.Tensor, ...]) -> str:
    """24 hex digits naming the package of the model described by `model` (`model_description`) called on
    `inputs` (their shapes, strides, dtypes and device type; the environment names the folder)."""
    text = json.dumps([model, [_tensor_signature(x) for x in inputs]], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class _Forward(nn.Module):
    """What is exported: the UNet's readable forward (its fast modules inside), without the fast path's dispatch."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *y: torch.Tensor) -> torch.Tensor:
        return self.unet._readable_forward(x, t, context, *y)


class AOTNetwork:
    """Calls `unet`'s forward through AOTInductor packages, one per input signature, compiled on first use and
    kept on disk under `root` (default: the compile cache's root, compile_cache.default_root)."""

    def __init__(self, unet: nn.Module, root: Path | None = None) -> None:
        self._forward = _Forward(unet)
        self.root = root
        self._loaded: dict[tuple, tuple[Any, int]] = {}  # input signature -> (package, data_ptr of the bound weights)
        self.compiled = 0  # packages this object compiled (the others came from disk)

    def folder(self, device: torch.device) -> Path:
        return (self.root or default_root()) / environment_key(device) / "aoti"

    def forget(self) -> None:
        """Drop the loaded packages (after the UNet's modules were replaced, e.g. by fp8's conversion)."""
        self._loaded.clear()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *y: torch.Tensor) -> torch.Tensor:
        inputs = (x, t, context, *y)
        signature = (*(_tensor_signature(a) for a in inputs), x.device.index)
        if signature not in self._loaded:  # described again: a dtype or layout may have changed since
            described = model_description(self._forward.unet)
            self._loaded[signature] = (self._open(package_key(described, inputs), inputs), 0)
        model, bound = self._loaded[signature]
        if model is None:  # this signature could not be compiled ahead of time: the readable forward
            return self._forward(*inputs)
        constants = self._constants()
        anchor = hash(tuple(c.data_ptr() for c in constants.values()))
        # First call, or tensors replaced (a .to(), a new state dict): point the kernels there. Only calls that reach
        # here see it: a CUDA graph replays the addresses it captured, with or without aot (graphs.py).
        if bound != anchor:
            model.load_constants({name: constants[name] for name in model.get_constant_fqns()},
                                 check_full_update=True, user_managed=True)  # fmt: skip
            self._loaded[signature] = (model, anchor)
        return model(*inputs)

    def _constants(self) -> dict[str, torch.Tensor]:
        return dict(self._forward.named_parameters()) | dict(self._forward.named_buffers())

    def _open(self, key: str, inputs: tuple[torch.Tensor, ...]) -> Any:
        """The loaded package for `key`, compiled first when it is not on disk; None when it cannot be made (the
        reason is logged once and the readable forward serves that signature)."""
        device = inputs[0].device
        path = self.folder(device) / f"{key}.pt2"
        index = device.index if device.index is not None else -1
        if device.type == "cuda" and index < 0:
            index = torch.cuda.current_device()
        for attempt in (1, 2):
            found = path.is_file()
            try:
                if not found:
                    self._compile(path, inputs)
                # run_single_threaded: no locking around the call, so that a CUDA graph can capture it (graphs.py).
                model = torch._inductor.aoti_load_package(str(path), run_single_threaded=True, device_index=index)
                baked = set(self._constants()) - set(model.get_constant_fqns())
                if baked:  # values written into the code would be another checkpoint's
                    raise RuntimeError(f"the package holds {len(baked)} tensors as code, e.g. {sorted(baked)[0]}")
                return model
            except Exception as error:  # an export the graph does not allow, a package that does not load
                path.unlink(missing_ok=True)  # never read again
                if attempt == 1 and found:
                    log.warning("the package %s does not load (%s); compiling it again", path, error)
                    continue
                log.warning("the UNet cannot be compiled ahead of time for %s (%s: %s); it runs eagerly",
                            [tuple(x.shape) for x in inputs], type(error).__name__, error)  # fmt: skip
                return None
        return None

    def _compile(self, path: Path, inputs: tuple[torch.Tensor, ...]) -> None:
        log.info("compiling the UNet ahead of time for %s (once; later starts read %s)",
                 [tuple(x.shape) for x in inputs], path)  # fmt: skip
        with torch.no_grad():
            program = torch.export.export(self._forward, inputs, strict=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".pt2")
        os.close(handle)
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=temporary, inductor_configs=_INDUCTOR)
            os.replace(temporary, path)  # whole or not at all
        finally:
            Path(temporary).unlink(missing_ok=True)
        self.compiled += 1
