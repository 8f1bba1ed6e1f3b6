"""The fast path: the same networks and weights as the readable modules, computed faster on a GPU.

The readable modules (unet.py, attention.py, vae.py, clip.py) document what Stable Diffusion computes. This file
changes only how it is computed, never what; each trick can be switched off on its own (`FastOptions`):

    trick               what it saves                                                      option
    fused projections   one matrix product for q, k, v (self-attention) and one for k, v   fuse_projections
                        (cross-attention), instead of three or two: fewer launches and
                        the input read once
    channels_last       activations stored (B, h, w, C): cuDNN's tensor-core convolutions  channels_last
                        need no layout transposes, and a feature map's token view
                        (B, h*w, C) costs nothing
    attention kernel    which fused softmax(QK^T/sqrt(d))V kernel SDPA uses: flash         attention
                        (Dao 2023, FlashAttention-2) or cuDNN's; the (N, N) matrix is
                        never stored either way
    torch.compile       GroupNorm + SiLU, GEGLU's gate, LayerNorms and residual adds       compile
                        fused into generated kernels (Ansel et al. 2024, "PyTorch 2");
                        "blocks" compiles each ResBlock and transformer separately
                        (quick to compile), "full" the whole forward (more fusion,
                        slower to compile), "max-autotune" also benchmarks GEMM kernels;
                        "auto" (the commands' default) none for a small, launch-bound
                        UNet (the embedded model), "blocks" otherwise; "aot" compiles
                        the UNet ahead of time into a package on disk that the next
                        start loads at once (aot.py; the VAE then stays eager)
    CUDA graphs         the whole UNet call replayed as one recorded graph, with no        cuda_graphs
                        per-kernel launch cost on the host (sampling/graphs.py)
    FP8 (opt-in)        the transformer blocks' Linear layers and the 1x1 convolutions as  precision
                        e4m3 matrix products with per-tensor or per-row scales, twice
                        bf16's matmul rate on Hopper and Ada (fp8.py); changes results
                        by more than rounding, so never a default
    prompt cache        the same token ids are encoded once                                cache_prompts
    compile cache       compiled kernels kept on disk, one folder per torch/GPU/fast-path  (with compile)
                        version, so a second start compiles nothing (compile_cache.py)

Batched classifier-free guidance (cond and uncond as one batch of 2B) is already what the readable path does
(sampling/guidance.py).

Every fast module subclasses its readable one: same config, same call, same `state_dict` keys and shapes
(diffusers' names) and same outputs up to float rounding. `accelerate(ckpt)` converts a loaded checkpoint without
copying its weights; tests/models/test_fast.py compares both paths.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from atelier import device as devices
from atelier.errors import InputError
from atelier.models import fp8
from atelier.models.aot import AOTNetwork
from atelier.models.attention import Attention, SpatialTransformer, TransformerBlock
from atelier.models.clip import CLIPTextEncoder
from atelier.models.compile_cache import use_compile_cache
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.fast_choices import COMPILE_MODES, PRECISIONS
from atelier.models.layers import multi_head_attention
from atelier.models.unet import ControlResiduals, ResBlock, UNet
from atelier.models.vae import VAE, ResnetBlock, SpatialSelfAttention
from atelier.sampling.graphs import GraphedCall

if TYPE_CHECKING:
    from atelier.models.checkpoint import Checkpoint

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------------------

# SDPA backends in the order tried: the named one first, then the ones that cover what it cannot (flash and cuDNN
# stop at head width 256; the VAE's single attention head is 512 wide).
_ATTENTION = {
    "auto": None,  # PyTorch's own order
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "math": [SDPBackend.MATH],
}


@dataclasses.dataclass(frozen=True)
class FastOptions:
    """Which speed-ups the fast modules use. The defaults are the fast path `accelerate` switches on for CUDA."""

    fuse_projections: bool = True
    channels_last: bool = True
    attention: str = "auto"  # "auto", "flash", "cudnn", "efficient" or "math"
    compile: str = "blocks"  # "none", "blocks", "full", "max-autotune", "aot", or "auto" (resolve_compile picks)
    cuda_graphs: bool = True  # UNet only: the VAE runs once per image, where capturing would not pay
    cache_prompts: bool = True
    precision: str = "native"  # "native", "fp8" or "fp8-row": the UNet's projections (fp8.py); opt-in
    emulate_fp8: bool = False  # fp8's rounding computed in float32 (CPUs, tests): the same math, never faster
    fp8_fast_accum: bool = False  # Hopper's fast fp8 accumulation (fewer bits in the running sums), fp8.py

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"Precision {self.precision!r} is not known; expected one of {', '.join(PRECISIONS)}.")
        if self.attention not in _ATTENTION:
            raise InputError(
                f"Attention kernel {self.attention!r} is not known; expected one of {', '.join(_ATTENTION)}."
            )
        if self.compile not in COMPILE_MODES:
            raise InputError(f"Compile mode {self.compile!r} is not known; expected one of {', '.join(COMPILE_MODES)}.")

    def for_unet(self, unet: nn.Module) -> FastOptions:
        """These options with compile "auto" made concrete for `unet` (`resolve_compile`); others unchanged."""
        if self.compile != "auto":
            return self
        return dataclasses.replace(self, compile=resolve_compile(unet))

    @classmethod
    def eager(cls) -> FastOptions:
        """Only the module-level changes (fused projections, channels_last): no compiler, no graphs."""
        return cls(compile="none", cuda_graphs=False)


# Below devices.SMALL_UNET_PARAMETERS a model is bound by kernel launches, not by arithmetic: CUDA graphs alone remove
# the launches, and compiling saves little while its first call waits a minute. On an H200 the embedded model's
# UNet (13.8 M parameters) made 26.1 images/s at batch 1 with CUDA graphs and no compile (benchmarks/gpu.py sweep,
# docs/benchmarks/gpu-h200.json), as fast as compiled per block on an H100 (27); SD1.5's UNet (860 M) gains 1.5x
# from compiling (101.8 -> 149.6 it/s at batch 2), SDXL's (2.6 G) more. The same line keeps a small UNet in fp32
# on a GPU (device.py).
def resolve_compile(unet: nn.Module) -> str:
    """What compile "auto" means for `unet`: "none" (CUDA graphs only) for a small one, "blocks" otherwise."""
    parameters = sum(p.numel() for p in unet.parameters())
    return "none" if parameters < devices.SMALL_UNET_PARAMETERS else "blocks"


# Dynamo keeps at most 8 compiled versions of one function by default; the SD1.5 UNet has ~14 differently shaped
# ResBlocks, each needing its own when compiled per block.
def _room_for_block_compiles() -> contextlib.AbstractContextManager:
    """Dynamo's per-function recompile limit raised to 128 (its name changed in torch 2.6). Imported here, not at
    the top: torch._dynamo takes about a second to import, which a start that compiles nothing should not pay."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: 128})


@contextlib.contextmanager
def kernel_choices(options: FastOptions) -> Iterator[None]:
    """While active: the chosen SDPA kernel, cuDNN autotuning of convolutions, room for per-block compiles.

    Everything is restored on exit; nothing global stays changed.
    """
    with contextlib.ExitStack() as stack:
        backends = _ATTENTION[options.attention]
        if backends is not None:
            stack.enter_context(sdpa_kernel(backends, set_priority=True))
        if options.compile != "none":
            stack.enter_context(_room_for_block_compiles())
        autotune = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # time a few convolution algorithms per shape, keep the fastest
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = autotune


def _compile(fn: Callable, options: FastOptions) -> Callable:
    """torch.compile for one shape at a time (a new shape compiles again rather than going dynamic)."""
    mode = "max-autotune-no-cudagraphs" if options.compile == "max-autotune" else None
    return torch.compile(fn, dynamic=False, mode=mode)


def _compile_blocks(model: nn.Module, kinds: tuple[type, ...], options: FastOptions) -> None:
    """Regional compilation: each block of the given kinds gets its own compiled forward (blocks of the same
    shape share one compilation); the glue between blocks stays eager. Not with "aot", which compiles the UNet's
    whole forward ahead of time (and leaves the VAE eager)."""
    if options.compile in ("none", "aot"):
        return
    for module in model.modules():
        if isinstance(module, kinds):
            module.compile(dynamic=False)


# --------------------------------------------------------------------------------------------------------------
# Fused projections that save and load as the separate ones
# --------------------------------------------------------------------------------------------------------------


def _stack_on_load(module: nn.Module, fused: str, parts: tuple[str, ...], kinds: tuple[str, ...]) -> None:
    """Make `module.<fused>` (a Linear whose output rows are `parts` stacked in order) save and load as `parts`.

    On load, e.g. to_q.weight, to_k.weight, to_v.weight (C, C) each -> to_qkv.weight (3C, C); on save the reverse,
    in the original key order, so a fast module's state_dict is the readable module's.
    """

    def load(module: nn.Module, state: dict, prefix: str, *args) -> None:
        for kind in kinds:
            names = [f"{prefix}{part}.{kind}" for part in parts]
            if all(name in state for name in names):
                state[f"{prefix}{fused}.{kind}"] = torch.cat([state.pop(name) for name in names])

    def save(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
        mine = [(key, state.pop(key)) for key in [k for k in state if k.startswith(prefix)]]
        stacked = {
            key[len(prefix) + len(fused) + 1 :]: value for key, value in mine if key.startswith(prefix + fused + ".")
        }
        for key, value in mine:
            if key.startswith(prefix + fused + "."):
                if key == f"{prefix}{fused}.{kinds[0]}":  # the parts go where the fused tensors were, part by part
                    for i, part in enumerate(parts):
                        for kind in kinds:
                            # A copy, so that each saved tensor owns its memory (safetensors refuses shared memory).
                            state[f"{prefix}{part}.{kind}"] = stacked[kind].chunk(len(parts))[i].clone()
            else:
                state[key] = value

    module.register_load_state_dict_pre_hook(load)
    module.register_state_dict_post_hook(save)


class FusedAttention(Attention):
    """`Attention` with its input projections fused: to_qkv (self) or to_q + to_kv (cross) instead of three.

    Loads and saves to_q/to_k/to_v, like the readable module, and records probabilities for
    `capture_cross_attention` the same way.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        nn.Module.__init__(self)  # not Attention.__init__: the three separate projections are not built
        self.heads = heads
        self.is_cross = context_dim is not None
        self.record = None
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)  # rows: [to_k; to_v]
            _stack_on_load(self, "to_kv", ("to_k", "to_v"), ("weight",))
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)  # rows: [to_q; to_k; to_v]
            _stack_on_load(self, "to_qkv", ("to_q", "to_k", "to_v"), ("weight",))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    @classmethod
    def like(cls, attention: Attention) -> FusedAttention:
        context_dim = attention.to_k.in_features if attention.is_cross else None
        return cls(attention.to_q.in_features, attention.heads, context_dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if self.is_cross:
            q = self.to_q(x)  # (B, N, dim)
            k, v = self.to_kv(context).chunk(2, dim=-1)  # (B, T, dim) each, from one product
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # (B, N, dim) each, from one product
        q, k, v = (p.unflatten(-1, (self.heads, -1)).transpose(1, 2) for p in (q, k, v))  # (B, heads, *, head_dim)
        if self.record is None:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        else:  # written out as in Attention.forward, so the probabilities can be recorded
            if size is None:
                raise ValueError("recording attention probabilities needs the spatial size (h, w) of the tokens")
            probs = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).float().softmax(dim=-1)  # (B, heads, N, T)
            self.record(probs.detach().unflatten(2, size))
            out = probs.to(v.dtype) @ v
        return self.to_out[0](out.transpose(1, 2).flatten(2))  # (B, N, dim)


class FusedSpatialSelfAttention(SpatialSelfAttention):
    """The VAE's single-head self-attention with q, k, v (and their biases) from one product."""

    def __init__(self, channels: int, groups: int, eps: float):
        nn.Module.__init__(self)  # not SpatialSelfAttention.__init__: no separate projections
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        _stack_on_load(self, "to_qkv", ("to_q", "to_k", "to_v"), ("weight", "bias"))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    @classmethod
    def like(cls, attention: SpatialSelfAttention) -> FusedSpatialSelfAttention:
        norm = attention.group_norm
        return cls(norm.num_channels, norm.num_groups, norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, h, w)
        B, C, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, h*w, C); free when x is channels_last
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)
        out = self.to_out[0](multi_head_attention(q, k, v, heads=1))  # (B, h*w, C)
        return x + out.transpose(1, 2).reshape(B, C, h, w)


def _contiguous_on_save(module: nn.Module) -> None:
    """state_dict() hands out contiguous tensors, as the readable module's, even where weights are channels_last."""

    def save(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
        for key, value in state.items():
            if not value.is_contiguous():
                state[key] = value.contiguous()

    module.register_state_dict_post_hook(save)


def _channels_last(x: torch.Tensor, options: FastOptions) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if options.channels_last and x.ndim == 4 else x


# --------------------------------------------------------------------------------------------------------------
# The UNet
# --------------------------------------------------------------------------------------------------------------


class FastUNet(UNet):
    """The UNet (SD1.x, SD 2.x, SDXL) computed the fast way; same config, call, state_dict and outputs (to
    rounding) as `UNet`.

    forward(x, timestep, context) runs, in order of preference: a replayed CUDA graph (CUDA, no autograd, well-
    formed inputs), the compiled network, the eager network. While `capture_cross_attention` is recording, it
    runs eagerly (the recording is Python code that graphs and compiled code would skip).
    """

    def __init__(self, config: UNetConfig, options: FastOptions | None = None):
        super().__init__(config)
        self.options = options = options or FastOptions()
        if options.fuse_projections:
            for block in [m for m in self.modules() if isinstance(m, TransformerBlock)]:
                block.attn1, block.attn2 = FusedAttention.like(block.attn1), FusedAttention.like(block.attn2)
        self._cross = tuple(m for m in self.modules() if isinstance(m, Attention) and m.is_cross)
        _compile_blocks(self, (ResBlock, SpatialTransformer), options)
        full = options.compile in ("full", "max-autotune")
        self._network = _compile(self._readable_forward, options) if full else self._readable_forward
        if options.compile == "aot":
            self._network = AOTNetwork(self)  # compiled at the first call of each input signature, or read
        self.graphs = GraphedCall(self._network)  # a few batch signatures, one memory pool (graphs.py)
        self.fp8_layers: list[fp8.FP8Linear] = []  # filled by use_fp8 (after the weights are loaded)
        _contiguous_on_save(self)

    def use_fp8(self) -> str | None:
        """Switch the projections to fp8 as `options.precision` asks; None when done (or not asked), else the
        sentence that says why this device keeps the native dtype (fp8.unavailable_reason)."""
        scaling = PRECISIONS[self.options.precision]
        if scaling is None or self.fp8_layers:
            return None
        weight = self.conv_in.weight
        reason = None if self.options.emulate_fp8 else fp8.unavailable_reason(weight.device, scaling, weight.dtype)
        if reason is None:
            self.fp8_layers = fp8.convert_to_fp8(
                self, scaling, emulate=self.options.emulate_fp8, fast_accum=self.options.fp8_fast_accum
            )
            if isinstance(self._network, AOTNetwork):
                self._network.forget()  # new modules: a package of the old ones must not run
        return reason

    @property
    def precision(self) -> str:
        """The precision the projections really run in: options.precision, or "native" after a fallback."""
        return self.options.precision if self.fp8_layers else "native"

    def _readable_forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        return UNet.forward(self, x, t, context, y)

    @property
    def recording(self) -> bool:
        """True while `capture_cross_attention` is active on this model."""
        return any(m.record is not None for m in self._cross)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        control: ControlResiduals | None = None,
    ) -> torch.Tensor:
        """As UNet.forward. SDXL's vector y (B or 1, adm) is one more input of the graphed or compiled call."""
        x = _channels_last(x, self.options)
        if self.fp8_layers:
            fp8.refresh(self.fp8_layers)  # a LoRA patched a weight in place: quantise it again
        if control is not None:
            # ControlNet residuals: the readable forward (its blocks compiled, no CUDA graph)
            return UNet.forward(self, x, timestep, context, y, control=control).contiguous()
        if self.recording:
            with torch.compiler.set_stance("force_eager"):
                return UNet.forward(self, x, timestep, context, y).contiguous()
        vector = () if y is None else (y,)
        with kernel_choices(self.options):
            t = self._graphable_timesteps(x, timestep, context, y)
            if t is not None:
                return self.graphs(x, t, context, *vector).contiguous()
            return self._network(x, timestep, context, *vector).contiguous()

    def _graphable_timesteps(
        self, x: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The timesteps as a (B,) tensor on x's device when a CUDA graph may run this call, else None.

        Malformed inputs return None so that the readable forward raises its own error message.
        """
        if not (self.options.cuda_graphs and x.is_cuda and not torch.is_grad_enabled()):
            return None
        t = torch.as_tensor(timestep, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        ok = t.shape == (x.shape[0],) and context.ndim == 3 and context.shape[-1] == self.config.context_dim
        adm = self.config.adm_in_channels
        if (y is None) != (adm is None):
            return None
        if y is not None:
            ok = ok and y.ndim == 2 and y.shape[-1] == adm and y.shape[0] in (1, x.shape[0]) and y.device == x.device
        return t.float() if ok and context.device == x.device else None


def fast_unet(unet: UNet, options: FastOptions | None = None) -> FastUNet:
    """The readable `unet` as a FastUNet sharing its weights (nothing is copied but the fused projections).

    With channels_last, the readable module's convolution weights are first switched to that layout in place
    (same values, so it computes the same thing), so that both modules share them instead of holding two copies.
    """
    fast = _sharing_weights(unet, FastUNet, (options or FastOptions()).for_unet(unet))
    reason = fast.use_fp8()
    if reason is not None:
        log.warning(reason)
    return fast


def _sharing_weights(readable: nn.Module, fast_class: type, options: FastOptions) -> nn.Module:
    """A `fast_class` that takes over `readable`'s weight tensors (built on the meta device when large:
    `devices.building`)."""
    if options.channels_last:
        readable.to(memory_format=torch.channels_last)
    with devices.building(sum(p.numel() for p in readable.parameters())):
        fast = fast_class(readable.config, options)
    fast.load_state_dict(readable.state_dict(), assign=True)
    return fast.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------------
# The VAE
# --------------------------------------------------------------------------------------------------------------


class FastVAE(VAE):
    """The autoencoder computed the fast way: fused attention projections, channels_last, compiled blocks.

    Overrides the two raw network calls every public method goes through (`_moments`, `_image`), so plain,
    tiled, scaled and unscaled encodes and decodes are all fast. No CUDA graphs: it runs once per image.
    """

    def __init__(self, config: VAEConfig, options: FastOptions | None = None):
        super().__init__(config)
        self.options = options = options or FastOptions()
        if options.fuse_projections:
            for mid in (self.encoder.mid_block, self.decoder.mid_block):
                mid.attentions[0] = FusedSpatialSelfAttention.like(mid.attentions[0])
        _compile_blocks(self, (ResnetBlock, SpatialSelfAttention), options)
        full = options.compile in ("full", "max-autotune")
        self._encode_net = _compile(self._readable_moments, options) if full else self._readable_moments
        self._decode_net = _compile(self._readable_image, options) if full else self._readable_image
        _contiguous_on_save(self)

    def _readable_moments(self, images: torch.Tensor) -> torch.Tensor:
        return VAE._moments(self, images)

    def _readable_image(self, z: torch.Tensor) -> torch.Tensor:
        return VAE._image(self, z)

    def _moments(self, images: torch.Tensor) -> torch.Tensor:
        with kernel_choices(self.options):
            return self._encode_net(_channels_last(images, self.options)).contiguous()

    def _image(self, z: torch.Tensor) -> torch.Tensor:
        with kernel_choices(self.options):
            return self._decode_net(_channels_last(z, self.options)).contiguous()


def fast_vae(vae: VAE, options: FastOptions | None = None) -> FastVAE:
    """The readable `vae` as a FastVAE sharing its weights (see `fast_unet`). Alone, without a UNet to judge the
    model by, compile "auto" compiles per block; `accelerate` resolves it from the checkpoint's UNet first."""
    options = options or FastOptions()
    if options.compile == "auto":
        options = dataclasses.replace(options, compile="blocks")
    return _sharing_weights(vae, FastVAE, options)


# --------------------------------------------------------------------------------------------------------------
# The text encoder: a prompt cache
# --------------------------------------------------------------------------------------------------------------


class FastTextEncoder(CLIPTextEncoder):
    """The CLIP text encoder with `encode` remembered per token ids and clip_skip (the last `cache_size` ones).

    A sampling loop never calls the text encoder, but a server or a lab session encodes the same prompts (and the
    empty negative one) again and again. Loading weights (load_state_dict) empties the cache.
    """

    def __init__(self, config: TextEncoderConfig, options: FastOptions | None = None, cache_size: int = 32):
        super().__init__(config)
        self.options = options or FastOptions()
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()
        self.register_load_state_dict_pre_hook(lambda *args: self._cache.clear())

    def encode(self, input_ids: torch.Tensor, clip_skip: int = 1, vectors: torch.Tensor | None = None) -> torch.Tensor:
        if not self.options.cache_prompts or torch.is_grad_enabled() or vectors is not None:
            return super().encode(input_ids, clip_skip, vectors)
        # A LoRA patches the weights in place (models/lora.py): their version counters, bumped by every in-place
        # change, are part of the key, so a patched or restored encoder never reads an encoding of other weights.
        versions = tuple(p._version for p in self.parameters())
        key = (str(input_ids.device), tuple(input_ids.shape), clip_skip, tuple(input_ids.flatten().tolist()), versions)
        if key not in self._cache:
            self._cache[key] = super().encode(input_ids, clip_skip)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key].clone()  # a copy: the caller may change it in place


def fast_text_encoder(text_encoder: CLIPTextEncoder, options: FastOptions | None = None) -> FastTextEncoder:
    """The readable text encoder as a FastTextEncoder sharing its weights (it has no 4-D weights to relayout)."""
    return _sharing_weights(text_encoder, FastTextEncoder, options or FastOptions())


# --------------------------------------------------------------------------------------------------------------
# A whole checkpoint
# --------------------------------------------------------------------------------------------------------------


def fast_path_default(device: torch.device) -> bool:
    """The fast path is on by default on CUDA GPUs only (on a CPU, compiling costs more than it saves)."""
    return torch.device(device).type == "cuda"


def accelerate(ckpt: Checkpoint, enabled: bool | None = None, options: FastOptions | None = None) -> Checkpoint:
    """The checkpoint with its UNet, VAE and text encoder replaced by their fast versions (weights shared).

    `enabled` None: on for a CUDA checkpoint, off elsewhere (`fast_path_default`). Off: `ckpt` itself.
    A new Checkpoint is returned; the readable modules in `ckpt` stay usable (see `fast_unet` on their layout).
    """
    if enabled is None:
        enabled = fast_path_default(ckpt.device)
    if not enabled:
        return ckpt
    options = (options or FastOptions()).for_unet(ckpt.unet)  # one compile mode for all three modules
    if options.compile != "none":
        use_compile_cache(ckpt.device)  # the second start finds its kernels on disk (compile_cache.py)
    return dataclasses.replace(
        ckpt,
        unet=fast_unet(ckpt.unet, options),
        vae=fast_vae(ckpt.vae, options),
        # SDXL's pair of towers stays readable: one prompt encoding per image costs little next to 30 UNet steps.
        text_encoder=(
            fast_text_encoder(ckpt.text_encoder, options)
            if isinstance(ckpt.text_encoder, CLIPTextEncoder)
            else ckpt.text_encoder
        ),
    )
