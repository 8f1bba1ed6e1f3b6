"""Upscale models (models/upscale.py): random-weight ESRGAN / Real-ESRGAN files in each key layout load, upscale to
the right size, equal a hand-written functional forward on the raw file weights, and tiled equals untiled."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from atelier.errors import CheckpointError
from atelier.models.info import describe_model
from atelier.models.upscale import load_upscale_model, upscale_image, upscale_tiled

NF, NB, GC = 8, 2, 4  # small: features, RRDBs, growth channels


def conv(g: torch.Generator, c_out: int, c_in: int) -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(c_out, c_in, 3, 3, generator=g) * (0.6 / (9 * c_in) ** 0.5),
            "bias": torch.randn(c_out, generator=g) * 0.01}  # fmt: skip


def real_esrgan_state(seed: int = 0, nf=NF, nb=NB, gc=GC, ups=2, in_ch=3) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's spelling: conv_first, body.N.rdbK.convJ, conv_body, conv_upI, conv_hr, conv_last."""
    g = torch.Generator().manual_seed(seed)
    layers = {"conv_first": conv(g, nf, in_ch)}
    for n in range(nb):
        for k in (1, 2, 3):
            for j in range(1, 6):
                layers[f"body.{n}.rdb{k}.conv{j}"] = conv(g, nf if j == 5 else gc, nf + (j - 1) * gc)
    layers["conv_body"] = conv(g, nf, nf)
    for i in range(1, ups + 1):
        layers[f"conv_up{i}"] = conv(g, nf, nf)
    layers["conv_hr"], layers["conv_last"] = conv(g, nf, nf), conv(g, 3, nf)
    return {f"{name}.{part}": t for name, parts in layers.items() for part, t in parts.items()}


def to_old_esrgan(state: dict[str, torch.Tensor], nb=NB, ups=2) -> dict[str, torch.Tensor]:
    """The same weights in the 2018 ESRGAN spelling, written from its nn.Sequential: model.0 conv, model.1.sub
    (RRDBs with convs wrapped as convJ.0, then the trunk conv), then (Upsample, conv, act) per factor 2, conv, act,
    conv."""
    tops = {"conv_first": 0}
    index = 1
    for i in range(1, ups + 1):
        tops[f"conv_up{i}"] = index + 2  # after the shortcut (or the previous act): Upsample, then the conv
        index += 3
    tops["conv_hr"] = index + 1  # after the last act (or the shortcut when there is no upsampling)
    tops["conv_last"] = tops["conv_hr"] + 2
    out = {}
    for name, t in state.items():
        if m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", name):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = t
        elif name.startswith("conv_body."):
            out[f"model.1.sub.{nb}.{name.split('.')[1]}"] = t
        else:
            layer, part = name.split(".")
            out[f"model.{tops[layer]}.{part}"] = t
    return out


def reference_rrdbnet(s: dict[str, torch.Tensor], x: torch.Tensor, unshuffle: int = 1) -> torch.Tensor:
    """ESRGAN's forward written out with F.conv2d on the Real-ESRGAN-named weights (independent of the module)."""

    def c(name, t):
        return F.conv2d(t, s[name + ".weight"], s[name + ".bias"], padding=1)

    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    if unshuffle > 1:
        x = F.pixel_unshuffle(x, unshuffle)
    fea = c("conv_first", x)
    trunk = fea
    nb = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("body."))
    for n in range(nb):
        block_in = trunk
        for k in (1, 2, 3):
            p = f"body.{n}.rdb{k}"
            x1 = lrelu(c(p + ".conv1", trunk))
            x2 = lrelu(c(p + ".conv2", torch.cat((trunk, x1), 1)))
            x3 = lrelu(c(p + ".conv3", torch.cat((trunk, x1, x2), 1)))
            x4 = lrelu(c(p + ".conv4", torch.cat((trunk, x1, x2, x3), 1)))
            x5 = c(p + ".conv5", torch.cat((trunk, x1, x2, x3, x4), 1))
            trunk = x5 * 0.2 + trunk
        trunk = trunk * 0.2 + block_in
    fea = fea + c("conv_body", trunk)
    i = 1
    while f"conv_up{i}.weight" in s:
        fea = lrelu(c(f"conv_up{i}", F.interpolate(fea, scale_factor=2, mode="nearest")))
        i += 1
    return c("conv_last", lrelu(c("conv_hr", fea)))


def image(h=20, w=28, seed=1) -> torch.Tensor:
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))  # IMAGE (B, H, W, 3)


@pytest.mark.parametrize("layout", ["real-esrgan", "esrgan-old", "basicsr-2019"])
def test_rrdbnet_x4_in_each_layout_equals_the_reference(tmp_path, layout):
    state = real_esrgan_state()
    stored = {
        "real-esrgan": lambda s: s,
        "esrgan-old": to_old_esrgan,
        "basicsr-2019": lambda s: {
            re.sub(r"\.rdb(\d)\.", r".RDB\1.", k.replace("body.", "RRDB_trunk.", 1) if k.startswith("body.") else k)
            .replace("conv_body.", "trunk_conv.")
            .replace("conv_hr.", "HRconv.")
            .replace("conv_up", "upconv"): v
            for k, v in s.items()
        },
    }[layout](state)
    path = tmp_path / "4x_model.safetensors"
    save_file(stored, str(path))
    model = load_upscale_model(path)
    assert model.scale == 4 and model.network.config.blocks == NB and model.network.config.features == NF
    spelled = {"real-esrgan": "Real-ESRGAN key layout", "esrgan-old": "old ESRGAN", "basicsr-2019": "BasicSR 2019"}
    assert spelled[layout] in model.architecture
    img = image()
    out = upscale_image(model, img)
    assert out.shape == (1, 80, 112, 3)
    expected = reference_rrdbnet(state, img.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert "ESRGAN RRDBNet" in describe_model(path) and "x4" in describe_model(path)


@pytest.mark.parametrize(("ups", "scale"), [(0, 1), (1, 2), (3, 8)])
def test_old_esrgan_scale_comes_from_the_number_of_upsampling_convs(tmp_path, ups, scale):
    state = real_esrgan_state(nb=1, ups=ups)
    path = tmp_path / "model.safetensors"
    save_file(to_old_esrgan(state, nb=1, ups=ups), str(path))
    model = load_upscale_model(path)
    img = image(8, 12)
    out = upscale_image(model, img)
    assert model.scale == scale and out.shape == (1, 8 * scale, 12 * scale, 3)
    expected = reference_rrdbnet(state, img.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_real_esrgan_x2_folds_its_input_and_loads_from_a_params_ema_pth(tmp_path):
    """RealESRGAN_x2plus: pixel unshuffle by 2 (conv_first sees 12 channels), 4x inside: x2 overall; saved as
    {"params_ema": state_dict} in a .pth, read with weights_only=True."""
    state = real_esrgan_state(in_ch=12)
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": state}, path)
    model = load_upscale_model(path)
    assert model.scale == 2 and model.network.config.unshuffle == 2
    img = image(16, 24)
    out = upscale_image(model, img)
    assert out.shape == (1, 32, 48, 3)
    expected = reference_rrdbnet(state, img.permute(0, 3, 1, 2), unshuffle=2).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_compact_network_equals_the_reference(tmp_path):
    g = torch.Generator().manual_seed(3)
    state, convs = {}, 3
    channels = [3] + [8] * (convs + 1) + [3 * 16]
    for i in range(convs + 2):  # conv, PReLU pairs, then the last conv: body.0, 1, 2, ..., 2 (convs + 1)
        layer = conv(g, channels[i + 1], channels[i])
        state[f"body.{2 * i}.weight"], state[f"body.{2 * i}.bias"] = layer["weight"], layer["bias"]
        if i < convs + 1:
            state[f"body.{2 * i + 1}.weight"] = torch.rand(8, generator=g) * 0.3
    path = tmp_path / "realesr-general-x4v3.safetensors"
    save_file(state, str(path))
    model = load_upscale_model(path)
    img = image(10, 14)
    x = img.permute(0, 3, 1, 2)
    h = x
    for i in range(convs + 2):
        h = F.conv2d(h, state[f"body.{2 * i}.weight"], state[f"body.{2 * i}.bias"], padding=1)
        if i < convs + 1:
            h = F.prelu(h, state[f"body.{2 * i + 1}.weight"])
    expected = (F.pixel_shuffle(h, 4) + F.interpolate(x, scale_factor=4)).clamp(0, 1).permute(0, 2, 3, 1)
    out = upscale_image(model, img)
    assert model.scale == 4 and out.shape == (1, 40, 56, 3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert "SRVGGNetCompact" in describe_model(path)


def test_tiled_equals_untiled_and_reports_progress(tmp_path):
    """One RRDB: its receptive field (17 input pixels each way, plus the upsampled convs' share) fits in the
    20-pixel margin, so tiles of 16 with that margin give the whole-image result."""
    path = tmp_path / "x4.safetensors"
    save_file(real_esrgan_state(nb=1), str(path))
    model = load_upscale_model(path)
    x = image(40, 52).permute(0, 3, 1, 2)
    whole = model.network(x)
    seen = []
    tiled = upscale_tiled(model.network, x, 4, tile=16, overlap=20, on_tile=lambda d, t: seen.append((d, t)))
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    assert seen == [(i, 12) for i in range(1, 13)]  # 3 rows x 4 columns
    # ComfyUI's own tiles (512, overlap 32) on an image smaller than one tile: a single pass
    assert torch.equal(upscale_tiled(model.network, x, 4), whole)


def test_out_of_memory_halves_the_tile(monkeypatch, tmp_path):
    path = tmp_path / "x4.safetensors"
    save_file(real_esrgan_state(nb=1), str(path))
    model = load_upscale_model(path)
    tiles = []
    real = upscale_tiled

    def flaky(network, pixels, scale, tile, overlap, on_tile):
        tiles.append(tile)
        if tile > 128:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(network, pixels, scale, tile, overlap, on_tile)

    monkeypatch.setattr("atelier.models.upscale.upscale_tiled", flaky)
    assert upscale_image(model, image(8, 8)).shape == (1, 32, 32, 3)
    assert tiles == [512, 256, 128]


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_files_get_one_sentence(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match=r"^other.safetensors is not an upscale model Atelier can read"):
        load_upscale_model(path)
    state = real_esrgan_state()
    del state["body.1.rdb2.conv3.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"looks like ESRGAN RRDBNet .* but has 1 missing weights"):
        load_upscale_model(path)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv_first.weight": Payload()}, f)
    with pytest.raises(CheckpointError, match="needs to run code from the pickle"):
        load_upscale_model(evil)
    truncated = tmp_path / "cut.safetensors"
    save_file(real_esrgan_state(), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_upscale_model(truncated)


class StopAfter:
    """A node context whose check_interrupt raises once `tiles` progress reports have come (a user pressing stop)."""

    def __init__(self, tiles: int) -> None:
        self.tiles, self.reports = tiles, []

    def progress(self, value, total):
        self.reports.append((value, total))

    def check_interrupt(self):
        if len(self.reports) >= self.tiles:
            raise KeyboardInterrupt("stopped")


def test_the_node_reports_each_tile_and_stops_between_tiles(tmp_path, monkeypatch):
    from atelier.graph.nodes.upscale import ImageUpscaleWithModel

    path = tmp_path / "x4.safetensors"
    save_file(real_esrgan_state(nb=1), str(path))
    model = load_upscale_model(path)
    monkeypatch.setattr("atelier.graph.nodes.upscale.TILE", 8)  # 16x24 input: 2 x 3 tiles
    done = StopAfter(tiles=100)
    (out,) = ImageUpscaleWithModel().run(done, model, image(16, 24))
    assert out.shape == (1, 64, 96, 3) and done.reports == [(i, 6) for i in range(1, 7)]
    stop = StopAfter(tiles=2)
    with pytest.raises(KeyboardInterrupt):
        ImageUpscaleWithModel().run(stop, model, image(16, 24))
    assert stop.reports == [(1, 6), (2, 6)]
