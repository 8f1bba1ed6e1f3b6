"""Device and dtype choice: cuda, then mps, then cpu; fp32 on the CPU and for small models on CUDA, else half."""

from __future__ import annotations

import contextlib

import torch

from atelier.errors import InputError

# Where a network is built before its weights arrive. The meta device allocates nothing and skips the random init
# (an SD1.5 UNet would spend ~8 s drawing weights it then throws away), but its first use imports torch._dynamo:
# about a second on a CPU, a third of a CLI run on the embedded model. Small networks are built normally.
META_DEVICE_ABOVE = 50_000_000  # parameters


def building(parameters: int) -> contextlib.AbstractContextManager:
    """The context to build a module of `parameters` weights in: the meta device above META_DEVICE_ABOVE, else none
    (the caller then replaces every tensor with `load_state_dict(..., assign=True)`)."""
    return torch.device("meta") if parameters > META_DEVICE_ABOVE else contextlib.nullcontext()


def pick_device(name: str | None = None) -> torch.device:
    """The device named by the user ("cuda", "cuda:1", "mps", "cpu"), or the best one available."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"Device {name!r} is not a device name; expected cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {name!r} was asked for but this machine has no CUDA GPU; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"Device {name!r} was asked for but MPS is not available here; use --device cpu.")
    return device


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# A UNet this small (the embedded one: 13.8 M parameters) is launch-bound on a GPU, so half precision buys
# no speed there, and it is chaotic under rounding: in bf16 a seed's image merged into a classroom batch ended as
# another drawing (PSNR 14.1 dB against the same job alone, one H200, 2026-12-04), where fp32 (with PyTorch's
# default TF32 convolutions) kept every one within 5/255 (>= 58.5 dB). docs/benchmarks/gpu-h200-embedded-*.json.
SMALL_UNET_PARAMETERS = 100_000_000  # fast.py's compile choice uses the same line


def pick_dtype(device: torch.device, name: str | None = None, unet_parameters: int | None = None) -> torch.dtype:
    """fp32 on the CPU (half precision is slow there), half precision on CUDA and MPS, unless the user names one.

    `unet_parameters`, the model's UNet size when known: under SMALL_UNET_PARAMETERS a CUDA model stays in fp32.
    """
    if name is not None and name != "auto":
        if name not in _DTYPES:
            raise InputError(f"Dtype {name!r} is not supported; expected one of {', '.join(_DTYPES)}.")
        return _DTYPES[name]
    if device.type == "cuda" and unet_parameters is not None and unet_parameters < SMALL_UNET_PARAMETERS:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
