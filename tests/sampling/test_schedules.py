"""Schedulers: ComfyUI's names and numbers, checked against hand formulas, diffusers and fixed values."""

import math
import time

import numpy as np
import pytest
import torch

from atelier.errors import InputError
from atelier.limits import MAX_SCHEDULE_STEPS, MAX_STEPS
from atelier.sampling import schedules
from atelier.sampling.denoisers import DiscreteSchedule
from atelier.sampling.schedules import SCHEDULERS, beta_cdf, sigmas_for

SD = DiscreteSchedule.scaled_linear()
STEP_COUNTS = (1, 2, 10, 20, 30, 50)
SIGMA_MIN, SIGMA_MAX = 0.0291671585, 14.6146412  # SD 1.x's trained range, sigmas[0] and sigmas[999]


def _diffusers_kwargs() -> dict:
    # diffusers builds alphas_cumprod and 1 - alphas_cumprod in float32 (we and ComfyUI use float64): its sigma_min
    # is 1.2e-5 off by cancellation, hence the relative tolerances of 5e-6 to 2e-5 below.
    return dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


# ---- The contract every scheduler keeps ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_every_scheduler_is_a_decreasing_float_list_ending_in_zero(name, steps):
    sigmas = SCHEDULERS[name](SD, steps)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    assert sigmas[-1] == 0.0
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    assert float(sigmas[0]) <= SIGMA_MAX * (1 + 1e-6)
    # ComfyUI's own length quirks: beta drops repeated timesteps, ddim_uniform follows 1000 // steps.
    if name == "ddim_uniform":
        assert len(sigmas) == len(range(1, 1000, 1000 // steps)) + 1
    elif name != "beta":
        assert len(sigmas) == steps + 1


def test_scheduler_names_are_comfyuis():
    expected = "simple sgm_uniform karras exponential ddim_uniform beta normal linear_quadratic kl_optimal"
    assert list(SCHEDULERS) == expected.split()


# ---- Range-only schedulers: formulas in float64 and diffusers -----------------------------------------------------


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_karras_matches_eq5_of_edm(steps):
    ramp = np.linspace(0, 1, steps)
    rho = 7.0
    ref = (SIGMA_MAX ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
    got = schedules.karras(steps, SD.sigma_min, SD.sigma_max)
    np.testing.assert_allclose(got[:-1].numpy(), ref, rtol=2e-6)
    assert got[0] == pytest.approx(SIGMA_MAX, rel=1e-6)
    if steps > 1:
        assert got[-2] == pytest.approx(SIGMA_MIN, rel=1e-6)


@pytest.mark.parametrize("steps", [2, 10, 20, 30, 50])
def test_karras_and_exponential_match_diffusers_euler(steps):
    from diffusers import EulerDiscreteScheduler

    k = EulerDiscreteScheduler(**_diffusers_kwargs(), use_karras_sigmas=True)
    k.set_timesteps(steps)
    torch.testing.assert_close(schedules.karras(steps, SD.sigma_min, SD.sigma_max), k.sigmas, rtol=2e-5, atol=0)
    e = EulerDiscreteScheduler(**_diffusers_kwargs(), use_exponential_sigmas=True)
    e.set_timesteps(steps)
    torch.testing.assert_close(schedules.exponential(steps, SD.sigma_min, SD.sigma_max), e.sigmas, rtol=2e-5, atol=0)


def test_karras_20_steps_fixed_values():
    expected = [14.6146, 11.7254, 9.3402, 7.3836, 5.7894, 4.4998, 3.4647, 2.6408, 1.9909, 1.4832, 1.0908]
    expected += [0.7909, 0.5647, 0.3964, 0.2730, 0.1842, 0.1213, 0.0779, 0.0485, 0.0292, 0.0]
    torch.testing.assert_close(SCHEDULERS["karras"](SD, 20), torch.tensor(expected), atol=6e-5, rtol=0)


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_exponential_is_even_in_log_sigma(steps):
    got = schedules.exponential(steps, SD.sigma_min, SD.sigma_max)
    ref = np.exp(np.linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), steps))
    np.testing.assert_allclose(got[:-1].numpy(), ref, rtol=3e-6)


@pytest.mark.parametrize("steps", [2, 10, 20, 30, 50])
def test_kl_optimal_is_even_in_arctan_sigma(steps):
    got = schedules.kl_optimal(steps, SD.sigma_min, SD.sigma_max)
    ref = np.tan(np.linspace(math.atan(SIGMA_MAX), math.atan(SIGMA_MIN), steps))
    np.testing.assert_allclose(got[:-1].numpy(), ref, rtol=2e-5)
    assert schedules.kl_optimal(1, SD.sigma_min, SD.sigma_max).tolist() == pytest.approx([SIGMA_MAX, 0.0], rel=1e-5)


# ---- Schedulers over the trained noise levels ---------------------------------------------------------------------


def _log_interp_sigma(t: np.ndarray) -> np.ndarray:
    """Reference sigma(t) in float64: linear interpolation of log sigma between trained timesteps."""
    log_sigmas = np.log(SD.sigmas.double().numpy())
    return np.exp(np.interp(t, np.arange(1000), log_sigmas))


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_normal_is_even_in_timestep(steps):
    ref = _log_interp_sigma(np.linspace(999, 0, steps))
    np.testing.assert_allclose(SCHEDULERS["normal"](SD, steps)[:-1].numpy(), ref, rtol=3e-6)


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_sgm_uniform_drops_the_last_of_steps_plus_one_timesteps(steps):
    ref = _log_interp_sigma(np.linspace(999, 0, steps + 1)[:-1])
    np.testing.assert_allclose(SCHEDULERS["sgm_uniform"](SD, steps)[:-1].numpy(), ref, rtol=3e-6)


def test_normal_fixed_values_and_trained_sigmas_at_whole_timesteps():
    expected = [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0.0]
    torch.testing.assert_close(SCHEDULERS["normal"](SD, 10), torch.tensor(expected), atol=6e-5, rtol=0)
    # 4 steps land on whole timesteps 999, 666, 333, 0: exactly trained sigmas (up to exp(log(.)) rounding).
    torch.testing.assert_close(SCHEDULERS["normal"](SD, 4)[:-1], SD.sigmas[[999, 666, 333, 0]], rtol=1e-6, atol=0)


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_simple_takes_every_kth_trained_sigma(steps):
    idx = [999 - int(i * 1000 / steps) for i in range(steps)]
    assert SCHEDULERS["simple"](SD, steps).tolist() == [*SD.sigmas[idx].tolist(), 0.0]


@pytest.mark.parametrize("steps", [1, 2, 10, 20, 30, 50])
def test_ddim_uniform_matches_diffusers_ddim_leading_timesteps(steps):
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler(**_diffusers_kwargs(), steps_offset=1, timestep_spacing="leading")
    ddim.set_timesteps(steps)  # t = 1 + k * (1000 // steps)
    a = ddim.alphas_cumprod[ddim.timesteps]
    ref = ((1 - a) / a) ** 0.5
    got = SCHEDULERS["ddim_uniform"](SD, steps)
    # ComfyUI walks t = 1, 1+k, ... up to 999, which for 30 steps (k = 33) gives one more timestep (991).
    torch.testing.assert_close(got[-(steps + 1) : -1], ref, rtol=5e-6, atol=0)
    assert got.tolist()[-2:] == [SD.sigmas[1].item(), 0.0]


def test_ddim_uniform_10_steps_timesteps():
    t = [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert SCHEDULERS["ddim_uniform"](SD, 10).tolist() == [*SD.sigmas[t].tolist(), 0.0]


def test_beta_cdf_against_closed_forms_and_scipy_values():
    # Closed forms: Beta(1, 1) is uniform, Beta(2, 1) has CDF x^2, Beta(1/2, 1/2) has CDF (2/pi) asin(sqrt x).
    for x in (0.01, 0.3, 0.5, 0.77, 0.999):
        assert beta_cdf(x, 1.0, 1.0) == pytest.approx(x, abs=1e-14)
        assert beta_cdf(x, 2.0, 1.0) == pytest.approx(x**2, abs=1e-14)
        assert beta_cdf(x, 0.5, 0.5) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-14)
    # scipy.stats.beta.ppf(q, 0.6, 0.6), computed once with scipy 1.17.1: the CDF there gives q back.
    scipy_quantiles = {0.9: 0.9604155944112192, 0.75: 0.824319621347305, 0.1: 0.03958440558878085}
    scipy_quantiles |= {0.01: 0.0008612388215429059, 0.999: 0.9999814412614826}
    for q, x in scipy_quantiles.items():
        assert beta_cdf(x, 0.6, 0.6) == pytest.approx(q, abs=1e-13)
    assert beta_cdf(0.5, 0.6, 0.6) == pytest.approx(0.5, abs=1e-15)
    assert (beta_cdf(0.0, 0.6, 0.6), beta_cdf(1.0, 0.6, 0.6)) == (0.0, 1.0)


def test_beta_scheduler_picks_rounded_beta_quantile_timesteps():
    # numpy.rint(scipy.stats.beta.ppf(1 - linspace(0, 1, 10, endpoint=False), 0.6, 0.6) * 999), from scipy 1.17.1.
    t = [999, 959, 876, 765, 637, 500, 362, 234, 123, 40]
    assert SCHEDULERS["beta"](SD, 10).tolist() == [*SD.sigmas[t].tolist(), 0.0]
    # With 200 steps two quantiles round to the same timestep and the repeat is dropped (199 sigmas + 0).
    assert len(SCHEDULERS["beta"](SD, 200)) == 200
    # numpy.rint(scipy...) as above with 1000 steps keeps 847 distinct timesteps; from 1500 steps on, all 1000.
    assert len(SCHEDULERS["beta"](SD, 1000)) == 848
    assert SCHEDULERS["beta"](SD, 1500).tolist() == [*SD.sigmas.flip(0).tolist(), 0.0]


def test_linear_quadratic_is_mochis_fractions_of_sigma_max():
    got = SCHEDULERS["linear_quadratic"](SD, 10)
    # Linear half: 1 - i * 0.025 / 5; quadratic half reaches 0 at the end.
    torch.testing.assert_close(got[:5] / SD.sigmas[-1], 1 - torch.arange(5) * 0.005)
    assert got[-2].item() == pytest.approx(5.0713, abs=1e-4) and got[-1] == 0.0
    assert SCHEDULERS["linear_quadratic"](SD, 1).tolist() == [SD.sigma_max, 0.0]


# ---- sigmas_for: denoise and errors -------------------------------------------------------------------------------


def test_sigmas_for_full_denoise_is_the_scheduler():
    assert torch.equal(sigmas_for("karras", SD, 20), SCHEDULERS["karras"](SD, 20))


def test_sigmas_for_partial_denoise_keeps_the_tail_of_a_longer_schedule():
    got = sigmas_for("normal", SD, 10, denoise=0.5)
    assert torch.equal(got, SCHEDULERS["normal"](SD, 20)[-11:])
    assert got[0].item() == pytest.approx(1.4806, abs=1e-4)
    assert torch.equal(sigmas_for("karras", SD, 7, denoise=0.3), SCHEDULERS["karras"](SD, 23)[-8:])  # int(7/0.3)
    assert sigmas_for("simple", SD, 5, denoise=0.0).tolist() == [0.0]


def test_sigmas_for_errors_are_one_sentence():
    with pytest.raises(InputError, match=r"^Scheduler 'euler' is not known; expected one of simple, sgm_uniform"):
        sigmas_for("euler", SD, 20)
    with pytest.raises(InputError, match=r"^Steps must be a whole number from 1 to 10000, got 0\.$"):
        sigmas_for("normal", SD, 0)
    with pytest.raises(InputError, match=r"^Steps must be a whole number from 1 to 10000, got 10001\.$"):
        sigmas_for("normal", SD, MAX_STEPS + 1)
    with pytest.raises(InputError, match=r"^Denoise must be between 0 and 1, got 1\.5\.$"):
        sigmas_for("normal", SD, 10, denoise=1.5)


# ---- What a schedule may cost -------------------------------------------------------------------------------------


def _timed(fn, *args, **kwargs) -> float:
    """CPU seconds, the best of three runs: the cost of the computation, not the wait on a busy machine."""
    times = []
    for _ in range(3):
        start = time.process_time()
        fn(*args, **kwargs)
        times.append(time.process_time() - start)
    return min(times)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("denoise", [1e-9, 1e-8, 5e-324])
def test_a_tiny_denoise_is_refused_at_once_with_the_smallest_one_allowed(name, denoise):
    """denoise 1e-9 asked ComfyUI's rule for 2e10 sigmas: 6e9 loop turns (beta), or an 80 GB tensor (normal)."""
    message = r"^Denoise .+ with 20 steps would schedule .+ steps \(steps / denoise\) and the most is 100,000: use "
    message += r"a denoise of at least 0\.0002, or 0 to keep the latent as it is\.$"
    start = time.perf_counter()
    with pytest.raises(InputError, match=message):
        sigmas_for(name, SD, 20, denoise=denoise)
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_the_longest_schedules_allowed_are_built_in_milliseconds(name):
    sigmas_for(name, SD, 10)  # beta's table of cdfs is built once per schedule
    # The schema's largest step count, and the longest schedule denoise < 1 may ask for (10 / 1e-4 = 100,000).
    assert _timed(sigmas_for, name, SD, MAX_STEPS) < 0.25
    assert _timed(sigmas_for, name, SD, 10, denoise=10 / MAX_SCHEDULE_STEPS) < 0.25
    assert len(sigmas_for(name, SD, 10, denoise=10 / MAX_SCHEDULE_STEPS)) == 11
    with pytest.raises(InputError, match="the most is 100,000"):
        sigmas_for(name, SD, 10, denoise=10 / (MAX_SCHEDULE_STEPS + 1))
