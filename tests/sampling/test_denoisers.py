"""DiscreteSchedule and the eps / v denoiser wrappers, against DDPM algebra and diffusers."""

import math

import pytest
import torch

from atelier.errors import InputError
from atelier.sampling.denoisers import Denoiser, DiscreteSchedule, is_max_denoise, noise_scaling, start_latent
from atelier.sampling.schedules import SCHEDULERS, sigmas_for

SD = DiscreteSchedule.scaled_linear()


# ---- The training schedule ----------------------------------------------------------------------------------------


def test_scaled_linear_schedule_matches_sd_and_diffusers():
    from diffusers import DDPMScheduler

    assert SD.num_timesteps == 1000
    assert SD.betas[0].item() == pytest.approx(0.00085, rel=1e-12)
    assert SD.betas[-1].item() == pytest.approx(0.012, rel=1e-12)
    assert math.sqrt(SD.betas[500].item()) == pytest.approx((0.00085**0.5 + 0.012**0.5) / 2, rel=1e-3)
    assert (SD.sigma_min, SD.sigma_max) == (pytest.approx(0.0291671585, rel=1e-7), pytest.approx(14.6146412, rel=1e-7))
    ref = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    torch.testing.assert_close(SD.alphas_cumprod.float(), ref.alphas_cumprod, atol=2e-6, rtol=0)
    assert SD.sigmas.dtype == torch.float32 and bool((SD.sigmas[1:] > SD.sigmas[:-1]).all())


def test_schedule_from_arbitrary_betas_and_bad_betas():
    sched = DiscreteSchedule(torch.full((10,), 0.1))
    a = 0.9 ** torch.arange(1, 11, dtype=torch.float64)
    torch.testing.assert_close(sched.alphas_cumprod, a)
    torch.testing.assert_close(sched.sigmas, ((1 - a) / a).sqrt().float())
    with pytest.raises(InputError, match=r"^The betas of a noise schedule must be a 1-D list"):
        DiscreteSchedule(torch.tensor([0.1, 1.5]))


def test_sigma_to_t_and_back():
    t = torch.tensor([0.0, 1.0, 354.0, 998.0, 999.0])
    torch.testing.assert_close(SD.sigma_to_t(SD.t_to_sigma(t)), t, atol=2e-3, rtol=0)
    frac = torch.tensor([0.25, 123.6, 700.75])
    torch.testing.assert_close(SD.sigma_to_t(SD.t_to_sigma(frac)), frac, atol=2e-3, rtol=0)
    # Fractional t interpolates log sigma linearly between the two trained neighbours.
    mid = SD.t_to_sigma(torch.tensor([123.5]))
    assert mid.item() == pytest.approx(math.sqrt(SD.sigmas[123].item() * SD.sigmas[124].item()), rel=1e-6)
    # quantize=True: the nearest trained timestep in log sigma (what ComfyUI feeds the UNet).
    assert SD.sigma_to_t(SD.t_to_sigma(frac), quantize=True).tolist() == [0.0, 124.0, 701.0]
    # Outside the trained range the timestep clamps to the ends.
    assert SD.sigma_to_t(torch.tensor([100.0, 1e-3])).tolist() == [999.0, 0.0]


# ---- The denoiser wrappers ----------------------------------------------------------------------------------------


def _oracle_unet(x0, noise, prediction, seen):
    """A perfect network: knows the clean latent and the noise, answers eps or v for the DDPM input it gets."""

    def unet(x_in, t, context):
        seen.append((x_in, t, context))
        a = SD.alphas_cumprod[t.long()].float().view(-1, 1, 1, 1)
        # The wrapper must hand over the DDPM's x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise.
        torch.testing.assert_close(x_in, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-5, rtol=1e-5)
        return (
            noise if prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
        )  # v = sqrt(a) eps - sqrt(1-a) x0

    return unet


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_perfect_network_gives_back_the_clean_latent(prediction):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 480, 999])
    sigma = SD.sigmas[t]  # (3,) trained noise levels
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    seen = []
    context = torch.randn(3, 77, 32, generator=g)
    denoiser = Denoiser(_oracle_unet(x0, noise, prediction, seen), SD, prediction=prediction)
    torch.testing.assert_close(denoiser(x, sigma, context), x0, atol=2e-4, rtol=1e-4)
    assert seen[0][1].tolist() == [0.0, 480.0, 999.0] and seen[0][1].dtype == torch.float32
    assert seen[0][2] is context


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_denoiser_matches_diffusers_euler_scaling_and_x0(prediction):
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction
    )
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=g) * sched.init_noise_sigma
    weights = torch.randn(4, 4, generator=g)

    def unet(x_in, t, context):  # any deterministic function of its input will do
        return torch.einsum("oc,bchw->bohw", weights, x_in).tanh()

    step = 3
    timestep, sigma = sched.timesteps[step], sched.sigmas[step]
    sched._step_index = step
    ref_in = sched.scale_model_input(x, timestep)
    ref_x0 = sched.step(unet(ref_in, None, None), timestep, x).pred_original_sample
    ours = Denoiser(unet, SD, prediction="eps" if prediction == "epsilon" else "v")
    torch.testing.assert_close(ours(x, sigma.view(1)), ref_x0, atol=1e-6, rtol=1e-6)


def test_timesteps_fed_to_the_network_rounded_or_fractional():
    seen = []

    def unet(x_in, t, context):
        seen.append(t)
        return torch.zeros_like(x_in)

    sigma = SD.t_to_sigma(torch.tensor([0.3, 640.6, 999.0]))
    x = torch.zeros(3, 4, 2, 2)
    Denoiser(unet, SD)(x, sigma)
    Denoiser(unet, SD, quantize_timesteps=False)(x, sigma)
    assert seen[0].tolist() == [0.0, 641.0, 999.0]
    torch.testing.assert_close(seen[1], torch.tensor([0.3, 640.6, 999.0]), atol=2e-3, rtol=0)


def test_network_runs_in_its_own_dtype_and_x0_keeps_xs():
    def unet(x_in, t, context):
        assert x_in.dtype == torch.float16 and context.dtype == torch.float16
        return torch.ones_like(x_in)

    x = torch.zeros(2, 4, 2, 2)
    x0 = Denoiser(unet, SD, dtype=torch.float16)(x, torch.tensor([2.0, 3.0]), torch.zeros(2, 77, 8))
    assert x0.dtype == torch.float32
    assert x0[:, 0, 0, 0].tolist() == [-2.0, -3.0]  # x - sigma * eps


def test_unknown_prediction_type():
    with pytest.raises(InputError, match=r"^Prediction type 'x0' is not supported; expected 'eps' or 'v'\.$"):
        Denoiser(lambda x, t, c: x, SD, prediction="x0")


# ---- The starting latent ------------------------------------------------------------------------------------------


def test_max_denoise_rule_and_noise_scaling():
    for name in ("normal", "karras", "simple", "exponential", "sgm_uniform", "beta"):
        assert is_max_denoise(SD, SCHEDULERS[name](SD, 20)), name
    assert not is_max_denoise(SD, sigmas_for("normal", SD, 20, denoise=0.6))
    assert not is_max_denoise(SD, SCHEDULERS["ddim_uniform"](SD, 20))  # starts at t = 951, below sigma_max
    noise, latent = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    s = SD.sigma_max
    torch.testing.assert_close(noise_scaling(s, noise, latent, max_denoise=True), noise * math.sqrt(1 + s * s) + latent)
    torch.testing.assert_close(noise_scaling(2.0, noise, latent), noise * 2.0 + latent)
    per_sample = noise_scaling(torch.tensor([1.0, 3.0]), noise.expand(2, -1, -1, -1), torch.zeros(2, 4, 8, 8))
    torch.testing.assert_close(per_sample[1], noise[0] * 3.0)


def test_txt2img_start_hands_the_unet_exactly_the_noise():
    sigmas = SCHEDULERS["karras"](SD, 20)
    noise = torch.randn(1, 4, 8, 8)
    x = start_latent(SD, sigmas, noise, torch.zeros(1, 4, 8, 8))
    seen = []
    Denoiser(lambda x_in, t, c: seen.append(x_in) or x_in, SD)(x, sigmas[:1])
    torch.testing.assert_close(seen[0], noise, atol=1e-6, rtol=1e-6)  # unit variance, as the DDPM was trained
    img2img = start_latent(SD, sigmas_for("karras", SD, 10, denoise=0.5), noise, torch.ones(1, 4, 8, 8))
    torch.testing.assert_close(img2img, 1 + noise * sigmas_for("karras", SD, 10, denoise=0.5)[0])
