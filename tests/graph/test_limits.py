"""What one prompt may cost (atelier/limits.py), refused where the cost is known: at validation for constants, when
the node runs for sizes that came through links, and in the pipeline for everything else (CLI, lab, graph)."""

from __future__ import annotations

import time
import types

import pytest
import torch

from atelier import pipeline
from atelier.errors import InputError
from atelier.generation import GenerationParams, api_graph
from atelier.graph.catalog import default_registry
from atelier.graph.nodes.image import ImageScale, ImageScaleBy
from atelier.graph.nodes.inpaint import ImagePadForOutpaint
from atelier.graph.nodes.latent import EmptyLatentImage, LatentUpscale, LatentUpscaleBy, RepeatLatentBatch
from atelier.graph.validation import validate_prompt
from atelier.limits import MAX_PROMPT_CHARACTERS, check_sampling_cost
from atelier.models.config import VAEConfig
from atelier.models.vae import VAE
from atelier.pipeline import Interrupted, SamplerSettings
from atelier.sampling.denoisers import DiscreteSchedule
from atelier.server.files import DataDir, OutputFiles


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    return default_registry(data.root, OutputFiles(data))


LATENT, SAMPLER, TEXT = "5", "3", "6"  # api_graph's EmptyLatentImage, KSampler and positive CLIPTextEncode


def txt2img(width: int = 512, height: int = 512, batch: int = 1, text: str = "a red circle") -> dict:
    params = GenerationParams(text, cfg=7.0, width=width, height=height, batch=batch, model="embedded.safetensors")
    return api_graph(params, filename_prefix="limits")


def errors_of(result, node_id: str) -> list[dict]:
    assert not result.ok
    return result.node_errors[node_id]["errors"]


# ---- validation: the prompt is refused before it is queued -------------------------------------------------------


def test_a_reasonable_prompt_passes(registry):
    result = validate_prompt(txt2img(2048, 2048, 8), registry)
    assert result.ok, result.node_errors


def test_a_huge_empty_latent_is_refused_at_validation(registry):
    result = validate_prompt(txt2img(16384, 16384, 4096), registry)
    errors = errors_of(result, LATENT)
    assert {e["type"] for e in errors} == {"custom_validation_failed"}
    assert {e["extra_info"]["input_name"] for e in errors} == {"width", "height", "batch_size"}
    assert "A batch of 4096 at 16384x16384 is too large" in errors[0]["details"]
    # One image of 16384x16384 is too large as well (268 Mpx; the most per batch is 134 Mpx).
    assert errors_of(validate_prompt(txt2img(16384, 16384, 1), registry), LATENT)


def test_the_empty_latent_hook_keeps_the_range_checks(registry):
    """Validation skips min/max for the inputs a hook names: the hook makes them, in the same words."""
    errors = errors_of(validate_prompt(txt2img(width=20000), registry), LATENT)
    assert errors[0]["details"] == "width - Value 20000 of width bigger than max of 16384"
    errors = errors_of(validate_prompt(txt2img(batch=0), registry), LATENT)
    assert {e["details"] for e in errors} == {
        f"{name} - Value 0 of batch_size smaller than min of 1" for name in ("width", "height", "batch_size")
    }


def test_booleans_are_not_steps_and_null_is_not_text(registry):
    prompt = txt2img()
    prompt[SAMPLER]["inputs"]["steps"] = True
    prompt[TEXT]["inputs"]["text"] = None
    result = validate_prompt(prompt, registry)
    assert errors_of(result, SAMPLER)[0]["details"] == "steps, True, true is a boolean, not a number"
    assert errors_of(result, TEXT)[0]["details"] == "text, None, null is not text"


def test_a_size_the_node_gets_at_run_time_is_refused_when_it_runs():
    with pytest.raises(InputError, match="A batch of 4096 at 16384x16384 is too large"):
        EmptyLatentImage().run(None, 16384, 16384, 4096)


def test_a_megabyte_prompt_is_refused_at_validation_in_milliseconds(registry):
    started = time.perf_counter()
    result = validate_prompt(txt2img(text="a red circle, " * 75_000), registry)  # 1.05 MB
    elapsed = time.perf_counter() - started
    errors = errors_of(result, TEXT)
    # Every text input is held to the same bound by validation itself (linked text when it is encoded).
    assert errors[0]["details"] == f"text - The text has 1,050,000 characters; the most is {MAX_PROMPT_CHARACTERS:,}."
    assert elapsed < 1.0
    assert validate_prompt(txt2img(text="x" * MAX_PROMPT_CHARACTERS), registry).ok


def test_a_megabyte_prompt_is_refused_before_it_is_tokenized():
    started = time.perf_counter()
    with pytest.raises(InputError, match="The prompt has 1,000,000 characters"):
        pipeline.encode_prompt(None, None, "x" * 1_000_000)  # neither encoder nor tokenizer is reached
    assert time.perf_counter() - started < 0.1


# ---- run time: sizes that only the running node knows --------------------------------------------------------------


def wide(*shape: int) -> torch.Tensor:
    """Zeros of a huge shape that cost no memory (every element is the same one)."""
    return torch.zeros(1).expand(*shape)


def test_nodes_that_grow_a_batch_refuse_before_allocating():
    big = {"samples": wide(8, 4, 256, 256)}  # 8 x 2048x2048: allowed
    with pytest.raises(InputError, match="A batch of 512 at 2048x2048 is too large"):
        RepeatLatentBatch().run(None, big, 64)
    with pytest.raises(InputError, match="A batch of 8 at 16384x16384 is too large"):
        LatentUpscaleBy().run(None, big, "nearest-exact", 8.0)
    with pytest.raises(InputError, match="A batch of 8 at 16384x8192 is too large"):
        # 2048 wide, 1024 high; height 0 keeps the ratio: 16384x8192
        LatentUpscale().run(None, {"samples": wide(8, 4, 128, 256)}, "nearest-exact", 16384, 0, "disabled")
    image = wide(1, 4096, 2048, 3)
    with pytest.raises(InputError, match="A batch of 1 at 16384x32768 is too large"):
        ImageScale().run(None, image, "nearest-exact", 16384, 0, "disabled")
    with pytest.raises(InputError, match="A batch of 1 at 16384x32768 is too large"):
        ImageScaleBy().run(None, image, "nearest-exact", 8.0)
    with pytest.raises(InputError, match="A batch of 1 at 18432x20480 is too large"):
        ImagePadForOutpaint().run(None, image, 16384, 16384, 0, 0, 0)


def test_sampling_is_refused_before_any_work():
    model = types.SimpleNamespace(device=torch.device("cpu"), schedule=DiscreteSchedule.scaled_linear())
    cond = torch.zeros(1, 77, 8)
    started = time.perf_counter()
    with pytest.raises(InputError, match="A latent of 8192x8192 pixels is too large to sample"):
        pipeline.sample(model, wide(1, 4, 1024, 1024), cond, cond, SamplerSettings(steps=20))
    with pytest.raises(InputError, match="for 1000 steps is too much work for one prompt"):
        pipeline.sample(model, wide(8, 4, 256, 256), cond, cond, SamplerSettings(steps=1000))
    assert time.perf_counter() - started < 1.0
    # The steps counted are those that run: denoise 0.1 of 1000 steps schedules 10000 and keeps 1000.
    with pytest.raises(InputError, match="for 1000 steps"):
        pipeline.sample(model, wide(8, 4, 256, 256), cond, cond, SamplerSettings(steps=1000, denoise=0.1))
    check_sampling_cost((8, 4, 256, 256), 150)  # 2048x2048, batch 8, 150 steps: inside every limit


def test_decode_refuses_a_batch_too_large_to_hold():
    vae = VAE(VAEConfig.tiny())
    with pytest.raises(InputError, match="A batch of 64 at 4096x4096 is too large"):
        pipeline.decode(vae, wide(64, 4, 512, 512))
    with pytest.raises(InputError, match="A batch of 64 at 4096x4096 is too large"):
        pipeline.encode(vae, wide(64, 3, 4096, 4096))


# ---- interrupts inside the VAE's loops -------------------------------------------------------------------------------


class StopAfter:
    """An interrupt flag that turns on after `n` questions, counting them."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked > self.n


def test_decode_stops_between_chunks_of_a_batch(monkeypatch):
    vae = VAE(VAEConfig.tiny()).eval()
    latent = torch.randn(3, 4, 8, 8)  # three 64x64 images
    whole = pipeline.decode(vae, latent)
    monkeypatch.setattr(pipeline, "VAE_BATCH_PIXELS", 64 * 64)  # one image per chunk
    assert torch.allclose(pipeline.decode(vae, latent), whole, atol=1e-5)  # chunks change nothing but memory
    decoded = []
    run = vae._image
    monkeypatch.setattr(vae, "_image", lambda z: decoded.append(len(z)) or run(z))
    with pytest.raises(Interrupted):
        pipeline.decode(vae, latent, interrupt=StopAfter(2))
    assert decoded == [1, 1]  # the third chunk never ran


def test_tiled_decode_and_encode_stop_between_tiles(monkeypatch):
    vae = VAE(VAEConfig.tiny()).eval()
    latent = torch.randn(1, 4, 48, 48)  # 2 x 2 tiles of 32 overlapping by 16
    tiles = []
    run_decoder, run_encoder = vae._image, vae._moments
    monkeypatch.setattr(vae, "_image", lambda z: tiles.append("decode") or run_decoder(z))
    monkeypatch.setattr(vae, "_moments", lambda x: tiles.append("encode") or run_encoder(x))
    with pytest.raises(Interrupted):
        pipeline.decode(vae, latent, tile=32, interrupt=StopAfter(2))  # asked for the chunk, then for each tile
    assert tiles == ["decode"]
    with pytest.raises(Interrupted):
        pipeline.encode(vae, torch.zeros(1, 3, 384, 384), tile=32, interrupt=StopAfter(3))
    assert tiles == ["decode", "encode", "encode"]
