"""Teaching nodes: object_info in ComfyUI's format, film strips through the executor with the embedded model,
latent channels, the token table, cross-attention maps, the sigma plot, animated WebP and Preview Any."""

import json
import re
import types

import pytest
import torch
from PIL import Image

from atelier.errors import InputError
from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor, Interrupted
from atelier.graph.kit import ClipModel
from atelier.graph.teaching import (
    PLOT_SIZE,
    TEACHING_NODES,
    channel_images,
    token_table,
)
from atelier.graph.validation import validate_prompt
from atelier.pipeline import latent_preview
from atelier.plots import PALETTE
from atelier.sampling.denoisers import DiscreteSchedule
from atelier.sampling.schedules import SCHEDULERS, sigmas_for
from atelier.server.files import DataDir, OutputFiles

PROMPT = "a big red circle on the left"


class Ctx:
    """A node context that records progress and never interrupts."""

    node_id, prompt, extra_pnginfo = "1", {}, None

    def __init__(self) -> None:
        self.progress_calls: list[tuple] = []

    def progress(self, value, total) -> None:
        self.progress_calls.append((value, total))

    def preview(self, image) -> None:
        pass

    def check_interrupt(self) -> None:
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return DataDir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def registry(data):
    return default_registry(data.models, OutputFiles(data))


def node(registry, name):
    return registry.get(name)()


@pytest.fixture(scope="module")
def embedded(registry):
    """(MODEL, CLIP, VAE) of the embedded 128x128 model, loaded once through the core loader node."""
    return node(registry, "CheckpointLoaderSimple").run(Ctx(), "embedded.safetensors")


@pytest.fixture(scope="module")
def tokenizer(embedded):
    return embedded[1].tokenizer


# ---- object_info ------------------------------------------------------------------------------------------------

OBJECT_INFO_KEYS = {
    "input",
    "input_order",
    "output",
    "output_is_list",
    "output_name",
    "name",
    "display_name",
    "description",
    "python_module",
    "category",
    "output_node",
    "output_tooltips",
}


def test_every_teaching_node_is_registered_with_comfyui_object_info(registry):
    info = registry.object_info()
    json.dumps(info)  # the editor receives it as JSON
    names = [cls.SCHEMA.name for cls in TEACHING_NODES]
    assert names == [
        "AtelierFilmStripSampler",
        "AtelierLatentChannels",
        "AtelierTokenInspector",
        "AtelierCrossAttentionMap",
        "AtelierSigmaSchedule",
        "SaveAnimatedWEBP",
        "PreviewAny",
    ]
    for name in names:
        entry = info[name]
        assert set(entry) == OBJECT_INFO_KEYS
        assert entry["name"] == name and len(entry["description"]) > 40
        assert entry["input_order"] == {kind: list(entries) for kind, entries in entry["input"].items()}
        assert len(entry["output"]) == len(entry["output_name"]) == len(entry["output_tooltips"])
        for kind in ("required", "optional"):
            for input_name, spec in entry["input"].get(kind, {}).items():
                assert spec[-1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        if name.startswith("Atelier"):
            assert entry["category"] == "atelier"
            assert entry["display_name"] != name and " " in entry["display_name"]
            assert all(entry["output_tooltips"])


def test_film_strip_takes_exactly_the_ksampler_inputs_plus_an_optional_vae(registry):
    strip, ksampler = registry.object_info()["AtelierFilmStripSampler"], registry.object_info()["KSampler"]
    assert strip["input"]["required"] == ksampler["input"]["required"]
    assert strip["input_order"]["required"] == ksampler["input_order"]["required"]
    assert strip["input"]["optional"] == {"vae": ["VAE", strip["input"]["optional"]["vae"][1]]}
    assert strip["output"] == ["LATENT", "IMAGE", "IMAGE"]
    assert strip["output_name"] == ["latent", "noisy", "predicted"]


def test_object_info_of_the_other_nodes(registry):
    info = registry.object_info()
    assert info["AtelierLatentChannels"]["input"]["required"]["normalize"][0] == ["shared symmetric", "per channel"]
    assert info["AtelierLatentChannels"]["output"] == ["IMAGE", "STRING"]
    assert info["AtelierTokenInspector"]["output_node"] is True
    assert info["AtelierTokenInspector"]["output"] == ["STRING"]
    attention = info["AtelierCrossAttentionMap"]
    assert attention["input_order"]["required"] == [
        "model",
        "clip",
        "vae",
        "text",
        "word",
        "seed",
        "steps",
        "cfg",
        "width",
        "height",
    ]
    assert attention["output"] == ["IMAGE", "IMAGE", "MASK"]
    schedule = info["AtelierSigmaSchedule"]
    assert schedule["input"]["required"]["scheduler"][0] == list(SCHEDULERS)
    assert schedule["input"]["required"]["log_scale"][0] == "BOOLEAN"
    assert schedule["output"] == ["IMAGE", "STRING"]
    assert info["PreviewAny"]["input"]["required"] == {"source": ["*", {"tooltip": "The value to show."}]}
    assert info["PreviewAny"]["output_node"] is True and info["PreviewAny"]["category"] == "utils"


def test_save_animated_webp_has_comfyui_inputs(registry):
    entry = registry.object_info()["SaveAnimatedWEBP"]
    required = entry["input"]["required"]
    assert list(required) == ["images", "filename_prefix", "fps", "lossless", "quality", "method"]
    assert entry["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    fps = required["fps"][1]
    assert (fps["default"], fps["min"], fps["max"], fps["step"]) == (6.0, 0.01, 1000.0, 0.01)
    assert required["lossless"][1]["default"] is True
    assert (required["quality"][1]["default"], required["quality"][1]["min"], required["quality"][1]["max"]) == (
        80,
        0,
        100,
    )
    assert required["method"][0] == ["default", "fastest", "slowest"]
    assert entry["output"] == [] and entry["output_node"] is True and entry["category"] == "image/animation"


# ---- film strip: one graph through the executor ---------------------------------------------------------------


def film_strip_prompt(steps: int = 4) -> dict:
    sampling = {
        "seed": 7,
        "steps": steps,
        "cfg": 6.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "positive": ["2", 0],
        "negative": ["3", 0],
        "latent_image": ["4", 0],
        "denoise": 1.0,
    }
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "embedded.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "5": {"class_type": "AtelierFilmStripSampler", "inputs": {"model": ["1", 0], **sampling, "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 2], "filename_prefix": "strip"}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["1", 0], **sampling}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
        "12": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["5", 1],
                "filename_prefix": "noisy",
                "fps": 4.0,
                "lossless": False,
                "quality": 80,
                "method": "fastest",
            },
        },
    }


def roughness(image: torch.Tensor) -> float:
    """Mean absolute difference between horizontally neighbouring pixels: high for noise, low for flat shapes."""
    return float((image[:, 1:] - image[:, :-1]).abs().mean())


def test_film_strip_through_the_executor(registry, data):
    prompt = film_strip_prompt(steps=4)
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    log = EventLog()
    result = Executor(registry).execute(checked.prompt, checked.outputs, log)
    assert result.status == "success", result.error

    latent, noisy, predicted = (values[0] for values in result.outputs["5"])
    assert noisy.shape == predicted.shape == (4, 128, 128, 3)
    assert float(noisy.min()) >= 0.0 and float(predicted.max()) <= 1.0
    # Filming does not change the sampling: the latent is the KSampler's, to the last bit.
    assert torch.equal(latent["samples"], result.outputs["9"][0][0]["samples"])
    # The last prediction is the final image (euler's last step to sigma 0 lands on the prediction).
    final = result.outputs["7"][0][0]
    assert (predicted[-1] - final[0]).abs().max() < 1e-4
    # The first noisy frame is noise: rough, and unlike the final image; the strip gets smoother as it goes.
    assert roughness(noisy[0]) > 5 * roughness(final[0])
    assert (noisy[0] - final[0]).abs().mean() > 0.2
    assert roughness(noisy[0]) > roughness(noisy[-1])
    # Progress is reported once per step, like the KSampler's.
    assert [p for p in log.payloads("progress") if p[0] == "5"] == [("5", i, 4) for i in range(1, 5)]
    # Every frame of the predicted strip saved; the noisy strip as one 4-frame animation.
    assert [ref["filename"] for ref in result.ui["6"]["images"]] == [f"strip_{i:05d}_.png" for i in range(1, 5)]
    assert result.ui["12"]["animated"] == [True]
    with Image.open(data.output / result.ui["12"]["images"][0]["filename"]) as webp:
        assert webp.n_frames == 4 and webp.size == (128, 128)
        assert webp.getexif()[0x0110].startswith('prompt:{"1": {"class_type": "CheckpointLoaderSimple"')


def test_film_strip_without_vae_uses_the_linear_preview_map(registry, embedded):
    model, clip, _ = embedded
    positive = node(registry, "CLIPTextEncode").run(Ctx(), PROMPT, clip)[0]
    negative = node(registry, "CLIPTextEncode").run(Ctx(), "", clip)[0]
    latent = {"samples": torch.zeros(1, 4, 16, 16)}
    ctx = Ctx()
    out, noisy, predicted = node(registry, "AtelierFilmStripSampler").run(
        ctx, model, 3, 2, 5.0, "euler", "karras", positive, negative, latent, 1.0
    )
    assert noisy.shape == predicted.shape == (2, 128, 128, 3)
    assert ctx.progress_calls == [(1, 2), (2, 2)]
    # One colour per latent pixel, enlarged 8x: every 8x8 block is flat.
    blocks = predicted.reshape(2, 16, 8, 16, 8, 3)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))
    expected = latent_preview(out["samples"], model.preview.float()).float() / 255.0  # (1, 16, 16, 3)
    assert torch.allclose(predicted[-1, ::8, ::8], expected[0], atol=1 / 255)


class StopAfterSampling(Ctx):
    """Stop pressed once the last step is done: only the film strip's decoding is left to interrupt."""

    def check_interrupt(self) -> None:
        if self.progress_calls and self.progress_calls[-1][0] == self.progress_calls[-1][1]:
            raise Interrupted("stop")


def test_a_stop_during_the_film_strips_decoding_is_heard(registry, embedded):
    model, clip, vae = embedded
    positive = node(registry, "CLIPTextEncode").run(Ctx(), PROMPT, clip)[0]
    with pytest.raises(Interrupted):
        node(registry, "AtelierFilmStripSampler").run(
            StopAfterSampling(),
            model,
            3,
            2,
            5.0,
            "euler",
            "karras",
            positive,
            positive,
            {"samples": torch.zeros(1, 4, 16, 16)},
            1.0,
            vae,
        )


# ---- latent channels --------------------------------------------------------------------------------------------


def test_latent_channels_shared_symmetric_and_per_channel():
    latent = torch.zeros(4, 2, 3)
    latent[0] = torch.tensor([[-2.0, 0.0, 1.0], [2.0, 0.5, -1.0]])
    latent[1] = 3.0  # a flat channel
    latent[3] = torch.tensor([[4.0, -4.0, 0.0], [0.0, 0.0, 0.0]])
    shared = channel_images(latent, "shared symmetric")
    assert shared.shape == (4, 16, 24, 3)
    # Shared: the largest |value| (4) maps to 0 and 1, zero to mid-grey, in every channel.
    assert shared[0, ::8, ::8, 0].tolist() == [[0.25, 0.5, 0.625], [0.75, 0.5625, 0.375]]
    assert shared[1].unique().tolist() == [0.875] and shared[2].unique().tolist() == [0.5]
    assert shared[3, 0, ::8, 0].tolist() == [1.0, 0.0, 0.5]
    assert torch.equal(shared[..., 0], shared[..., 2])  # grey
    per = channel_images(latent, "per channel")
    assert per[0, ::8, ::8, 0].tolist() == [[0.0, 0.5, 0.75], [1.0, 0.625, 0.25]]
    assert per[1].unique().tolist() == [0.5]  # a flat channel is mid-grey rather than a division by zero
    with pytest.raises(InputError, match="normalize must be one of shared symmetric, per channel"):
        channel_images(latent, "auto")


def test_latent_channels_node_uses_the_first_latent_and_reports_stats(registry):
    samples = torch.stack([torch.arange(4.0).view(4, 1, 1).expand(4, 2, 2), torch.zeros(4, 2, 2)])
    images, stats = node(registry, "AtelierLatentChannels").run(Ctx(), {"samples": samples}, "per channel")
    assert images.shape == (4, 16, 16, 3)
    assert stats.splitlines()[0] == "latent (4, 2, 2) (channels, height, width), RAW VAE units"
    assert stats.splitlines()[3] == "channel 2: mean +2.000  std 0.000  min +2.000  max +2.000"


# ---- token inspector --------------------------------------------------------------------------------------------


def test_token_table_rows_weights_and_padding(tokenizer, registry):
    text = "a big (red:1.3) circle"
    table = token_table(tokenizer, text)
    lines = table.splitlines()
    assert lines[0].startswith("4 text tokens in 1 window(s) of 77 positions")
    assert lines[1] == "--- window 1 of 1: positions 0-76 ---"
    assert lines[2].split() == ["pos", "piece", "id", "weight"]
    rows = [line.split() for line in lines[3:9]]
    assert rows == [
        ["0", "<|startoftext|>", "49406", "1.00"],
        ["1", "a", "320", "1.00"],
        ["2", "big", "1205", "1.00"],
        ["3", "red", "736", "1.30"],
        ["4", "circle", "7117", "1.00"],
        ["5", "<|endoftext|>", "49407", "1.00"],
    ]
    assert lines[9].split() == ["6-76", "padding:", "<|endoftext|>", "x", "71"]
    assert len(lines) == 10 and "WARNING" not in table
    out = node(registry, "AtelierTokenInspector").run(Ctx(), ClipModel(None, tokenizer), text)
    assert out.result == (table,) and out.ui == {"text": [table]}


def test_token_table_warns_when_the_prompt_needs_a_second_window(tokenizer):
    table = token_table(tokenizer, "red " * 78 + "blue circle")
    lines = table.splitlines()
    assert lines[0].startswith("80 text tokens in 2 window(s)")
    assert lines[1] == (
        "WARNING: the prompt is longer than one window (80 > 75 tokens): Atelier and ComfyUI encode "
        "each window separately and join them, but a single-window tool would cut the text and drop "
        '"red red red blue circle".'
    )
    assert "--- window 2 of 2: positions 77-153 ---" in lines
    assert "   77  <|startoftext|>  49406  1.00" in lines
    assert "   83  <|endoftext|>    49407  1.00" in lines  # 5 tokens in window 2: positions 78-82
    assert lines[-1].split() == ["84-153", "padding:", "<|endoftext|>", "x", "70"]


# ---- cross-attention --------------------------------------------------------------------------------------------


def test_cross_attention_map_of_red(registry, embedded):
    model, clip, vae = embedded
    ctx = Ctx()
    image, overlay, heat = node(registry, "AtelierCrossAttentionMap").run(
        ctx, model, clip, vae, PROMPT, "red", 0, 6, 6.0, 128, 128
    )
    assert image.shape == overlay.shape == (1, 128, 128, 3) and heat.shape == (1, 128, 128)
    assert ctx.progress_calls[-1] == (6, 6)
    # A share of attention: between 0 and 1, small on average (77 tokens share every pixel's attention).
    assert float(heat.min()) >= 0.0 and float(heat.max()) < 0.5
    # The word "red" is looked at where the red circle was drawn.
    red = (image[0, ..., 0] - image[0, ..., 1:].amax(-1)) > 0.15  # red clearly above green and blue
    assert 0.05 < float(red.float().mean()) < 0.5
    assert float(heat[0][red].mean()) > 1.5 * float(heat[0][~red].mean())
    # Failing on a missing word happens before any sampling.
    ctx = Ctx()
    with pytest.raises(InputError, match="The word 'blue' is not in the prompt"):
        node(registry, "AtelierCrossAttentionMap").run(ctx, model, clip, vae, PROMPT, "blue", 0, 10, 6.0, 128, 128)
    assert ctx.progress_calls == []


# ---- sigma schedule ---------------------------------------------------------------------------------------------


def parse_sigmas(text: str) -> list[float]:
    return [float(m.group(1)) for m in re.finditer(r"^\s*\d+\s+([0-9.]+)$", text, re.MULTILINE)]


@pytest.mark.parametrize(
    ("scheduler", "steps", "denoise"),
    [("karras", 20, 1.0), ("beta", 9, 1.0), ("normal", 10, 0.5), ("ddim_uniform", 7, 1.0)],
)
def test_sigma_schedule_plot_and_values(registry, scheduler, steps, denoise):
    model = types.SimpleNamespace(schedule=DiscreteSchedule.scaled_linear())
    plot, text = node(registry, "AtelierSigmaSchedule").run(Ctx(), model, steps, scheduler, denoise, True)
    assert plot.shape == (1, PLOT_SIZE[1], PLOT_SIZE[0], 3)
    expected = sigmas_for(scheduler, model.schedule, steps, denoise)
    assert text.splitlines()[0] == f"{scheduler}, {steps} steps, denoise {denoise:g}: {len(expected)} sigmas"
    assert parse_sigmas(text) == pytest.approx(expected.tolist(), abs=1e-6)
    # The chosen curve is drawn in its full colour; the linear plot differs from the log one.
    colour = torch.tensor(PALETTE[list(SCHEDULERS).index(scheduler)]) / 255.0
    assert ((plot[0] - colour).abs().max(dim=-1).values < 1 / 255).sum() > 100
    linear, _ = node(registry, "AtelierSigmaSchedule").run(Ctx(), model, steps, scheduler, denoise, False)
    assert not torch.equal(plot, linear)


def test_sigma_schedule_unknown_scheduler(registry):
    model = types.SimpleNamespace(schedule=DiscreteSchedule.scaled_linear())
    with pytest.raises(InputError, match="Scheduler 'fast' is not known"):
        node(registry, "AtelierSigmaSchedule").run(Ctx(), model, 10, "fast", 1.0, True)


# ---- SaveAnimatedWEBP and PreviewAny ----------------------------------------------------------------------------


def test_save_animated_webp_frames_metadata_and_ui(registry, data):
    frames = torch.linspace(0, 1, 5).view(5, 1, 1, 1).expand(5, 16, 24, 3).contiguous()
    out = node(registry, "SaveAnimatedWEBP").run(
        Ctx(),
        frames,
        "anim/test",
        10.0,
        True,
        80,
        "default",
        prompt={"1": {"class_type": "X"}},
        extra_pnginfo={"workflow": {"nodes": []}},
    )
    assert out.result == ()
    assert out.ui == {
        "images": [{"filename": "test_00001_.webp", "subfolder": "anim", "type": "output"}],
        "animated": [True],
    }
    with Image.open(data.output / "anim" / "test_00001_.webp") as webp:
        assert (webp.n_frames, webp.is_animated, webp.size) == (5, True, (24, 16))
        webp.seek(2)
        assert webp.convert("RGB").getpixel((3, 3)) == (128, 128, 128)  # lossless: 0.5 -> 128 exactly
        assert webp.info["duration"] == 100
        exif = webp.getexif()
        assert exif[0x0110] == 'prompt:{"1": {"class_type": "X"}}'
        assert exif[0x010F] == 'workflow:{"nodes": []}'
    single = node(registry, "SaveAnimatedWEBP").run(Ctx(), frames[:1], "anim/test", 6.0, False, 50, "fastest")
    assert single.ui["images"][0]["filename"] == "test_00002_.webp" and single.ui["animated"] == [False]


def test_preview_any_shows_values_as_text(registry):
    preview = node(registry, "PreviewAny")
    assert preview.run(Ctx(), "a table\nrow").ui == {"text": ["a table\nrow"]}
    assert preview.run(Ctx(), 2.5).ui == {"text": ["2.5"]}
    assert preview.run(Ctx(), {"a": [1, 2]}).ui == {"text": ['{\n  "a": [\n    1,\n    2\n  ]\n}']}
    assert preview.run(Ctx(), torch.ones(1, 2, 3)).ui == {
        "text": ["tensor (1, 2, 3) torch.float32, min 1, max 1, mean 1"]
    }
    latent = {"samples": torch.zeros(1, 4, 2, 2), "batch_index": [0]}
    assert preview.run(Ctx(), latent).ui == {
        "text": [
            '{\n  "samples": "tensor (1, 4, 2, 2) torch.float32, min 0, max 0, mean 0",\n  "batch_index": [\n'
            "    0\n  ]\n}"
        ]
    }
    assert preview.run(Ctx(), object()).ui == {"text": ["<object>"]}
