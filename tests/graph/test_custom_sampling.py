"""graph/nodes/custom_sampling.py against ComfyUI's definitions (comfy_extras/nodes_custom_sampler.py), on the
embedded model:

- SamplerCustom and SamplerCustomAdvanced with a KSampler's settings give the KSampler's latent, bit for bit
  (deterministic and ancestral samplers, txt2img and img2img);
- each scheduler node gives the schedule ComfyUI computes (BasicScheduler = the KSampler's sigmas, Karras and
  exponential formulas, SD Turbo's timesteps 999, 899, ...);
- SplitSigmas cuts as ComfyUI does, and two SamplerCustomAdvanced over its halves (the second with DisableNoise)
  equal one run for Euler;
- per-sampler nodes pass their options on (eta = 0 makes Euler a into Euler), the guiders' formulas hold.
"""

from __future__ import annotations

import math

import pytest
import torch

from atelier.graph.catalog import default_registry
from atelier.graph.nodes.custom_sampling import SamplerChoice
from atelier.pipeline import Cond
from atelier.sampling.schedules import sigmas_for
from atelier.server.files import DataDir, OutputFiles

SIZE = 32  # pixels: a 4x4 latent keeps every run in milliseconds


class Context:
    """A node context that records progress and is never interrupted."""

    node_id, prompt, extra_pnginfo = "1", {}, None

    def __init__(self) -> None:
        self.steps: list[tuple[float, float]] = []

    def progress(self, value, total) -> None:
        self.steps.append((value, total))

    def preview(self, image) -> None: ...

    def check_interrupt(self) -> None: ...

    def will_write(self, ref) -> None: ...


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """name -> a node instance of the catalog, with the embedded model loaded once."""
    data = DataDir(tmp_path_factory.mktemp("data"))
    registry = default_registry(data.root, OutputFiles(data))

    class Nodes:
        def __getattr__(self, name):
            return registry.get(name)()

    return Nodes()


@pytest.fixture(scope="module")
def sd(nodes):
    """(model, positive, negative, empty latent) from the embedded checkpoint."""
    ctx = Context()
    model, clip, _vae = nodes.CheckpointLoaderSimple.run(ctx, "embedded.safetensors")
    (positive,) = nodes.CLIPTextEncode.run(ctx, "a red circle", clip)
    (negative,) = nodes.CLIPTextEncode.run(ctx, "", clip)
    (latent,) = nodes.EmptyLatentImage.run(ctx, SIZE, SIZE, 2)
    return model, positive, negative, latent


def ksampler(nodes, sd, sampler="euler", scheduler="normal", steps=4, cfg=5.0, denoise=1.0, latent=None):
    model, positive, negative, empty = sd
    (out,) = nodes.KSampler.run(Context(), model, 7, steps, cfg, sampler, scheduler, positive, negative,
                                latent or empty, denoise)  # fmt: skip
    return out["samples"]


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde"])
def test_sampler_custom_and_advanced_equal_the_ksampler(nodes, sd, sampler):
    model, positive, negative, latent = sd
    expected = ksampler(nodes, sd, sampler, "karras", steps=4, cfg=5.0)
    (chosen,) = nodes.KSamplerSelect.run(Context(), sampler)
    (sigmas,) = nodes.BasicScheduler.run(Context(), model, "karras", 4, 1.0)

    out, denoised = nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative, chosen, sigmas, latent)
    assert torch.equal(out["samples"], expected)

    (noise,) = nodes.RandomNoise.run(Context(), 7)
    (guider,) = nodes.CFGGuider.run(Context(), model, positive, negative, 5.0)
    ctx = Context()
    out, denoised = nodes.SamplerCustomAdvanced.run(ctx, noise, guider, chosen, sigmas, latent)
    assert torch.equal(out["samples"], expected)
    assert ctx.steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # The last step goes to sigma 0: the last x0 guess is what a deterministic sampler lands on (Euler: x0 itself).
    if sampler == "euler":
        assert torch.allclose(denoised["samples"], out["samples"], atol=1e-5)


def test_img2img_denoise_matches_the_ksampler(nodes, sd):
    model, positive, negative, empty = sd
    start = {"samples": torch.randn(empty["samples"].shape, generator=torch.Generator().manual_seed(3))}
    expected = ksampler(nodes, sd, "euler", "normal", steps=3, denoise=0.5, latent=start)
    (sigmas,) = nodes.BasicScheduler.run(Context(), model, "normal", 3, 0.5)
    assert torch.equal(sigmas, sigmas_for("normal", model.schedule, 3, 0.5))  # int(3 / 0.5) = 6 steps, last 4 sigmas
    assert len(sigmas) == 4
    out, _ = nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative, SamplerChoice("euler"),
                                     sigmas, start)  # fmt: skip
    assert torch.equal(out["samples"], expected)
    # Inpainting: a noise mask on the latent limits the change the same way in both.
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0
    masked = dict(start, noise_mask=mask)
    expected = ksampler(nodes, sd, "euler", "normal", steps=3, denoise=0.5, latent=masked)
    out, _ = nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative, SamplerChoice("euler"),
                                     sigmas, masked)  # fmt: skip
    assert torch.equal(out["samples"], expected)
    kept = (out["samples"] - start["samples"])[..., SIZE // 16 :]  # the kept half, up to the x * scale / scale trip
    assert float(kept.abs().max()) < 1e-6


def test_denoise_zero_gives_no_sigmas_and_the_latent_back(nodes, sd):
    model, positive, negative, latent = sd
    (sigmas,) = nodes.BasicScheduler.run(Context(), model, "normal", 20, 0.0)
    assert sigmas.shape == (0,)  # ComfyUI: torch.FloatTensor([])
    out, denoised = nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative,
                                            SamplerChoice("euler"), sigmas, latent)  # fmt: skip
    assert out is latent and denoised is latent


def test_split_sigmas_then_two_passes_equal_one_run(nodes, sd):
    model, positive, negative, latent = sd
    (sigmas,) = nodes.BasicScheduler.run(Context(), model, "normal", 6, 1.0)
    high, low = nodes.SplitSigmas.run(Context(), sigmas, 2)
    assert torch.equal(high, sigmas[:3]) and torch.equal(low, sigmas[2:])  # the sigma at step 2 is in both
    (noise,) = nodes.RandomNoise.run(Context(), 7)
    (no_noise,) = nodes.DisableNoise.run(Context())
    (guider,) = nodes.CFGGuider.run(Context(), model, positive, negative, 5.0)
    (euler,) = nodes.KSamplerSelect.run(Context(), "euler")
    whole, _ = nodes.SamplerCustomAdvanced.run(Context(), noise, guider, euler, sigmas, latent)
    first, _ = nodes.SamplerCustomAdvanced.run(Context(), noise, guider, euler, high, latent)
    second, _ = nodes.SamplerCustomAdvanced.run(Context(), no_noise, guider, euler, low, first)
    # Only the raw <-> scaled latent round trip (x / scale * scale) between the passes differs: a rounding error.
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first["samples"], whole["samples"], atol=1e-2)  # the first half alone is still noisy
    # Split at the last step: the low half is the lone sigma 0, no step, and the latent comes back as it was.
    _, lone = nodes.SplitSigmas.run(Context(), sigmas, 6)
    assert lone.tolist() == [0.0]
    again, _ = nodes.SamplerCustomAdvanced.run(Context(), noise, guider, euler, lone, whole)
    assert torch.allclose(again["samples"], whole["samples"], atol=1e-6)


def test_flip_sigmas_reverses_and_lifts_a_zero_start():
    from atelier.graph.nodes.custom_sampling import FlipSigmas

    (flipped,) = FlipSigmas().run(Context(), torch.tensor([14.6, 3.0, 0.5, 0.0]))
    assert torch.equal(flipped, torch.tensor([0.0001, 0.5, 3.0, 14.6]))
    (empty,) = FlipSigmas().run(Context(), torch.zeros(0))
    assert empty.shape == (0,)


def test_scheduler_nodes_give_comfyuis_schedules(nodes, sd):
    model = sd[0]
    # KarrasScheduler (k-diffusion's get_sigmas_karras): (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho, 0.
    (karras,) = nodes.KarrasScheduler.run(Context(), 3, 14.614642, 0.0291675, 7.0)
    lo, hi = 0.0291675 ** (1 / 7), 14.614642 ** (1 / 7)
    expected = [hi**7, ((hi + lo) / 2) ** 7, lo**7, 0.0]
    assert torch.allclose(karras, torch.tensor(expected), rtol=1e-5)
    (basic_karras,) = nodes.BasicScheduler.run(Context(), model, "karras", 3, 1.0)  # the same with the model's range
    assert torch.allclose(basic_karras, karras, rtol=1e-4)  # the trained range, in float32
    # ExponentialScheduler: evenly spaced in log sigma.
    (exp,) = nodes.ExponentialScheduler.run(Context(), 3, 10.0, 0.1)
    assert torch.allclose(exp, torch.tensor([10.0, 1.0, 0.1, 0.0]), rtol=1e-5)
    # SDTurboScheduler: timesteps 999, 899, ... from the model's trained sigmas; denoise 0.5 starts at 499.
    (turbo,) = nodes.SDTurboScheduler.run(Context(), model, 2, 1.0)
    # (ComfyUI's sigma(t) is exp(log_sigmas[t]): equal to the trained sigma up to float32 rounding)
    assert torch.allclose(turbo, torch.cat([model.schedule.sigmas[[999, 899]], torch.zeros(1)]), rtol=1e-6)
    (half,) = nodes.SDTurboScheduler.run(Context(), model, 1, 0.5)
    assert torch.allclose(half, torch.stack([model.schedule.sigmas[499], torch.tensor(0.0)]), rtol=1e-6)
    assert math.isclose(float(turbo[0]), model.schedule.sigma_max, rel_tol=1e-6)


def test_per_sampler_nodes_pass_their_options(nodes, sd):
    model, positive, negative, latent = sd
    (sigmas,) = nodes.BasicScheduler.run(Context(), model, "normal", 3, 1.0)
    (ancestral,) = nodes.SamplerEulerAncestral.run(Context(), eta=1.0, s_noise=1.0)
    assert ancestral == SamplerChoice("euler_ancestral", {"eta": 1.0, "s_noise": 1.0})
    (sde,) = nodes.SamplerDPMPP_2M_SDE.run(Context(), solver_type="heun", eta=0.5, s_noise=1.0, noise_device="gpu")
    assert sde == SamplerChoice("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5, "s_noise": 1.0})
    (lms,) = nodes.SamplerLMS.run(Context(), order=2)
    assert lms == SamplerChoice("lms", {"order": 2})

    def run(choice):
        out, _ = nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative, choice, sigmas, latent)
        return out["samples"]

    (no_eta,) = nodes.SamplerEulerAncestral.run(Context(), eta=0.0, s_noise=1.0)
    assert torch.equal(run(no_eta), run(SamplerChoice("euler")))  # eta 0: no fresh noise, the ODE step
    assert torch.equal(run(ancestral), ksampler(nodes, sd, "euler_ancestral", "normal", steps=3))  # the defaults
    assert not torch.equal(run(ancestral), run(no_eta))


def test_guiders_follow_comfyuis_formulas(nodes, sd):
    model, positive, negative, _ = sd
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((2,), 3.0)
    raw = model.denoiser()

    def pred(cond: list[Cond]) -> torch.Tensor:
        return raw(x, sigma, context=cond[0].context.expand(2, -1, -1))

    p, n = pred(positive), pred(negative)
    (cfg,) = nodes.CFGGuider.run(Context(), model, positive, negative, 4.0)
    assert torch.allclose(cfg.guided()(x, sigma), n + 4.0 * (p - n), atol=1e-4)
    (basic,) = nodes.BasicGuider.run(Context(), model, positive)
    assert torch.allclose(basic.guided()(x, sigma), p, atol=1e-5)

    middle = [Cond(negative[0].context * 0.5 + positive[0].context * 0.5)]
    m = pred(middle)
    (regular,) = nodes.DualCFGGuider.run(Context(), model, positive, middle, negative, 3.0, 2.0, "regular")
    assert torch.allclose(regular.guided()(x, sigma), n + 2.0 * (m - n) + 3.0 * (p - m), atol=1e-4)
    (nested,) = nodes.DualCFGGuider.run(Context(), model, positive, middle, negative, 3.0, 2.0, "nested")
    assert torch.allclose(nested.guided()(x, sigma), n + 2.0 * (m + 3.0 * (p - m) - n), atol=1e-4)
    (both_one,) = nodes.DualCFGGuider.run(Context(), model, positive, middle, negative, 1.0, 1.0, "regular")
    assert torch.allclose(both_one.guided()(x, sigma), p, atol=1e-5)  # ComfyUI's skips: cond1's pass alone


def test_an_unknown_sampler_and_bad_sigmas_are_refused(nodes, sd):
    from atelier.errors import InputError

    model, positive, negative, latent = sd
    with pytest.raises(InputError, match="Sigmas must be a 1-D list"):
        nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative, SamplerChoice("euler"),
                                torch.tensor([[1.0, 0.0]]), latent)  # fmt: skip
    with pytest.raises(InputError, match="Sampler 'nope' is not known"):
        nodes.SamplerCustom.run(Context(), model, True, 7, 5.0, positive, negative, SamplerChoice("nope"),
                                torch.tensor([1.0, 0.0]), latent)  # fmt: skip
