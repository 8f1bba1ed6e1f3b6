"""FP8 (e4m3) matrix products for the UNet's projections: an opt-in precision of the fast path (`--precision fp8`).

Hopper (H100, H200) and Ada (RTX 40xx, L4, L40) GPUs multiply 8-bit floating-point matrices at twice their bf16
rate. An 8-bit float cannot hold a layer's values as they are, so each matrix is *scaled* into its range first and
the product is scaled back (Micikevicius et al. 2022, "FP8 Formats for Deep Learning"):

    e4m3: 1 sign bit, 4 exponent bits, 3 mantissa bits; largest finite value 448, about 2 significant digits
          (a relative rounding step of 2^-3 = 12.5% between neighbours, so a value lands within ~6% of itself)

    W (N, K) -> s_w = max|W| / 448,  W8 = round_e4m3(W / s_w)          once, when the model is converted
    x (M, K) -> s_x = max|x| / 448,  x8 = round_e4m3(x / s_x)          at every call ("dynamic" scaling)
    y = x W^T + b  ~=  (x8 W8^T) * s_x * s_w + b                        one torch._scaled_mm: fp8 operands,
                                                                        fp32 accumulation, bf16 output

Two granularities (`scaling`):
    "tensor"  one s_w per weight matrix, one s_x per activation: runs on every FP8 GPU (compute capability >= 8.9)
    "row"     one s_w per output row of W (N, 1) and one s_x per token of x (M, 1): an outlier row or pixel spoils
              only its own scale, so the error is smaller; cuBLAS/CUTLASS kernels for it need Hopper (sm_90)

Which layers: only the UNet's matrix products that are plain (M, K) x (K, N) products with K and N multiples of 16
(what the fp8 kernels need) and M large (one row per pixel or text token):
    - every nn.Linear inside a transformer block: attention q/k/v (fused or not) and output, GEGLU's projection
      (dim -> 2 x 4 dim) and the feed-forward output (4 dim -> dim): most of the UNet's linear-layer FLOPs;
    - the spatial transformers' proj_in / proj_out (1x1 convolutions in SD1.x, Linear layers in SD2/SDXL);
    - the ResBlocks' 1x1 shortcut convolutions.
    A 1x1 convolution on a channels_last map (B, C, h, w) is a Linear over its B*h*w pixels: the (B*h*w, C) view
    costs nothing. Left in bf16: the 3x3 convolutions (cuDNN offers no fp8 convolution through PyTorch; they are
    about half the UNet's FLOPs), the time-embedding layers (M = batch size: no speed to gain), the attention
    softmax(QK^T)V itself (SDPA's flash kernels), the norms and everything element-wise.

The readable UNet is never changed: `convert_to_fp8` swaps layers of the *fast* UNet (which shares the readable
one's weight tensors). The fp8 layers keep that bf16 `weight` (so `state_dict` is the readable module's, and a LoRA
that patches it in place is seen) and hold the quantised copy beside it in non-persistent buffers; `refresh` re-
quantises any layer whose weight changed since (tensor version counters, as the prompt cache in fast.py uses).

`emulate=True` computes the very same quantisation with ordinary matrix products in float32 (casting to
torch.float8_e4m3fn and back works on a CPU): the tests check the math with it, and the benchmark's CPU smoke run
uses it. It is slower than bf16, never faster.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448.0
SCALINGS = ("tensor", "row")
_TINY = 1e-12  # an all-zero tensor gets scale 1e-12 / 448 instead of a division by zero


def unavailable_reason(
    device: torch.device | str, scaling: str = "tensor", dtype: torch.dtype | None = None
) -> str | None:
    """None when `device` multiplies fp8 matrices natively for a model in `dtype`; else one sentence saying why
    not (the fallback's). The products answer in the model's dtype: _scaled_mm adds a bias only to a half-precision
    output, so an fp32 model (a small one on a GPU, atelier/device.py) keeps fp32."""
    device = torch.device(device)
    if device.type == "cuda" and dtype == torch.float32:
        return (
            "FP8 projections need a model in half precision; this one runs in fp32 (a model under 100 M parameters "
            "does on a GPU), so it keeps fp32. Name --dtype bf16 to use FP8."
        )
    if device.type != "cuda":
        return f"FP8 needs a CUDA GPU of compute capability 8.9 or newer; on {device.type} the model keeps its dtype."
    if not hasattr(torch, "_scaled_mm"):
        return f"FP8 needs torch._scaled_mm, which torch {torch.__version__} lacks; the model keeps its dtype."
    major, minor = torch.cuda.get_device_capability(device)
    needed = (9, 0) if scaling == "row" else (8, 9)
    if (major, minor) < needed:
        name = torch.cuda.get_device_name(device)
        return (
            f"FP8 {scaling}-wise scaling needs compute capability {needed[0]}.{needed[1]} or newer; {name} has "
            f"{major}.{minor}, so the model keeps its dtype."
        )
    return None


# --------------------------------------------------------------------------------------------------------------
# Quantisation: scale into e4m3's range, round, remember the scale
# --------------------------------------------------------------------------------------------------------------


def quantize(x: torch.Tensor, scaling: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (x8 (M, K) in e4m3, scale in float32) with x ~= x8 * scale.

    "tensor": one scale (a 0-dim tensor); "row": one scale per row, shape (M, 1). The scale maps the largest
    magnitude to 448, so nothing overflows and the small values keep as many bits as they can. Everything stays
    on the device (no .item()), so the dynamic scales work inside CUDA graphs and compiled code.
    """
    x = x.float()
    amax = x.abs().amax() if scaling == "tensor" else x.abs().amax(dim=-1, keepdim=True)
    scale = amax.clamp(min=_TINY) / E4M3_MAX
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def fp8_matmul(
    x8: torch.Tensor,
    x_scale: torch.Tensor,
    w8: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    emulate: bool = False,
    fast_accum: bool = False,
) -> torch.Tensor:
    """(x8 * x_scale) @ (w8 * w_scale)^T + bias, x8 (M, K), w8 (N, K) -> (M, N) in out_dtype.

    Natively: one torch._scaled_mm (cuBLASLt / CUTLASS fp8 GEMM; it wants A row-major and B column-major, which
    w8.t() of a row-major (N, K) weight is). Emulated: the same products of the rounded values in float32.
    Row-wise scales are x_scale (M, 1) and w_scale (N, 1), passed to _scaled_mm as (M, 1) and (1, N).
    """
    if emulate:
        out = (x8.float() * x_scale) @ (w8.float() * w_scale).t()
        return (out if bias is None else out + bias.float()).to(out_dtype)
    rowwise = x_scale.ndim == 2
    out = torch._scaled_mm(
        x8,
        w8.t(),
        scale_a=x_scale,
        scale_b=w_scale.t() if rowwise else w_scale,
        bias=None if rowwise else bias,  # not every torch takes a bias with row-wise scales: added below
        out_dtype=out_dtype,
        use_fast_accum=fast_accum,
    )
    return out + bias if rowwise and bias is not None else out


# --------------------------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------------------------


class FP8Linear(nn.Module):
    """A Linear (or a 1x1 convolution on channels_last maps) whose product runs in fp8; same weight, bias, keys.

    weight (N, K) or (N, K, 1, 1) and bias (N,) are the original layer's tensors (shared, not copied); weight8 (N, K)
    e4m3 and weight_scale (0-dim or (N, 1)) are the quantised copy, left out of state_dict.
    """

    def __init__(
        self, layer: nn.Linear | nn.Conv2d, scaling: str = "tensor", emulate: bool = False, fast_accum: bool = False
    ):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"FP8 scaling {scaling!r} is not known; expected one of {', '.join(SCALINGS)}.")
        self.conv = isinstance(layer, nn.Conv2d)
        self.weight, self.bias = layer.weight, layer.bias
        self.scaling, self.emulate, self.fast_accum = scaling, emulate, fast_accum
        self.out_features, self.in_features = layer.weight.shape[:2]
        self.register_buffer("weight8", torch.empty(0), persistent=False)
        self.register_buffer("weight_scale", torch.empty(0), persistent=False)
        self._version = -1
        self.refresh()

    def refresh(self) -> bool:
        """Quantise the weight again if it changed in place since the last time (a LoRA patch); True if it did.

        The new values are copied into the same buffers, so a recorded CUDA graph replays with them.
        """
        if self.weight._version == self._version and self.weight8.numel():
            return False
        with torch.no_grad():
            w8, scale = quantize(self.weight.reshape(self.out_features, self.in_features), self.scaling)
            if self.weight8.shape == w8.shape:
                self.weight8.copy_(w8)
                self.weight_scale.copy_(scale)
            else:
                self.weight8, self.weight_scale = w8, scale
        self._version = self.weight._version
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:  # (B, C, h, w) -> the pixels as rows (B*h*w, C); free when x is channels_last
            B, C, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(-1, C)
        else:  # (..., K) -> (M, K)
            rows = x.reshape(-1, self.in_features)
        x8, x_scale = quantize(rows, self.scaling)  # dynamic: this call's own scale
        w8, w_scale = self.weight8, self.weight_scale
        out = fp8_matmul(x8, x_scale, w8, w_scale, self.bias, x.dtype, self.emulate, self.fast_accum)
        if self.conv:  # (B*h*w, N) -> (B, N, h, w), channels_last in memory
            return out.view(B, h, w, self.out_features).permute(0, 3, 1, 2)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "conv1x1" if self.conv else "linear"
        return f"{kind}, in={self.in_features}, out={self.out_features}, scaling={self.scaling}, emulate={self.emulate}"


def reference_forward(layer: FP8Linear, x: torch.Tensor) -> torch.Tensor:
    """What `layer` approximates: the original layer in full precision (float32), for tests and benchmarks."""
    w, b = layer.weight.float(), None if layer.bias is None else layer.bias.float()
    return F.conv2d(x.float(), w, b) if layer.conv else F.linear(x.float(), w, b)


# --------------------------------------------------------------------------------------------------------------
# Converting a UNet
# --------------------------------------------------------------------------------------------------------------


def _fits(layer: nn.Module) -> bool:
    """A Linear, or a plain 1x1 convolution, whose sizes the fp8 kernels take (K and N multiples of 16)."""
    if isinstance(layer, nn.Conv2d):
        if (
            layer.kernel_size != (1, 1)
            or layer.stride != (1, 1)
            or layer.groups != 1
            or layer.padding not in (0, (0, 0))
        ):
            return False
    elif not isinstance(layer, nn.Linear):
        return False
    out_features, in_features = layer.weight.shape[:2]
    return in_features % 16 == 0 and out_features % 16 == 0


def _fp8_candidates(unet: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, layer) for every layer that goes to fp8 (see the module docstring for which and why)."""
    from atelier.models.attention import SpatialTransformer
    from atelier.models.unet import ResBlock

    found = []
    for module in unet.modules():
        if isinstance(module, SpatialTransformer):
            for parent in module.modules():
                for name, child in parent.named_children():
                    if _fits(child):
                        found.append((parent, name, child))
        elif isinstance(module, ResBlock) and module.conv_shortcut is not None and _fits(module.conv_shortcut):
            found.append((module, "conv_shortcut", module.conv_shortcut))
    return found


def convert_to_fp8(
    unet: nn.Module, scaling: str = "tensor", emulate: bool = False, fast_accum: bool = False
) -> list[FP8Linear]:
    """Swap `unet`'s projections (see the module docstring) for FP8Linear layers in place; returns the new layers.

    Meant for the fast UNet (fast.py); its weight tensors stay where they are, so the readable UNet that shares
    them computes exactly what it did. `fast_accum`: Hopper's faster fp8 accumulation (cuBLASLt's FAST_ACCUM,
    which keeps fewer bits in the running sums of long products): a speed option to measure, off by default.
    """
    layers = []
    for parent, name, layer in _fp8_candidates(unet):
        fp8 = FP8Linear(layer, scaling, emulate, fast_accum)
        setattr(parent, name, fp8)
        layers.append(fp8)
    return layers


def refresh(layers: list[FP8Linear]) -> int:
    """Re-quantise the layers whose weight changed in place (see FP8Linear.refresh); returns how many did."""
    return sum(layer.refresh() for layer in layers)
