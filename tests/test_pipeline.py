"""The pipeline end to end: seeds, txt2img / img2img / inpainting, KSamplerAdvanced semantics, callbacks, interrupt.

Most checks use a tiny random model (deterministic from torch.manual_seed) so they run in seconds; one stored
image pins the seeded result of the whole chain, and a few use the shipped embedded model.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.errors import InputError
from atelier.generation import GenerationParams, run
from atelier.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.library import EMBEDDED_PATH
from atelier.models.unet import UNet
from atelier.models.vae import VAE
from atelier.pipeline import (
    Cond,
    DiffusionModel,
    Interrupted,
    SamplerSettings,
    decode,
    empty_latent,
    encode,
    encode_prompt,
    fit_latent_to_rgb,
    latent_preview,
    sample,
)

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_checkpoint(path: Path) -> Path:
    """A small random SD1.x-layout model, the same on every run (weights drawn after manual_seed(1234))."""
    torch.manual_seed(1234)
    unet = UNet(UNetConfig(block_channels=(32, 64), layers_per_block=1, cross_attention_levels=(False, True),
                           attention_heads=2, context_dim=32, norm_groups=8))
    vae = VAE(VAEConfig(block_channels=(16, 16, 32, 32), layers_per_block=1, norm_groups=8, scaling_factor=0.5))
    text = CLIPTextEncoder(TextEncoderConfig(width=32, layers=2, heads=2, mlp_width=64))
    return save_checkpoint(path, unet, vae, text)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Checkpoint:
    path = tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    return load_checkpoint(path, device="cpu", dtype="fp32")


def model_of(ckpt: Checkpoint) -> DiffusionModel:
    return DiffusionModel(ckpt.unet, ckpt.vae.config.scaling_factor)


def contexts(ckpt: Checkpoint, prompt: str = "a red circle", negative: str = ""):
    return (encode_prompt(ckpt.text_encoder, ckpt.tokenizer, prompt),
            encode_prompt(ckpt.text_encoder, ckpt.tokenizer, negative))


# ---- seeds -----------------------------------------------------------------------------------------------------


def test_seeded_image_matches_the_stored_one(tiny):
    """The whole chain (tokenizer, text encoder, noise, euler, CFG, VAE) from a fixed seed gives the stored image."""
    params = GenerationParams("a big red circle on the left", seed=42, steps=6, cfg=7.5, width=64, height=64)
    image = np.asarray(run(tiny, params).images[0], dtype=np.int16)
    expected_path = FIXTURES / "tiny_seed42.png"
    if not expected_path.exists():  # first run on a new fixture: write it, and fail so it gets reviewed
        Image.fromarray(image.astype(np.uint8)).save(expected_path)
        pytest.fail(f"wrote {expected_path}; check it in")
    expected = np.asarray(Image.open(expected_path), dtype=np.int16)
    assert np.abs(image - expected).max() <= 2  # 8-bit levels; fp32 CPU kernels may differ by a rounding step


def test_same_seed_same_image_different_seed_different_image(tiny):
    params = GenerationParams("a house", seed=7, steps=4, width=64, height=64, sampler="euler_ancestral")
    a, b = run(tiny, params).images[0], run(tiny, params).images[0]
    c = run(tiny, GenerationParams("a house", seed=8, steps=4, width=64, height=64, sampler="euler_ancestral"))
    assert np.array_equal(np.asarray(a), np.asarray(b))  # ancestral noise is seeded too
    assert not np.array_equal(np.asarray(a), np.asarray(c.images[0]))


def test_batch_items_get_distinct_noise_and_random_seed_is_reported(tiny):
    result = run(tiny, GenerationParams("a star", seed=-1, steps=2, width=64, height=64, batch=2))
    assert 0 <= result.params.seed < 2**64
    first, second = (np.asarray(i) for i in result.images)
    assert not np.array_equal(first, second)
    again = run(tiny, GenerationParams("a star", seed=result.params.seed, steps=2, width=64, height=64, batch=2))
    assert np.array_equal(first, np.asarray(again.images[0]))


# ---- guidance, callbacks, interrupt ------------------------------------------------------------------------------


def test_cfg_one_skips_the_unconditional_pass_and_says_so(tiny):
    pos, neg = contexts(tiny)
    latent = empty_latent(64, 64)
    at_one = sample(model_of(tiny), latent, pos, neg, SamplerSettings(seed=1, steps=3, cfg=1.0))
    at_seven = sample(model_of(tiny), latent, pos, neg, SamplerSettings(seed=1, steps=3, cfg=7.0))
    assert at_one.guidance.skipped_uncond and not at_seven.guidance.skipped_uncond
    assert at_one.guidance.calls == 3 and at_seven.guidance.calls == 3  # cond and uncond in one batched call


def test_every_step_reaches_the_callback(tiny):
    pos, neg = contexts(tiny)
    steps = []
    result = sample(model_of(tiny), empty_latent(64, 64), pos, neg, SamplerSettings(seed=1, steps=5),
                    on_step=steps.append)
    assert [s.index for s in steps] == [0, 1, 2, 3, 4] and all(s.total == 5 for s in steps)
    assert [round(s.sigma, 4) for s in steps] == [round(float(v), 4) for v in result.sigmas[:-1]]
    assert steps[0].x.shape == (1, 4, 8, 8) and steps[-1].denoised.shape == (1, 4, 8, 8)


def test_interrupt_stops_and_returns_nothing(tiny):
    pos, neg = contexts(tiny)
    stop = threading.Event()

    def on_step(step):
        if step.index == 1:
            stop.set()

    with pytest.raises(Interrupted, match="interrupted"):
        sample(model_of(tiny), empty_latent(64, 64), pos, neg, SamplerSettings(seed=1, steps=6), on_step=on_step,
               interrupt=stop)


# ---- KSampler / KSamplerAdvanced semantics -------------------------------------------------------------------------


def test_two_advanced_halves_equal_one_full_run(tiny):
    """ComfyUI's refiner pattern: steps 0-4 with leftover noise, then 4-8 without adding noise == 0-8 at once."""
    pos, neg = contexts(tiny)
    model, settings = model_of(tiny), SamplerSettings(seed=3, steps=8, sampler="dpmpp_2m", scheduler="karras")
    full = sample(model, empty_latent(64, 64), pos, neg, settings).latent
    first = sample(model, empty_latent(64, 64), pos, neg, settings, end_step=4, force_full_denoise=False).latent
    second = sample(model, first, pos, neg, settings, start_step=4, add_noise=False).latent
    # dpmpp_2m is a multistep method: its history restarts at the split, so allow the one-step difference
    assert (second - full).abs().max() < 0.05 * full.abs().max()
    euler = SamplerSettings(seed=3, steps=8)
    full = sample(model, empty_latent(64, 64), pos, neg, euler).latent
    first = sample(model, empty_latent(64, 64), pos, neg, euler, end_step=4, force_full_denoise=False).latent
    second = sample(model, first, pos, neg, euler, start_step=4, add_noise=False).latent
    torch.testing.assert_close(second, full, rtol=1e-4, atol=1e-5)  # euler is one-step: exactly the same


def test_start_step_past_the_end_returns_the_latent(tiny):
    pos, neg = contexts(tiny)
    latent = torch.randn(1, 4, 8, 8)
    out = sample(model_of(tiny), latent, pos, neg, SamplerSettings(steps=4), start_step=10, add_noise=False)
    assert torch.equal(out.latent, latent)


# ---- img2img and inpainting --------------------------------------------------------------------------------------


def test_img2img_denoise_controls_how_much_changes(tiny):
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    latent = encode(tiny.vae, image)
    pos, neg = contexts(tiny)
    model = model_of(tiny)
    untouched = sample(model, latent, pos, neg, SamplerSettings(seed=1, steps=10, denoise=0.0)).latent
    assert torch.equal(untouched, latent)  # denoise 0: no step at all
    changes = [
        (sample(model, latent, pos, neg, SamplerSettings(seed=1, steps=10, denoise=d)).latent - latent).abs().mean()
        for d in (0.2, 0.6, 1.0)
    ]
    assert changes[0] < changes[1] < changes[2]


def test_inpainting_keeps_everything_outside_the_mask(tiny):
    latent = encode(tiny.vae, torch.rand(1, 3, 64, 64) * 2 - 1)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0  # repaint the right half
    pos, neg = contexts(tiny)
    out = sample(model_of(tiny), latent, pos, neg, SamplerSettings(seed=2, steps=4), noise_mask=mask).latent
    torch.testing.assert_close(out[..., :3], latent[..., :3], rtol=0, atol=1e-5)  # left: exactly the input
    assert (out[..., 5:] - latent[..., 5:]).abs().mean() > 0.05  # right: repainted


def test_area_conditioning_only_acts_inside_its_area(tiny):
    pos, neg = contexts(tiny, "a blue fish")
    settings = SamplerSettings(seed=5, steps=3)
    base = sample(model_of(tiny), empty_latent(64, 64), [Cond(pos)], [Cond(neg)], settings).latent
    other = encode_prompt(tiny.text_encoder, tiny.tokenizer, "a green tree")
    left = [Cond(pos), Cond(other, area=(8, 4, 0, 0), strength=1.0)]  # (h, w, y, x) in latent pixels
    mixed = sample(model_of(tiny), empty_latent(64, 64), left, [Cond(neg)], settings).latent
    assert (mixed[..., :4] - base[..., :4]).abs().mean() > (mixed[..., 4:] - base[..., 4:]).abs().mean()


# ---- previews and bad values -----------------------------------------------------------------------------------


def test_linear_preview_tracks_the_vae_on_flat_colours(tiny):
    projection = fit_latent_to_rgb(tiny.vae, size=32)
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(1, 3, 32, 32)
    preview = latent_preview(encode(tiny.vae, red), projection)  # (1, 4, 4, 3) uint8
    assert preview.shape == (1, 4, 4, 3)
    decoded = (decode(tiny.vae, encode(tiny.vae, red)) + 1) * 127.5
    # a linear map of a random VAE is rough; it must still land near what the decoder gives
    assert (preview.float().mean(dim=(0, 1, 2)) - decoded.mean(dim=(0, 2, 3))).abs().max() < 60


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampler": "eulerr"}, "Sampler 'eulerr' is not known"),
        ({"scheduler": "fast"}, "Scheduler 'fast' is not known"),
        ({"steps": 0}, "Steps must be a whole number from 1 to 10000"),
        ({"cfg": -1.0}, "CFG must be a number from 0 to 100"),
        ({"width": 100}, "Width must be a positive multiple of 8"),
        ({"denoise": 1.5}, "Denoise must be a number from 0 to 1"),
        ({"seed": 2**64}, "Seed must be a whole number from 0 to 2^64-1"),
        ({"batch": 0}, "Batch size must be a whole number from 1 to 4096"),
    ],
)
def test_bad_values_get_one_sentence(change, message):
    params = GenerationParams("x", **change)
    with pytest.raises(InputError, match=re.escape(message)):
        params.check()


# ---- the shipped model -------------------------------------------------------------------------------------------


@pytest.mark.skipif(not EMBEDDED_PATH.exists(), reason="the embedded model is not in this checkout")
def test_embedded_model_draws_the_colour_it_is_asked_for():
    ckpt = load_checkpoint(EMBEDDED_PATH, device="cpu", dtype="fp32")
    red = run(ckpt, GenerationParams("a big red circle in the middle", seed=1, width=128, height=128))
    blue = run(ckpt, GenerationParams("a big blue circle in the middle", seed=1, width=128, height=128))
    centre = (slice(44, 84), slice(44, 84))
    r, b = (np.asarray(g.images[0], dtype=np.float32)[centre].mean(axis=(0, 1)) for g in (red, blue))
    assert r[0] > r[2] + 40 and b[2] > b[0] + 40  # red has more red than blue in the middle; blue the opposite
