"""LoRA and its LyCORIS relatives: small files that change a model's weights, applied and removed exactly.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") fine-tunes a layer of weight W (out, in)
by learning only a low-rank change: two thin matrices `up` (out, r) and `down` (r, in), r << in, so that

    W' = W + strength * (alpha / r) * up @ down

`alpha` is stored beside them (kohya's `.alpha`); without it the scale is 1. The same idea, other factorisations:

    LoCon          a convolution's (out, in, kh, kw) kernel: down is (r, in, kh, kw), up is (out, r, 1, 1);
                   with Tucker's `lora_mid` (r, r, kh, kw) down is (r, in, 1, 1) and the kernel lives in mid
    LoHa           a Hadamard product of two low-rank matrices (Hyeon-Woo et al. 2022, "FedPara"):
                   delta = (w1_a @ w1_b) * (w2_a @ w2_b), scale alpha / rank
    LoKr           a Kronecker product (Yeh et al. 2024, "LyCORIS"): delta = kron(w1, w2), each factor whole or
                   low-rank (w_a @ w_b), scale alpha / rank when a factor is low-rank, else 1
    DoRA           (Liu et al. 2024, "Weight-Decomposed Low-Rank Adaptation") stores a magnitude `dora_scale`:
                   W' = dora_scale * (W + delta) / ||W + delta||, the norm taken along dora_scale's axis
    full diff      `.diff` (and `.diff_b` for the bias): delta is stored whole

Reading (`load_lora`) finds every module a file names, in any of the spellings kohya, diffusers/PEFT and LyCORIS
use (keymap.lora_module_names is the only place that knows them), checks each change against the shape of the
weight it patches, and reports the keys that fit nothing. Nothing of the model is touched then.

Applying (`patched`) is a context manager around the work that needs the patched weights (a sampling loop, a
prompt encoding): only the weights a LoRA touches are backed up (a copy in their own dtype, so the restore is
bit-exact), patched in place in float32 and cast back, and restored on the way out, error or not. A MODEL or CLIP
with LoRAs is therefore the base model plus a list of `WeightPatch`es; no network is ever copied, and the loaded
checkpoint the node cache holds is never left changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import TextEncoderConfig, UNetConfig
from atelier.models.weights import WeightsFile

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# The changes a file can store for one weight
# --------------------------------------------------------------------------------------------------------------


def _tucker(core: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """LyCORIS' Tucker rebuild of a conv factor: core (r, r, kh, kw), b (r, in), a (out, r) -> (out, in, kh, kw)."""
    return torch.einsum("i j k l, j r, i p -> p r k l", core, b, a)


@dataclasses.dataclass(frozen=True)
class LowRank:
    """LoRA / LoCon: delta = (alpha / r) * up @ down, down optionally a Tucker pair (down, mid)."""

    up: Tensor  # (out, r) or (out, r, 1, 1)
    down: Tensor  # (r, in) or (r, in, kh, kw); with mid: (r, in, 1, 1)
    mid: Tensor | None = None  # (r, r, kh, kw)
    alpha: float | None = None

    def delta(self, shape: torch.Size) -> Tensor:
        down = self.down
        if self.mid is not None:  # fold the Tucker core into down: (r, in, kh, kw), as ComfyUI does
            mid = self.mid
            folded = down.transpose(0, 1).flatten(1) @ mid.transpose(0, 1).flatten(1)  # (in, r * kh * kw)
            down = folded.reshape(down.shape[1], down.shape[0], *mid.shape[2:]).transpose(0, 1)
        rank = self.down.shape[0]
        scale = self.alpha / rank if self.alpha is not None else 1.0
        return scale * (self.up.flatten(1) @ down.flatten(1)).reshape(shape)


@dataclasses.dataclass(frozen=True)
class Hadamard:
    """LoHa: delta = (alpha / r) * (w1_a @ w1_b) * (w2_a @ w2_b), each factor optionally a Tucker core (t1, t2)."""

    w1_a: Tensor  # (out, r)
    w1_b: Tensor  # (r, in * kh * kw), or (r, in) with t1
    w2_a: Tensor
    w2_b: Tensor
    t1: Tensor | None = None  # (r, r, kh, kw)
    t2: Tensor | None = None
    alpha: float | None = None

    def delta(self, shape: torch.Size) -> Tensor:
        w1 = _tucker(self.t1, self.w1_b, self.w1_a) if self.t1 is not None else self.w1_a @ self.w1_b
        w2 = _tucker(self.t2, self.w2_b, self.w2_a) if self.t2 is not None else self.w2_a @ self.w2_b
        scale = self.alpha / self.w1_b.shape[0] if self.alpha is not None else 1.0
        return scale * (w1 * w2).reshape(shape)


@dataclasses.dataclass(frozen=True)
class Kronecker:
    """LoKr: delta = kron(w1, w2), each factor whole (`w1`) or low-rank (`w1_a @ w1_b`); w2 optionally Tucker."""

    w1: Tensor | None = None
    w1_a: Tensor | None = None
    w1_b: Tensor | None = None
    w2: Tensor | None = None
    w2_a: Tensor | None = None
    w2_b: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None

    def delta(self, shape: torch.Size) -> Tensor:
        rank = None
        w1 = self.w1
        if w1 is None:
            assert self.w1_a is not None and self.w1_b is not None
            w1, rank = self.w1_a @ self.w1_b, self.w1_b.shape[0]
        w2 = self.w2
        if w2 is None:
            assert self.w2_a is not None and self.w2_b is not None
            w2 = _tucker(self.t2, self.w2_b, self.w2_a) if self.t2 is not None else self.w2_a @ self.w2_b
            rank = self.w2_b.shape[0]
        if w2.ndim == 4:  # a conv kernel: w1 (a, b) scales whole (kh, kw) blocks of w2
            w1 = w1[:, :, None, None]
        scale = self.alpha / rank if self.alpha is not None and rank is not None else 1.0
        return scale * torch.kron(w1, w2).reshape(shape)


@dataclasses.dataclass(frozen=True)
class FullDiff:
    """A change stored whole (`.diff`, `.diff_b`)."""

    diff: Tensor

    def delta(self, shape: torch.Size) -> Tensor:
        return self.diff.reshape(shape)


Change = LowRank | Hadamard | Kronecker | FullDiff


@dataclasses.dataclass(frozen=True)
class Adapter:
    """What one file does to one weight: a change, and for DoRA the magnitude it renormalises the result to."""

    change: Change
    dora_scale: Tensor | None = None  # (out, 1, ...) or (1, in, ...): DoRA's magnitude

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        """The patched weight (float32, same shape) for `strength`."""
        delta = self.change.delta(weight.shape)
        if self.dora_scale is None:
            return weight + strength * delta
        # DoRA: the direction of W + delta, rescaled to the learned magnitude. The norm is taken per output row
        # when dora_scale is (out, 1, ...) (PEFT's layout) and per input column when it is (1, in, ...) (LyCORIS'),
        # both of W + delta, as in the paper. (ComfyUI takes the per-row norm of W alone, without delta.)
        merged = weight + delta
        if self.dora_scale.shape[0] == weight.shape[0]:  # (out, 1, ...): one magnitude per output row
            scale = self.dora_scale.reshape(-1, *[1] * (weight.ndim - 1))
            norm = merged.flatten(1).norm(dim=1).reshape(scale.shape)
        else:  # (1, in, ...): one magnitude per input column
            scale = self.dora_scale.reshape(1, -1, *[1] * (weight.ndim - 2))
            norm = merged.transpose(0, 1).flatten(1).norm(dim=1).reshape(scale.shape)
        decomposed = merged * (scale / (norm + torch.finfo(torch.float32).eps))
        return weight + strength * (decomposed - weight)


# --------------------------------------------------------------------------------------------------------------
# Reading a file
# --------------------------------------------------------------------------------------------------------------

# Tensor name endings -> the part of a change they are. Longest first, so `.lora_up.weight` wins over `.weight`.
_PARTS = {
    ".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid",
    ".lora_B.weight": "up", ".lora_A.weight": "down",
    ".lora.up.weight": "up", ".lora.down.weight": "down",
    "_lora.up.weight": "up", "_lora.down.weight": "down",
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",
    ".alpha": "alpha", ".dora_scale": "dora_scale",
    **{f".{part}": part for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")},
    **{f".{part}": part for part in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
                                     "lokr_t2")},
    ".diff": "diff", ".diff_b": "diff_b",
}  # fmt: skip
_BY_LENGTH = sorted(_PARTS, key=len, reverse=True)
_OLD_TEXT_ATTENTION = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
# Names that say a file is for SDXL (two text encoders, 2048-wide context), not SD1.x.
_SDXL_MARKS = ("lora_te2_", "text_encoder_2.", "lora_unet_input_blocks_4_1_transformer_blocks_1_")
# Names that say a file is for SD1.x or SD 2.x, not SDXL: kohya's one text encoder (`lora_te_`; SDXL's are te1 and
# te2), or a transformer in the UNet's first level, which SDXL (base and refiner) does not have.
_SD1_MARKS = (
    "lora_te_",
    "lora_unet_down_blocks_0_attentions_",
    "lora_unet_input_blocks_1_1_",
    "lycoris_down_blocks_0_attentions_",
    "unet.down_blocks.0.attentions.",
    "down_blocks.0.attentions.",
)


# The width a UNet's cross-attention reads (its text encoder's output): the surest sign of a LoRA's family, from
# the input width of a `to_k`/`to_v` down (A) matrix of an `attn2` layer, shape (rank, context width).
_CONTEXT_FAMILIES = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "SDXL", 1280: "the SDXL refiner"}


def lora_family(shapes: dict[str, tuple[int, ...]]) -> str:
    """The model family a LoRA file was trained for, from its tensor names and shapes (`atelier info`)."""
    for key, shape in shapes.items():
        cross = re.search(r"attn2[._]to_[kv]\.(lora_down|lora_A)\.weight$", key) and len(shape) == 2
        if cross and (family := _CONTEXT_FAMILIES.get(shape[1])) is not None:
            return family
    if any(key.startswith(_SDXL_MARKS) for key in shapes):
        return "SDXL"
    return "Stable Diffusion 1.x or 2.x"


def split_key(key: str) -> tuple[str, str] | None:
    """A LoRA tensor name -> (module name as the file spells it, part), or None when no known part ends it.

    The old diffusers attention-processor spelling (`attn1.processor.to_out_lora.up.weight`, and in the text
    encoder `self_attn.to_q_lora.up.weight`) is brought to the current one (`attn1.to_out.0`, `self_attn.q_proj`).
    """
    for suffix in _BY_LENGTH:
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            if ".processor." in module:
                module = module.replace(".processor.", ".")
                module = module + ".0" if module.endswith(".to_out") else module
            head, _, last = module.rpartition(".")
            if head.endswith(".self_attn") and last in _OLD_TEXT_ATTENTION:
                module = f"{head}.{_OLD_TEXT_ATTENTION[last]}"
            return module, _PARTS[suffix]
    return None


@dataclasses.dataclass(frozen=True)
class LoRA:
    """A LoRA file read for one model: for each network, our weight name -> its Adapter; and what fit nothing."""

    name: str
    unet: Mapping[str, Adapter]
    text_encoder: Mapping[str, Adapter]
    unmatched: tuple[str, ...]  # the file's tensor names that no weight of the model has

    def summary(self) -> str:
        """One line: how many weights of each network it changes, and the keys it could not place."""
        line = f"{self.name}: {len(self.unet)} UNet and {len(self.text_encoder)} text-encoder weight(s) patched"
        if self.unmatched:
            line += f"; {len(self.unmatched)} key(s) fit nothing and are ignored: {keymap.first_names(self.unmatched)}"
        return line


@functools.lru_cache(maxsize=8)
def _weight_shapes(config: UNetConfig | TextEncoderConfig) -> dict[str, tuple[int, ...]]:
    """Our weight names and shapes for a config, from a module built on the meta device (no memory, no init)."""
    from atelier.models.clip import CLIPTextEncoder
    from atelier.models.unet import UNet

    with torch.device("meta"):
        module = UNet(config) if isinstance(config, UNetConfig) else CLIPTextEncoder(config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _number(value: Tensor | None) -> float | None:
    return None if value is None else float(value.float().reshape(-1)[0])


def _change(parts: dict[str, Tensor], module: str) -> Change:
    """The change stored in one module's parts (LoRA, LoHa, LoKr or full diff), or a sentence naming what lacks."""
    alpha = _number(parts.get("alpha"))
    if "up" in parts and "down" in parts:
        return LowRank(parts["up"], parts["down"], parts.get("mid"), alpha)
    hada = [parts.get(f"hada_{k}") for k in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")]
    if all(t is not None for t in hada[:4]):
        return Hadamard(*hada, alpha=alpha)
    lokr = {k: parts.get(f"lokr_{k}") for k in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b", "t2")}
    has_w1 = lokr["w1"] is not None or (lokr["w1_a"] is not None and lokr["w1_b"] is not None)
    has_w2 = lokr["w2"] is not None or (lokr["w2_a"] is not None and lokr["w2_b"] is not None)
    if has_w1 and has_w2:
        return Kronecker(**lokr, alpha=alpha)
    if "diff" in parts:
        return FullDiff(parts["diff"])
    raise CheckpointError(f"the LoRA module {module} has only the parts {', '.join(sorted(parts))}; incomplete file.")


TextConfigs = TextEncoderConfig | Mapping[str, TextEncoderConfig | None]


def text_configs(text_encoder: nn.Module) -> TextConfigs:
    """What `load_lora` needs to know of a text encoder: its config, or SDXL's towers' ({"clip_l", "clip_g"},
    clip_l None for the refiner), as SDXLTextEncoder holds them."""
    from atelier.models.clip import SDXLTextEncoder

    if isinstance(text_encoder, SDXLTextEncoder):
        clip_l = text_encoder.clip_l.config if text_encoder.clip_l is not None else None
        return {"clip_l": clip_l, "clip_g": text_encoder.clip_g.config}
    return text_encoder.config


def _text_shapes(text_config: TextConfigs | None) -> dict[str, tuple[int, ...]]:
    """Our text-encoder weight names and shapes; SDXL's under their tower (`clip_l.text_model...`), the names
    `patched` finds in an SDXLTextEncoder."""
    if text_config is None:
        return {}
    if isinstance(text_config, TextEncoderConfig):
        return _weight_shapes(text_config)
    return {f"{tower}.{k}": v for tower, c in text_config.items() if c is not None
            for k, v in _weight_shapes(c).items()}  # fmt: skip


def load_lora(path: str | Path, unet_config: UNetConfig, text_config: TextConfigs | None) -> LoRA:
    """Read a LoRA / LyCORIS file for a model of these configs (`text_config` None: the UNet only; SDXL: its two
    towers' configs, see `text_configs`).

    Every change is checked against the weight it patches (rebuilt to that weight's shape). A file for another
    family (SDXL on SD1.x, SD1.x on SDXL), an unknown format or a broken file raises CheckpointError in one
    sentence; keys that fit no weight are returned in `unmatched` (and logged), never dropped silently.
    """
    path = Path(path)
    file = WeightsFile(path)
    name = file.name
    sdxl = unet_config.adm_in_channels is not None  # SDXL's UNet reads the vector y; SD1.x's does not
    family = "SDXL" if sdxl else "Stable Diffusion 1.x"
    keys = list(file.index.shapes)
    if not sdxl and any(key.startswith(_SDXL_MARKS) for key in keys):
        raise CheckpointError(f"{name} is a LoRA for SDXL (it names a second text encoder); this model is SD1.x.")
    if sdxl and (marked := [key for key in keys if key.startswith(_SD1_MARKS)]):
        raise CheckpointError(
            f"{name} is a LoRA for SD1.x or SD 2.x (it names {keymap.first_names(marked, 1)}); this model is SDXL, "
            "whose LoRAs name two text encoders (lora_te1_, lora_te2_) and no transformer in the UNet's first level."
        )
    split = {key: split_key(key) for key in keys}
    if not any(split.values()):
        raise CheckpointError(
            f"{name} is not a LoRA: none of its {len(keys)} tensor(s) (e.g. {keymap.first_names(keys, 2)}) ends "
            "like a LoRA, LoHa or LoKr part (.lora_up.weight, .lora_A.weight, .hada_w1_a, .lokr_w1, ...)."
        )
    unet_shapes = _weight_shapes(unet_config)
    text_shapes = _text_shapes(text_config)
    names = keymap.lora_module_names(unet_shapes, unet_config, text_shapes)
    tensors = file.read(keys, torch.float32)

    grouped: dict[tuple[str, str], dict[str, Tensor]] = {}
    unmatched = []
    for key, found in split.items():
        target = names.get(found[0]) if found is not None else None
        if found is None or target is None:
            unmatched.append(key)
        else:
            grouped.setdefault(target, {})[found[1]] = tensors[key]
    if not grouped:
        raise CheckpointError(
            f"{name} names no layer of this {family} model (e.g. {keymap.first_names(unmatched, 2)}); "
            "it is a LoRA for another model family."
        )

    patches: dict[str, dict[str, Adapter]] = {keymap.UNET: {}, keymap.TEXT_ENCODER: {}}
    for (component, module), parts in grouped.items():
        shapes = unet_shapes if component == keymap.UNET else text_shapes
        if "diff_b" in parts:
            patches[component][module + ".bias"] = _checked(FullDiff(parts.pop("diff_b")), shapes, module + ".bias",
                                                            name, sdxl)  # fmt: skip
            if not parts:
                continue
        weight = module + ".weight"
        adapter = Adapter(_change(parts, module), parts.get("dora_scale"))
        patches[component][weight] = _checked(adapter, shapes, weight, name, sdxl)
    lora = LoRA(name, patches[keymap.UNET], patches[keymap.TEXT_ENCODER], tuple(sorted(unmatched)))
    if unmatched:
        log.warning("%s", lora.summary())
    return lora


def _checked(
    adapter: Adapter | FullDiff, shapes: Mapping[str, tuple[int, ...]], weight: str, name: str, sdxl: bool
) -> Adapter:
    """`adapter` (a bare FullDiff wrapped) after rebuilding its change once at the shape of `weight`."""
    if isinstance(adapter, FullDiff):
        adapter = Adapter(adapter)
    shape = torch.Size(shapes[weight])
    change = adapter.change
    try:
        delta = change.delta(shape)
    except RuntimeError:  # reshape or matmul of misfit sizes
        delta = None
    if delta is None or delta.shape != shape:
        raise CheckpointError(
            f"{name} does not fit this model: its change to {weight} cannot take the weight's shape {tuple(shape)}; "
            f"it is a LoRA for another model family ({'SD1.x, SD2?' if sdxl else 'SDXL, SD2?'})."
        )
    if adapter.dora_scale is not None and adapter.dora_scale.numel() not in (shape[0], shape[1]):
        raise CheckpointError(f"{name} has a dora_scale for {weight} of {adapter.dora_scale.numel()} values; "
                              f"expected {shape[0]} or {shape[1]}.")  # fmt: skip
    return adapter


# --------------------------------------------------------------------------------------------------------------
# Applying: patch in place for the duration of a block, restore the original bits after
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WeightPatch:
    """One LoRA at one strength, on one network: our weight name -> Adapter."""

    adapters: Mapping[str, Adapter]
    strength: float
    source: str  # the file's name, for messages


def _weight_of(module: nn.Module, name: str) -> Tensor:
    """The parameter `name` of `module`, or the rows of it inside a fused projection of the fast path.

    models/fast.py replaces to_q, to_k, to_v by one Linear whose output rows are them stacked (to_qkv: [q; k; v],
    to_kv: [k; v]); a view of the right rows is patched in place just the same.
    """
    try:
        return module.get_parameter(name)
    except AttributeError:
        pass
    owner, projection, kind = name.rsplit(".", 2)
    for fused, parts in (("to_qkv", ("to_q", "to_k", "to_v")), ("to_kv", ("to_k", "to_v"))):
        if projection in parts:
            with contextlib.suppress(AttributeError):
                stacked = module.get_parameter(f"{owner}.{fused}.{kind}")
                rows = stacked.shape[0] // len(parts)
                i = parts.index(projection)
                return stacked[i * rows : (i + 1) * rows]
    raise CheckpointError(f"the model has no weight {name} for a LoRA to patch.")


@contextlib.contextmanager
def patched(module: nn.Module, patches: Sequence[WeightPatch]) -> Iterator[nn.Module]:
    """`module` with `patches` applied in order (each weight: W += strength * delta, computed in float32), for the
    duration of the block; the touched weights are restored bit for bit afterwards, also when the block raises.

    Memory: one copy of each touched weight in its own dtype (an SD1.5 LoRA of the attention layers touches
    about 10% of the UNet), plus one float32 weight at a time while patching.
    """
    active = [p for p in patches if p.strength != 0.0 and p.adapters]
    if not active:
        yield module
        return
    names = list(dict.fromkeys(name for patch in active for name in patch.adapters))
    weights = {name: _weight_of(module, name) for name in names}
    backup = {name: weight.detach().clone() for name, weight in weights.items()}
    try:
        with torch.no_grad():
            for name, weight in weights.items():
                merged = weight.detach().float()
                for patch in active:
                    adapter = patch.adapters.get(name)
                    if adapter is not None:
                        merged = _on(adapter, merged.device).apply(merged, patch.strength)
                weight.copy_(merged.to(weight.dtype))
        yield module
    finally:
        with torch.no_grad():
            for name, weight in weights.items():
                weight.copy_(backup[name])


def _on(adapter: Adapter, device: torch.device) -> Adapter:
    """The adapter with its tensors on `device` (a no-op for the CPU)."""
    if device.type == "cpu":
        return adapter
    change = dataclasses.replace(adapter.change, **{
        f.name: getattr(adapter.change, f.name).to(device)
        for f in dataclasses.fields(adapter.change) if isinstance(getattr(adapter.change, f.name), Tensor)
    })  # fmt: skip
    scale = adapter.dora_scale.to(device) if adapter.dora_scale is not None else None
    return Adapter(change, scale)
