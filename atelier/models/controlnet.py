"""ControlNet (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models",
https://arxiv.org/abs/2302.05543): steering a frozen UNet with an image of edges, a pose, a depth map...

The idea: copy the UNet's encoder half (conv_in, the down path and the middle block, with their weights), feed the
copy the same noisy latent, timestep and prompt as the UNet, plus a "hint" image, and add what each of its levels
computes to the matching skip connection of the frozen UNet. Every connection from the copy back to the UNet goes
through a 1x1 convolution initialised to zero ("zero convolution"), so before training the ControlNet adds exactly
nothing and training starts from the unchanged model.

    hint (B, 3, 8h, 8w) in [0, 1] -> hint encoder: 8 convs, 3 of stride 2 -> (B, 320, h, w), added after conv_in
    x_in (B, 4, h, w) -> conv_in --+--> down blocks -> middle block
                                   |        |               |
                         zero conv per skip (12 for SD1.x)  zero conv (middle_block_out)
                                   v        v               v
                         ControlResiduals(down=[12 maps], mid=1 map) x strength, added inside the UNet (unet.py)

Module names follow diffusers' ControlNetModel (time_embedding, conv_in, down_blocks, mid_block,
controlnet_cond_embedding, controlnet_down_blocks, controlnet_mid_block), so its files load without renaming; the
single-file layout of the original code (ComfyUI's, `input_hint_block`, `zero_convs`, `middle_block_out`, with or
without a `control_model.` prefix) is renamed by keymap.controlnet_from_sd.

At sampling time a `ControlStack` holds the ControlNets applied to one conditioning (ControlNetApply, stacked
applies add up): each call of the denoiser asks it for the summed residuals of those active at the current sigma.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atelier.errors import CheckpointError
from atelier.models import keymap
from atelier.models.config import UNetConfig
from atelier.models.detect import META_UNET, infer_unet_config, metadata_config
from atelier.models.unet import ControlResiduals, DownBlock, MidBlock, TimestepMLP, timestep_embedding
from atelier.models.weights import WeightsFile
from atelier.sampling.denoisers import DiscreteSchedule

# --------------------------------------------------------------------------------------------------------------
# Config and network
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ControlNetConfig:
    """The UNet shape the ControlNet copies, and its hint encoder: `hint_channels` in (3: an RGB hint), then the
    widths of its levels (each after the first halves the resolution; SD1.x: 16, 32, 96, 256 -> 8x smaller)."""

    unet: UNetConfig
    hint_channels: int = 3
    hint_block_channels: tuple[int, ...] = (16, 32, 96, 256)

    @classmethod
    def tiny(cls) -> ControlNetConfig:
        return cls(UNetConfig.tiny(), hint_block_channels=(8, 8, 8, 16))


class HintEncoder(nn.Module):
    """The hint image -> features the size and width of conv_in's output (diffusers' ControlNetConditioningEmbedding).

    conv_in, SiLU, then per level change (conv, SiLU, stride-2 conv, SiLU), then a zero-initialised conv_out.
    """

    def __init__(self, config: ControlNetConfig) -> None:
        super().__init__()
        widths = config.hint_block_channels
        self.conv_in = nn.Conv2d(config.hint_channels, widths[0], 3, padding=1)
        blocks = []
        for c_in, c_out in itertools.pairwise(widths):
            blocks += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.Conv2d(c_in, c_out, 3, padding=1, stride=2)]
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(widths[-1], config.unet.block_channels[0], 3, padding=1)

    def forward(self, hint: Tensor) -> Tensor:  # (B, 3, 8h, 8w) -> (B, C0, h, w)
        x = F.silu(self.conv_in(hint))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


def skip_channels(cfg: UNetConfig) -> list[int]:
    """The channels of each skip the UNet's down path stores, in order: conv_in's, then each ResBlock's and each
    downsampler's (SD1.x: 320 x 3, 640 x 3, 1280 x 3, 1280 x 3 = 12 skips)."""
    channels = [cfg.block_channels[0]]
    for level, width in enumerate(cfg.block_channels):
        last = level == len(cfg.block_channels) - 1
        channels += [width] * (cfg.layers_per_block + (0 if last else 1))
    return channels


class ControlNet(nn.Module):
    """forward(x (B, 4, h, w), timestep (B,) or scalar, context (B, T, D), hint (B, 3, 8h, 8w)) -> ControlResiduals
    (unscaled: the strength is applied by ControlStack)."""

    def __init__(self, config: ControlNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config.unet
        channels, levels = list(cfg.block_channels), len(cfg.block_channels)
        # --- the copy of the UNet's encoder: same modules, same names as unet.UNet ---
        self.time_embedding = TimestepMLP(channels[0], cfg.time_embed_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock(cfg, channels[max(i - 1, 0)], width, cfg.cross_attention_levels[i], i < levels - 1)
            for i, width in enumerate(channels)
        )
        self.mid_block = MidBlock(cfg, channels[-1])
        # --- what ControlNet adds: the hint encoder and the zero convolutions, one per skip and one for the middle
        self.controlnet_cond_embedding = HintEncoder(config)
        self.controlnet_down_blocks = nn.ModuleList(nn.Conv2d(c, c, kernel_size=1) for c in skip_channels(cfg))
        self.controlnet_mid_block = nn.Conv2d(channels[-1], channels[-1], kernel_size=1)

    def forward(self, x: Tensor, timestep: Tensor | float, context: Tensor, hint: Tensor) -> ControlResiduals:
        t = torch.as_tensor(timestep, device=x.device)
        temb = self.time_embedding(timestep_embedding(t.reshape(-1), self.config.unet.block_channels[0]).to(x.dtype))
        # --- the encoder copy, with the hint's features added after conv_in ---
        h = self.conv_in(x) + self.controlnet_cond_embedding(hint.to(x.dtype))  # (B, C0, h, w)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, context)
            skips += block_skips
        h = self.mid_block(h, temb, context)
        # --- through the zero convolutions ---
        down = [conv(skip) for conv, skip in zip(self.controlnet_down_blocks, skips, strict=True)]
        return ControlResiduals(down, self.controlnet_mid_block(h))


# --------------------------------------------------------------------------------------------------------------
# Loading: single-file (original / ComfyUI) and diffusers layouts
# --------------------------------------------------------------------------------------------------------------


def controlnet_layout(names: list[str] | Mapping[str, object]) -> str | None:
    """ "diffusers", "original" (input_hint_block / zero_convs, prefix control_model. or none), or None."""
    names = set(names)
    if "controlnet_cond_embedding.conv_in.weight" in names:
        return "diffusers"
    if any(n.startswith(("control_model.input_hint_block.", "input_hint_block.")) for n in names):
        return "original"
    return None


def _original_unet_config(shapes: Mapping[str, tuple[int, ...]], name: str) -> UNetConfig:
    """The copied UNet's config from original-layout shapes (prefix removed); it has no output layer, so the UNet
    reader is told the output has as many channels as the input."""
    conv_in = shapes.get("input_blocks.0.0.weight")
    if conv_in is None:
        raise CheckpointError(f"{name} is missing input_blocks.0.0.weight; it is an incomplete ControlNet.")
    return infer_unet_config({**shapes, "out.2.weight": (conv_in[1],)}, what=name)


def diffusers_unet_config(shapes: Mapping[str, tuple[int, ...]], heads: int = 8) -> UNetConfig:
    """The copied UNet's config from diffusers-named shapes (heads are not in the shapes: `heads`, SD1.x's 8)."""
    levels = sum(f"down_blocks.{i}.resnets.0.conv1.weight" in shapes for i in range(16))
    attention = tuple(f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes for i in range(levels))
    first = next((i for i, a in enumerate(attention) if a), None)
    context, depth = 768, 1
    if first is not None:
        context = shapes[f"down_blocks.{first}.attentions.0.transformer_blocks.0.attn2.to_k.weight"][1]
        depth = sum(f"down_blocks.{first}.attentions.0.transformer_blocks.{j}.attn1.to_q.weight" in shapes
                    for j in range(64))  # fmt: skip
    return UNetConfig(
        in_channels=shapes["conv_in.weight"][1],
        out_channels=shapes["conv_in.weight"][1],
        block_channels=tuple(shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0] for i in range(levels)),
        layers_per_block=sum(f"down_blocks.0.resnets.{j}.conv1.weight" in shapes for j in range(16)),
        cross_attention_levels=attention,
        attention_heads=heads,
        transformer_depth=depth,
        context_dim=context,
    )


def controlnet_config(shapes: Mapping[str, tuple[int, ...]], heads: int = 8) -> ControlNetConfig:
    """The full config from diffusers-named shapes: the UNet copy and the hint encoder's widths."""
    blocks = sum(f"controlnet_cond_embedding.blocks.{j}.weight" in shapes for j in range(64))
    widths = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    widths += [shapes[f"controlnet_cond_embedding.blocks.{2 * k + 1}.weight"][0] for k in range(blocks // 2)]
    return ControlNetConfig(
        unet=diffusers_unet_config(shapes, heads),
        hint_channels=shapes["controlnet_cond_embedding.conv_in.weight"][1],
        hint_block_channels=tuple(widths),
    )


def unstored_settings(file: WeightsFile, folder_config: Path | None) -> dict[str, object]:
    """What the shapes cannot say: attention heads and GroupNorm groups (and eps). From Atelier's UNet config in
    the file's metadata (files Atelier writes carry it), or a diffusers config.json beside the weights
    (`attention_head_dim` is the head count for SD1.x, a diffusers quirk); else {}: SD1.x's 8 heads and 32 groups."""
    ours = metadata_config(UNetConfig, file.index.metadata, META_UNET, file.name)
    if ours is not None:
        return {"attention_heads": ours.attention_heads, "norm_groups": ours.norm_groups, "norm_eps": ours.norm_eps}
    if folder_config is None or not folder_config.is_file():
        return {}
    try:
        data = json.loads(folder_config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{folder_config} is not valid JSON; expected a diffusers ControlNet config.") from None
    heads = data.get("attention_head_dim", 8)
    return {
        "attention_heads": int(heads[0] if isinstance(heads, list) else heads),
        "norm_groups": int(data.get("norm_num_groups", 32)),
        "norm_eps": float(data.get("norm_eps", 1e-5)),
    }


def controlnet_weights_file(path: Path) -> Path:
    """A ControlNet file, or the weights inside a diffusers ControlNet folder."""
    if not path.is_dir():
        return path
    for candidate in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (path / candidate).is_file():
            return path / candidate
    raise CheckpointError(f"{path.name} is a folder without diffusion_pytorch_model.safetensors; not a ControlNet.")


def state_in_our_names(file: WeightsFile) -> tuple[dict[str, Tensor], str]:
    """All of the ControlNet's weights, renamed to our (= diffusers') names, and the layout they came in."""
    names = list(file.index.shapes)
    layout = controlnet_layout(names)
    if layout is None:
        raise CheckpointError(
            f"{file.name} is not a ControlNet (found {keymap.first_names(names)}); expected input_hint_block / "
            "zero_convs weights (original layout) or controlnet_cond_embedding ones (diffusers)."
        )
    if layout == "diffusers":
        return file.read(names), layout
    # Original layout: files saved from the training code carry `control_model.`, and often the whole SD model
    # beside it (model.diffusion_model.*, first_stage_model.*, ...), which the ControlNet does not use.
    prefixed = [n for n in names if n.startswith("control_model.")]
    wanted = prefixed or names
    state = {k.removeprefix("control_model."): v for k, v in file.read(wanted).items()}
    unet = _original_unet_config({k: tuple(v.shape) for k, v in state.items()}, file.name)
    return keymap.controlnet_from_sd(state, unet, file.name), layout


DIFFERENCE_KEY = "difference"  # marks a "diff" ControlNet file (original layout): weights minus an SD1.5 UNet's


def add_base_weights(state: dict[str, Tensor], base: nn.Module | None, name: str) -> dict[str, Tensor]:
    """A diff ControlNet's weights made whole: early ControlNet releases (e.g. diff_control_sd15_depth_fp16)
    store the encoder copy as its difference to the SD1.5 UNet it was trained from, so that adding it to another
    fine-tune's UNet transfers the control to that model. Each weight whose name (and shape) the UNet also has
    gets the UNet's weight added, as ComfyUI's load_controlnet does for DiffControlNetLoader; the hint encoder and
    the zero convolutions have no counterpart and are stored whole."""
    if base is None:
        raise CheckpointError(
            f"{name} is a difference ControlNet (stored minus an SD1.5 UNet); load it with Load ControlNet Model "
            "(diff), which adds it to a model."
        )
    unet = base.state_dict()
    added = [k for k, v in state.items() if k in unet and tuple(unet[k].shape) == tuple(v.shape)]
    if not added:
        raise CheckpointError(f"{name} is a difference ControlNet, but no weight of it matches the model's UNet.")
    # In fp32 and where the file's tensors are (the UNet may live on a GPU, in half precision).
    return {k: v.float() + unet[k].to(v.device, torch.float32) if k in added else v for k, v in state.items()}


def load_controlnet(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    base: nn.Module | None = None,
) -> ControlNet:
    """A ControlNet from one file (either layout) or a diffusers folder; every weight checked against the config.
    `base`: the UNet a difference ControlNet is added to (DiffControlNetLoader), see add_base_weights."""
    path = Path(path)
    weights = controlnet_weights_file(path)
    file = WeightsFile(weights)
    state, layout = state_in_our_names(file)
    if DIFFERENCE_KEY in file.index.shapes:
        state = add_base_weights(state, base, file.name)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        config = controlnet_config(shapes)
    except KeyError as error:
        raise CheckpointError(f"{file.name} looks like a ControlNet but lacks the weight {error}.") from None
    # a diffusers ControlNet folder lists as <folder>/diffusion_pytorch_model.safetensors: its config.json is beside
    settings = unstored_settings(file, weights.parent / "config.json" if layout == "diffusers" else None)
    config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, **settings))
    with torch.device("meta"):
        network = ControlNet(config)
    expected = network.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if tuple(expected[k].shape) != shapes[k])
    if missing or unexpected or wrong:
        problem = (
            f"{len(missing)} missing weights ({keymap.first_names(missing)})" if missing
            else f"{len(unexpected)} unexpected weights ({keymap.first_names(unexpected)})" if unexpected
            else f"weights of the wrong shape ({keymap.first_names(wrong)})"
        )  # fmt: skip
        raise CheckpointError(f"{file.name} looks like a ControlNet ({layout} layout) but has {problem}.")
    network.load_state_dict({k: v.to(device, dtype) for k, v in state.items()}, assign=True)
    return network.eval().requires_grad_(False)


def describe_controlnet(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, ControlNetConfig | None]:
    """(layout, config or None) from the header alone, for `atelier info`."""
    layout = controlnet_layout(shapes)
    if layout is None:
        return "unknown", None
    try:
        if layout == "diffusers":
            return "diffusers (controlnet_cond_embedding, controlnet_down_blocks)", controlnet_config(shapes)
        names = [n for n in shapes if n.startswith("control_model.")] or list(shapes)
        state = {n.removeprefix("control_model."): torch.empty(shapes[n], device="meta") for n in names}
        unet = _original_unet_config({k: tuple(v.shape) for k, v in state.items()}, "the ControlNet")
        ours = keymap.controlnet_from_sd(state, unet, "the ControlNet")
        prefix = "control_model." if names[0].startswith("control_model.") else "no prefix"
        where = f"original / ComfyUI (input_hint_block, zero_convs; {prefix})"
        return where, controlnet_config({k: tuple(v.shape) for k, v in ours.items()})
    except (CheckpointError, KeyError):
        return layout, None


# --------------------------------------------------------------------------------------------------------------
# Applying: hints, strengths and step windows, at every call of the denoiser
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AppliedControlNet:
    """One ControlNet applied to a conditioning (ComfyUI's ControlNetApply / ControlNetApplyAdvanced).

    hint: IMAGE (B, H, W, 3) in [0, 1]; resized to the latent's pixel size when sampling. Active while the
    sampling has done between start_percent and end_percent of the schedule (0 = the first, noisiest step)."""

    network: ControlNet
    hint: Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0


def percent_to_sigma(schedule: DiscreteSchedule, percent: float) -> float:
    """The sigma at `percent` of the way down the schedule, ComfyUI's rule: 0 -> above any sigma, 1 -> 0, else
    the sigma of timestep (1 - percent) * (T - 1), interpolated in log-sigma."""
    if percent <= 0.0:
        return float("inf")
    if percent >= 1.0:
        return 0.0
    return float(schedule.t_to_sigma(torch.tensor((1.0 - percent) * (schedule.num_timesteps - 1))))


def resize_hint(hint: Tensor, height: int, width: int) -> Tensor:
    """IMAGE (B, H, W, 3) -> (B, 3, height, width): scaled to cover the size, centre-cropped to it, resampled with
    nearest-exact (ComfyUI's common_upscale with crop="center", as its ControlNet uses)."""
    x = hint[..., :3].movedim(-1, 1).float()  # (B, 3, H, W)
    h, w = x.shape[-2:]
    if h * width != w * height:  # other aspect: crop to the target's before scaling
        if w * height > h * width:  # too wide
            new_w = round(h * width / height)
            x = x[..., :, (w - new_w) // 2 : (w - new_w) // 2 + new_w]
        else:
            new_h = round(w * height / width)
            x = x[..., (h - new_h) // 2 : (h - new_h) // 2 + new_h, :]
    return F.interpolate(x, size=(height, width), mode="nearest-exact")


class ControlStack:
    """The ControlNets of one conditioning, as the denoiser's `control` callable: (x_in, t, context, sigma,
    schedule) -> the summed residuals of the ControlNets active at sigma, each times its strength, or None.

    `area` (ys, xs) is the slice of the full latent that x_in covers when the conditioning is limited to an area
    (ConditioningSetArea): the hint is resized to the whole latent and cut the same way."""

    def __init__(
        self,
        controls: tuple[AppliedControlNet, ...],
        area: tuple[slice, slice] | None = None,
        full: tuple[int, int] | None = None,
    ) -> None:
        self.controls = controls
        self.area = area
        self.full = full  # (h, w) of the whole latent, when `area` is given
        self._hints: dict[tuple, Tensor] = {}

    def _hint(self, control: AppliedControlNet, index: int, x: Tensor) -> Tensor:
        h, w = self.full if self.full is not None else x.shape[-2:]
        key = (index, h, w, x.shape[0], x.device, x.dtype)
        if key not in self._hints:
            hint = resize_hint(control.hint, 8 * h, 8 * w)  # latents are 8x smaller than pixels
            if self.area is not None:
                ys, xs = self.area
                hint = hint[:, :, 8 * ys.start : 8 * ys.stop, 8 * xs.start : 8 * xs.stop]
            repeats = -(-x.shape[0] // hint.shape[0])  # a hint batch shorter than the latent batch repeats
            self._hints[key] = hint.repeat(repeats, 1, 1, 1)[: x.shape[0]].to(x.device, x.dtype)
        return self._hints[key]

    def __call__(
        self, x: Tensor, t: Tensor, context: Tensor | None, sigma: Tensor, schedule: DiscreteSchedule
    ) -> ControlResiduals | None:
        total: ControlResiduals | None = None
        now = float(sigma.reshape(-1)[0])
        for index, control in enumerate(self.controls):
            start, end = (
                percent_to_sigma(schedule, control.start_percent),
                percent_to_sigma(schedule, control.end_percent),
            )
            if not end <= now <= start:
                continue
            # The ControlNet may hold another dtype than the UNet (a small model's UNet stays in fp32 on a GPU,
            # device.py): it reads its inputs in its own and gives its residuals back in the UNet's.
            dtype = next(control.network.parameters()).dtype
            x_in, ctx = x.to(dtype), context.to(dtype) if context is not None else None
            out = control.network(x_in, t, ctx, self._hint(control, index, x_in))
            strength = control.strength
            out = ControlResiduals([(r * strength).to(x.dtype) for r in out.down], (out.mid * strength).to(x.dtype))
            total = out if total is None else total + out
        return total
