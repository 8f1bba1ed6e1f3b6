"""Upscale models: super-resolution networks that turn an image into one 2x or 4x larger, read from their weights.

ComfyUI reads these files with `spandrel`, which cannot be installed beside Atelier's torch; this module reads the
two families that most shared files are, with the architecture written out:

ESRGAN (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
https://arxiv.org/abs/1809.00219) and its Real-ESRGAN retraining (Wang et al. 2021, https://arxiv.org/abs/2107.10833)
share one network, RRDBNet:

    x (B, 3, H, W) -> conv_first -> nf channels
       -> nb x RRDB (Residual-in-Residual Dense Block) -> conv_body, added back to the features (a long skip)
       -> (nearest 2x upsample -> conv -> LeakyReLU) once per factor 2
       -> conv_hr -> LeakyReLU -> conv_last -> (B, 3, H * scale, W * scale)

An RRDB is three dense blocks in a row, each of five convolutions where every conv sees the block's input and all
earlier outputs (nf + k * gc channels in, gc = 32 "growth" channels out), the fifth giving nf channels back. Each
dense block and each RRDB adds its output scaled by 0.2 to its input ("residual scaling", ESRGAN section 3.1).

Real-ESRGAN x2 (and x1) models always upsample 4x inside, and first fold every 2x2 (4x4) patch of the input into
channels (pixel unshuffle): conv_first then sees 12 (48) channels, and the net scale is 4 / 2 (4 / 4).

The same weights come in three spellings, renamed here to the one of Real-ESRGAN / BasicSR:

    old ESRGAN (the 2018 repository)       model.0 | model.1.sub.N.RDB1.conv1.0 | model.1.sub.{nb} | model.3 ...
    BasicSR 2019                           conv_first | RRDB_trunk.N.RDB1.conv1 | trunk_conv | upconv1 | HRconv
    Real-ESRGAN / BasicSR today            conv_first | body.N.rdb1.conv1 | conv_body | conv_up1 | conv_hr | conv_last

Real-ESRGAN's compact network SRVGGNetCompact (`body.N.weight`: conv, PReLU, conv, PReLU, ..., conv) is read too:
a plain stack of 3x3 convolutions at the input size, a pixel shuffle to the output size, plus the nearest-upsampled
input (so the network learns only the residual).

Large images are upscaled in tiles (`upscale_tiled`): each tile is cut with a margin of context around it and only
its centre is kept, so as long as the network's receptive field fits in the margin the result equals the untiled one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atelier.errors import CheckpointError
from atelier.models.weights import WeightsFile

# --------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RRDBNetConfig:
    """ESRGAN's RRDBNet. `scale` is the net factor (output / input); `unshuffle` folds unshuffle x unshuffle patches
    into channels first (Real-ESRGAN x2: 2, x1: 4), so the network upsamples `scale * unshuffle` inside."""

    in_channels: int = 3
    out_channels: int = 3
    features: int = 64  # nf
    blocks: int = 23  # nb, the number of RRDBs
    growth: int = 32  # gc, channels each dense conv adds
    scale: int = 4
    unshuffle: int = 1

    @property
    def upsamplings(self) -> int:
        """How many (nearest 2x, conv) steps the network takes: log2 of scale * unshuffle."""
        return (self.scale * self.unshuffle).bit_length() - 1


@dataclass(frozen=True)
class CompactConfig:
    """Real-ESRGAN's SRVGGNetCompact: `convs` hidden 3x3 convs of `features` channels, each followed by a PReLU."""

    in_channels: int = 3
    out_channels: int = 3
    features: int = 64
    convs: int = 16
    scale: int = 4


# --------------------------------------------------------------------------------------------------------------
# RRDBNet
# --------------------------------------------------------------------------------------------------------------


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class DenseBlock(nn.Module):
    """Five convs; conv k sees the input and the k-1 earlier outputs concatenated (ESRGAN Fig. 4, "RDB")."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.conv1 = _conv(features, growth)
        self.conv2 = _conv(features + growth, growth)
        self.conv3 = _conv(features + 2 * growth, growth)
        self.conv4 = _conv(features + 3 * growth, growth)
        self.conv5 = _conv(features + 4 * growth, features)

    def forward(self, x: Tensor) -> Tensor:  # (B, nf, h, w) -> (B, nf, h, w)
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, dim=1)), 0.2))  # each adds gc channels
        return x + 0.2 * self.conv5(torch.cat(seen, dim=1))  # residual scaling by 0.2


class RRDB(nn.Module):
    """Three dense blocks, and their sum scaled by 0.2 added to the input (residual in residual)."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(features, growth)
        self.rdb2 = DenseBlock(features, growth)
        self.rdb3 = DenseBlock(features, growth)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN's generator; parameter names follow Real-ESRGAN (see the module docstring for the other spellings)."""

    def __init__(self, config: RRDBNetConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.features
        self.conv_first = _conv(config.in_channels * config.unshuffle**2, nf)
        self.body = nn.Sequential(*[RRDB(nf, config.growth) for _ in range(config.blocks)])
        self.conv_body = _conv(nf, nf)
        for i in range(1, config.upsamplings + 1):
            self.add_module(f"conv_up{i}", _conv(nf, nf))
        self.conv_hr = _conv(nf, nf)
        self.conv_last = _conv(nf, config.out_channels)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 3, H * scale, W * scale)
        c = self.config
        if c.unshuffle > 1:
            x = F.pixel_unshuffle(x, c.unshuffle)  # (B, 3 r^2, H / r, W / r)
        # --- features at the input size, with the long skip around the RRDB trunk ---
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        # --- upsampling: nearest 2x then a conv, once per factor 2 ---
        for i in range(1, c.upsamplings + 1):
            feat = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{i}")(feat), 0.2)
        # --- back to RGB ---
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network (realesr-general-x4v3, realesr-animevideov3): `body` holds conv, PReLU, ...,
    conv in one sequence, as in the files."""

    def __init__(self, config: CompactConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.features
        layers: list[nn.Module] = [_conv(config.in_channels, nf), nn.PReLU(nf)]
        for _ in range(config.convs):
            layers += [_conv(nf, nf), nn.PReLU(nf)]
        layers.append(_conv(nf, config.out_channels * config.scale**2))
        self.body = nn.Sequential(*layers)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 3, H * scale, W * scale)
        out = F.pixel_shuffle(self.body(x), self.config.scale)  # (B, 3 s^2, H, W) -> (B, 3, sH, sW)
        return out + F.interpolate(x, scale_factor=self.config.scale, mode="nearest")  # learn the residual only


UpscaleNetwork = RRDBNet | SRVGGNetCompact


# --------------------------------------------------------------------------------------------------------------
# Key layouts: every spelling renamed to the modules' own names (small pure functions)
# --------------------------------------------------------------------------------------------------------------

_CONTAINERS = ("params_ema.", "params.", "state_dict.", "model_state_dict.")


def strip_container(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Real-ESRGAN saves {"params_ema": {...}} (and sometimes "params" beside it; the EMA copy is the one to use);
    the weights reader flattens that to "params_ema.<name>". Returns the weights under their own names."""
    for prefix in _CONTAINERS:
        inner = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            return {k.removeprefix("module."): v for k, v in inner.items()}
    return {k.removeprefix("module."): v for k, v in state.items()}


def layout_of(names: list[str] | Mapping[str, object]) -> str | None:
    """Which spelling a state dict uses: "esrgan-old", "basicsr-2019", "real-esrgan", "compact", or None."""
    names = set(names)
    if "model.0.weight" in names and any(n.startswith("model.1.sub.") for n in names):
        return "esrgan-old"
    if "conv_first.weight" in names and any(n.startswith("RRDB_trunk.") for n in names):
        return "basicsr-2019"
    if "conv_first.weight" in names and any(n.startswith("body.") for n in names) and "conv_last.weight" in names:
        return "real-esrgan"
    if "body.0.weight" in names and all(re.fullmatch(r"body\.\d+\.(weight|bias)", n) for n in names):
        return "compact"
    return None


def rename_old_esrgan(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The 2018 ESRGAN spelling -> Real-ESRGAN's.

    Old ESRGAN is one nn.Sequential `model`: 0 conv_first, 1 a shortcut holding `sub` (the nb RRDBs, then the trunk
    conv as sub.{nb}), then per factor 2 (Upsample, conv, LeakyReLU), then conv_hr, LeakyReLU, conv_last. Its convs
    are wrapped once more (`conv1.0.weight`). So the top-level indices after 1 that hold weights are the upsampling
    convs, then conv_hr and conv_last: x4 is 3, 6, 8, 10; x2 is 3, 5, 7; x1 is 2, 4.
    """
    out: dict[str, Tensor] = {}
    tops = sorted({int(m.group(1)) for n in state if (m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", n))} - {0})
    if len(tops) < 2:
        raise CheckpointError("the ESRGAN file has no conv_hr / conv_last layers after its trunk (model.N).")
    top_names = {i: f"conv_up{k + 1}" for k, i in enumerate(tops[:-2])} | {tops[-2]: "conv_hr", tops[-1]: "conv_last"}
    trunk = max(int(m.group(1)) for n in state if (m := re.match(r"model\.1\.sub\.(\d+)\.weight", n)))
    for name, tensor in state.items():
        if m := re.fullmatch(r"model\.(\d+)\.(weight|bias)", name):
            index, kind = int(m.group(1)), m.group(2)
            out[f"{'conv_first' if index == 0 else top_names[index]}.{kind}"] = tensor
        elif m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", name):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = tensor
        elif m := re.fullmatch(rf"model\.1\.sub\.{trunk}\.(weight|bias)", name):
            out[f"conv_body.{m.group(1)}"] = tensor
        else:
            out[name] = tensor  # reported as unexpected by the loader
    return out


def rename_basicsr_2019(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """BasicSR's 2019 spelling (RRDB_trunk, trunk_conv, upconvN, HRconv, RDBk) -> Real-ESRGAN's."""
    out = {}
    for name, tensor in state.items():
        new = name.replace("RRDB_trunk.", "body.").replace("trunk_conv.", "conv_body.").replace("HRconv.", "conv_hr.")
        new = re.sub(r"^upconv(\d)\.", r"conv_up\1.", new)
        new = re.sub(r"\.RDB(\d)\.", r".rdb\1.", new)
        out[new] = tensor
    return out


def rrdbnet_config(state: Mapping[str, Tensor]) -> RRDBNetConfig:
    """The RRDBNet config read off the (Real-ESRGAN-named) weights: nf, nb, gc, channels, scale and unshuffle."""
    first = state["conv_first.weight"]  # (nf, in * r^2, 3, 3)
    last = state["conv_last.weight"]  # (out, nf, 3, 3)
    blocks = 1 + max(int(m.group(1)) for n in state if (m := re.match(r"body\.(\d+)\.", n)))
    growth = state["body.0.rdb1.conv1.weight"].shape[0]
    upsamplings = sum(1 for n in state if re.fullmatch(r"conv_up\d\.weight", n))
    out_channels = last.shape[0]
    # Real-ESRGAN x2 / x1 fold the input into 4x / 16x the channels (in = out * r^2); ESRGAN's own have r = 1.
    unshuffle = {1: 1, 4: 2, 16: 4}.get(first.shape[1] // out_channels, 1) if first.shape[1] % out_channels == 0 else 1
    inside = 2**upsamplings
    if inside % unshuffle:
        raise CheckpointError(f"the RRDBNet folds its input by {unshuffle} but upsamples only {inside}x.")
    return RRDBNetConfig(
        in_channels=first.shape[1] // unshuffle**2,
        out_channels=out_channels,
        features=first.shape[0],
        blocks=blocks,
        growth=growth,
        scale=inside // unshuffle,
        unshuffle=unshuffle,
    )


def compact_config(state: Mapping[str, Tensor]) -> CompactConfig:
    """SRVGGNetCompact's config: the conv count from `body.N`, the scale from the last conv's out = 3 * scale^2."""
    convs = sorted(int(n.split(".")[1]) for n, t in state.items() if n.endswith(".weight") and t.ndim == 4)
    first, last = state[f"body.{convs[0]}.weight"], state[f"body.{convs[-1]}.weight"]
    in_channels = first.shape[1]
    scale = round((last.shape[0] / in_channels) ** 0.5)
    return CompactConfig(in_channels, in_channels, first.shape[0], len(convs) - 2, scale)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------

LAYOUT_NAMES = {
    "esrgan-old": "ESRGAN RRDBNet (old ESRGAN key layout, model.N)",
    "basicsr-2019": "ESRGAN RRDBNet (BasicSR 2019 key layout, RRDB_trunk)",
    "real-esrgan": "ESRGAN RRDBNet (Real-ESRGAN key layout, conv_first / body / conv_body)",
    "compact": "Real-ESRGAN SRVGGNetCompact",
}


@dataclass
class UpscaleModel:
    """What UPSCALE_MODEL carries: the network, its factor, and what it was read as (for messages)."""

    network: UpscaleNetwork
    scale: int
    name: str
    architecture: str

    def __str__(self) -> str:
        return f"{self.name}: {self.architecture}, x{self.scale}"


def network_from_state(state: Mapping[str, Tensor], name: str) -> tuple[UpscaleNetwork, str]:
    """The network (weights in) for a state dict in any supported spelling, and the layout it was read as.
    Raises one sentence naming the file when the weights are no known upscaler or do not fit the architecture."""
    state = strip_container(state)
    layout = layout_of(state)
    if layout is None:
        found = ", ".join(sorted(state)[:3]) or "no tensors"
        raise CheckpointError(
            f"{name} is not an upscale model Atelier can read (found {found}); expected an ESRGAN / Real-ESRGAN "
            "RRDBNet or a Real-ESRGAN compact network."
        )
    renames: dict[str, Callable[[Mapping[str, Tensor]], dict[str, Tensor]]] = {
        "esrgan-old": rename_old_esrgan,
        "basicsr-2019": rename_basicsr_2019,
    }
    try:
        state = renames.get(layout, dict)(state)
        network: UpscaleNetwork
        network = SRVGGNetCompact(compact_config(state)) if layout == "compact" else RRDBNet(rrdbnet_config(state))
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    except (KeyError, IndexError, ValueError) as error:
        raise CheckpointError(f"{name} looks like {LAYOUT_NAMES[layout]} but lacks {error} to build it.") from None
    expected = network.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if tuple(expected[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        problem = (
            f"{len(missing)} missing weights (e.g. {missing[0]})" if missing
            else f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})" if unexpected
            else f"{len(wrong)} weights of the wrong shape (e.g. {wrong[0]})"
        )  # fmt: skip
        raise CheckpointError(f"{name} looks like {LAYOUT_NAMES[layout]} but has {problem}; incomplete or other file.")
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return network.eval().requires_grad_(False), layout


def load_upscale_model(path: str | Path, device: str | torch.device = "cpu") -> UpscaleModel:
    """An upscale model file (.safetensors, or a .pth opened with torch.load(weights_only=True)), ready to run."""
    file = WeightsFile(path)
    state = file.read(list(file.index.shapes))
    network, layout = network_from_state(state, file.name)
    return UpscaleModel(network.to(device), network.scale, file.name, LAYOUT_NAMES[layout])


def describe_upscaler(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, str] | None:
    """(architecture, config) of an upscaler from its tensor shapes alone (atelier info), or None if it is none."""
    state = {k: torch.empty(s, device="meta") for k, s in strip_container(shapes).items()}
    layout = layout_of(state)
    if layout is None:
        return None
    try:
        state = {"esrgan-old": rename_old_esrgan, "basicsr-2019": rename_basicsr_2019}.get(layout, dict)(state)
        config = compact_config(state) if layout == "compact" else rrdbnet_config(state)
    except (CheckpointError, KeyError, IndexError, ValueError):
        return LAYOUT_NAMES[layout], "its config could not be read from the shapes (incomplete file?)"
    return LAYOUT_NAMES[layout], f"x{config.scale}, {config}"


# --------------------------------------------------------------------------------------------------------------
# Running: tiles with a margin of context, only their centres kept
# --------------------------------------------------------------------------------------------------------------

TILE = 512  # input pixels per tile side, as ComfyUI's ImageUpscaleWithModel starts with
OVERLAP = 32  # context kept around each tile, in input pixels (ComfyUI's overlap)
MIN_TILE = 128  # the smallest tile tried after running out of memory


def upscale_tiled(
    network: nn.Module,
    image: Tensor,
    scale: int,
    tile: int = TILE,
    overlap: int = OVERLAP,
    on_tile: Callable[[int, int], None] | None = None,
) -> Tensor:
    """`network` applied to `image` (B, C, H, W) in tiles of `tile` x `tile` input pixels -> (B, C', sH, sW) on
    the image's device.

    Each tile is cut with `overlap` pixels of its neighbours around it (fewer at the image's edges, where the
    network pads with zeros as it would on the whole image), run, and only the part of the output that belongs to
    the tile itself is kept. `on_tile(done, total)` is called after each tile (progress; it may raise to stop).
    """
    b, _, h, w = image.shape
    param = next(network.parameters())
    out: Tensor | None = None
    rows, cols = range(0, h, tile), range(0, w, tile)
    total, done = len(rows) * len(cols), 0
    for top in rows:
        for left in cols:
            bottom, right = min(top + tile, h), min(left + tile, w)
            # the tile plus its margin of context, clipped to the image
            y0, x0, y1, x1 = (
                max(top - overlap, 0),
                max(left - overlap, 0),
                min(bottom + overlap, h),
                min(right + overlap, w),
            )
            with torch.no_grad():
                result = network(image[:, :, y0:y1, x0:x1].to(param.device, param.dtype))  # (B, C', s(y1-y0), .)
            if out is None:
                out = torch.empty(b, result.shape[1], h * scale, w * scale, dtype=image.dtype, device=image.device)
            # keep the tile's own pixels: drop the margin, now `scale` times larger
            dy, dx = (top - y0) * scale, (left - x0) * scale
            core = result[:, :, dy : dy + (bottom - top) * scale, dx : dx + (right - left) * scale]
            out[:, :, top * scale : bottom * scale, left * scale : right * scale] = core.to(out.device, out.dtype)
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None
    return out


def upscale_image(
    model: UpscaleModel,
    image: Tensor,
    tile: int = TILE,
    overlap: int = OVERLAP,
    on_tile: Callable[[int, int], None] | None = None,
) -> Tensor:
    """IMAGE (B, H, W, 3) in [0, 1] -> IMAGE (B, sH, sW, 3) in [0, 1], in tiles; on running out of GPU memory the
    tile side is halved (down to MIN_TILE), as ComfyUI does."""
    pixels = image[..., :3].permute(0, 3, 1, 2)  # (B, 3, H, W)
    while True:
        try:
            out = upscale_tiled(model.network, pixels, model.scale, tile, overlap, on_tile)
            break
        except torch.OutOfMemoryError:
            if tile // 2 < MIN_TILE:
                raise
            tile //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return out.clamp(0, 1).permute(0, 2, 3, 1).contiguous()
