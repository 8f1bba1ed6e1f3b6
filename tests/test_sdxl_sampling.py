"""SDXL and SD 2.x through the sampling path: the denoiser hands SDXL's vector y to the UNet, guidance keeps each
side's own y, v-prediction's preconditioning matches the formula on diffusers' UNet (same random weights), and
KSampler-style sampling of a tiny SDXL-shaped model runs, with the size conditioning changing the result."""

from __future__ import annotations

import pytest
import torch

from atelier.models.unet import sdxl_vector
from atelier.pipeline import Cond, DiffusionModel, SamplerSettings, guide, sample
from atelier.sampling.denoisers import Denoiser, DiscreteSchedule

pytest.importorskip("diffusers")
from tests.models.test_unet_families import TINY_SD2, TINY_SDXL, paired

SD = DiscreteSchedule.scaled_linear()
# ComfyUI's CLIPTextEncodeSDXL defaults for a 1024x1024 image: original = target = 1024, no crop.
SIZES = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]])


def reference_x0(ref, prediction: str, x, sigma: float, context, pooled=None, numbers=None) -> torch.Tensor:
    """x0 written out on diffusers' UNet: c_in = 1/sqrt(s^2+1); eps: x - s*eps; v: x/(s^2+1) - s*v/sqrt(s^2+1)."""
    s = torch.tensor(sigma)
    t = SD.sigma_to_t(s[None], quantize=True)
    added = None if pooled is None else {"text_embeds": pooled, "time_ids": numbers}
    kwargs = {} if added is None else {"added_cond_kwargs": added}
    out = ref(x / (s**2 + 1) ** 0.5, t.expand(x.shape[0]), encoder_hidden_states=context, **kwargs).sample
    if prediction == "eps":
        return x - s * out
    return x / (s**2 + 1) - s * out / (s**2 + 1) ** 0.5


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("prediction", ["eps", "v"])
@torch.no_grad()
def test_sdxl_denoiser_with_y_matches_diffusers(prediction):
    torch.manual_seed(0)
    ours, ref = paired(TINY_SDXL)
    x, context, pooled = torch.randn(1, 4, 8, 8) * 3, torch.randn(1, 7, 40), torch.randn(1, 16)
    numbers = torch.tensor([[512.0, 768, 0, 0, 1024, 1024]])
    denoiser = Denoiser(ours, SD, prediction)
    got = denoiser(x, torch.tensor(2.5), context, y=sdxl_vector(pooled, numbers, 8))
    assert rel(got, reference_x0(ref, prediction, x, 2.5, context, pooled, numbers)) <= 1e-4


@torch.no_grad()
def test_sd2_v_prediction_denoiser_matches_diffusers():
    torch.manual_seed(1)
    ours, ref = paired(TINY_SD2)
    x, context = torch.randn(2, 4, 8, 8) * 5, torch.randn(2, 7, 24)
    got = Denoiser(ours, SD, "v")(x, torch.tensor(5.0), context)
    assert rel(got, reference_x0(ref, "v", x, 5.0, context)) <= 1e-4


@torch.no_grad()
def test_guidance_gives_each_side_its_own_y():
    torch.manual_seed(2)
    ours, ref = paired(TINY_SDXL)
    x = torch.randn(1, 4, 8, 8) * 2
    pos_ctx, neg_ctx, pos_pool, neg_pool = (
        torch.randn(1, 7, 40),
        torch.randn(1, 7, 40),
        torch.randn(1, 16),
        torch.zeros(1, 16),
    )
    positive = [Cond(pos_ctx, y=sdxl_vector(pos_pool, SIZES, 8))]
    negative = [Cond(neg_ctx, y=sdxl_vector(neg_pool, SIZES, 8))]
    guided = guide(Denoiser(ours, SD, "eps"), positive, negative, 6.0)
    got = guided(x, torch.tensor([3.0]))
    cond = reference_x0(ref, "eps", x, 3.0, pos_ctx, pos_pool, SIZES)
    uncond = reference_x0(ref, "eps", x, 3.0, neg_ctx, neg_pool, SIZES)
    assert rel(got, uncond + 6.0 * (cond - uncond)) <= 1e-4
    assert guided.trace.calls == 1


@torch.no_grad()
def test_tiny_sdxl_samples_and_size_conditioning_matters():
    torch.manual_seed(3)
    ours, _ = paired(TINY_SDXL)
    model = DiffusionModel(ours, 0.13025)
    ctx, pooled = torch.randn(1, 7, 40), torch.randn(1, 16)
    latent = torch.zeros(1, 4, 8, 8)
    settings = SamplerSettings(seed=5, steps=3, cfg=4.0)

    def run(numbers: torch.Tensor) -> torch.Tensor:
        positive = [Cond(ctx, y=sdxl_vector(pooled, numbers, 8))]
        negative = [Cond(torch.zeros_like(ctx), y=sdxl_vector(torch.zeros_like(pooled), numbers, 8))]
        return sample(model, latent, positive, negative, settings).latent

    square = run(SIZES)
    assert square.shape == (1, 4, 8, 8) and torch.isfinite(square).all()
    assert torch.equal(square, run(SIZES))  # seeded: the same again
    cropped = run(torch.tensor([[512.0, 512, 256, 0, 1024, 1024]]))
    assert (square - cropped).abs().max() > 1e-3  # the micro-conditioning reaches the UNet


def test_model_sampling_discrete_node_sets_prediction_and_zsnr():
    from atelier.graph.nodes.sampling import ModelSamplingDiscrete

    ours, _ = paired(TINY_SD2)  # its config says "v"; the node overrides what the file could not say
    model = DiffusionModel(ours, 0.18215)
    (eps,) = ModelSamplingDiscrete().run(None, model, "eps", False)
    (v_zsnr,) = ModelSamplingDiscrete().run(None, model, "v_prediction", True)
    assert eps.denoiser().prediction == "eps" and v_zsnr.denoiser().prediction == "v"
    assert eps.unet is model.unet and model.prediction is None  # the network is shared, the input MODEL unchanged
    assert abs(eps.schedule.sigma_max - SD.sigma_max) < 1e-6
    assert v_zsnr.schedule.sigma_max > 4000  # the last step is pure noise
