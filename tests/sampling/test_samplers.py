"""Every sampler against a problem with a known answer, plus the contract all samplers share.

The data is a 1-D Gaussian mixture whose exact denoiser is known (tests/sampling/analytic.py), so:
- every sampler must reproduce the mixture's mean, standard deviation and weights;
- deterministic samplers solve the probability-flow ODE: from the same starting points they must approach the exact
  solution (computed with 1000 Heun steps) as steps grow, and the higher-order ones faster than Euler;
- ancestral/SDE samplers keep replacing noise, so their samples keep moving until the last steps.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from atelier.sampling.samplers import SAMPLERS
from atelier.sampling.samplers_multistep import _lagrange_integral, deis_coefficients, sample_uni_pc
from tests.sampling.analytic import GaussianMixture, karras_sigmas, seeded_noise

SIGMA_MAX = 14.6146  # SD's largest training sigma
N = 4000
MIXTURE = GaussianMixture()

COMFYUI_ORDER = [
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "ddpm",
    "lcm",
    "ipndm",
    "deis",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
STOCHASTIC = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde"]
STOCHASTIC += ["dpmpp_3m_sde", "ddpm", "lcm"]
DETERMINISTIC = [name for name in COMFYUI_ORDER if name not in STOCHASTIC]
HIGHER_ORDER = [name for name in DETERMINISTIC if name not in ("euler", "ddim")]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny: one thread is ~20x faster than two on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def start() -> torch.Tensor:
    """N exact draws from the mixture noised to SIGMA_MAX, (N, 1) float64."""
    return MIXTURE.sample_noised(N, SIGMA_MAX, torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def exact(start: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE solved from `start` to sigma = 0 with 1000 Heun steps (error ~4e-5)."""
    return SAMPLERS["heun"](MIXTURE.denoiser, start.clone(), karras_sigmas(1000))


def run(name: str, x: torch.Tensor, steps: int, seed: int = 5, **kwargs) -> torch.Tensor:
    sampler = SAMPLERS[name]
    return sampler(MIXTURE.denoiser, x.clone(), karras_sigmas(steps), noise_sampler=seeded_noise(x, seed), **kwargs)


# ---- The table and the contract -----------------------------------------------------------------------------------


def test_table_has_comfyui_names_in_comfyui_order():
    assert list(SAMPLERS) == COMFYUI_ORDER


@pytest.mark.parametrize("name", COMFYUI_ORDER)
def test_contract(name: str):
    """Shapes, dtype, batched sigma, extra_args, one callback per step, same seed -> same result."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3) * 14.6
    sigmas = karras_sigmas(6).float()
    seen = []

    def model(x_in, sigma, cond):
        assert sigma.shape == (2,) and cond == "c"
        seen.append(float(sigma[0]))
        return torch.tanh(x_in) * (1 + 0.1 * sigma.view(-1, 1, 1, 1))

    steps = []
    out = SAMPLERS[name](
        model, x, sigmas, extra_args={"cond": "c"}, callback=steps.append, noise_sampler=seeded_noise(x, 3)
    )
    assert out.shape == x.shape and out.dtype == x.dtype and bool(out.isfinite().all())
    assert [s["i"] for s in steps] == list(range(6))
    assert all(set(s) == {"i", "sigma", "sigma_hat", "x", "denoised"} for s in steps)
    assert [float(s["sigma"]) for s in steps] == pytest.approx(sigmas[:-1].tolist())
    assert seen[0] == pytest.approx(float(sigmas[0]))
    again = SAMPLERS[name](model, x, sigmas, extra_args={"cond": "c"}, noise_sampler=seeded_noise(x, 3))
    assert torch.equal(out, again)
    if name in STOCHASTIC:
        other = SAMPLERS[name](model, x, sigmas, extra_args={"cond": "c"}, noise_sampler=seeded_noise(x, 4))
        assert not torch.allclose(out, other)
        torch.manual_seed(7)  # without a noise_sampler: torch's global generator
        a = SAMPLERS[name](model, x, sigmas, extra_args={"cond": "c"})
        torch.manual_seed(7)
        assert torch.equal(a, SAMPLERS[name](model, x, sigmas, extra_args={"cond": "c"}))


# ---- The analytic problem -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in COMFYUI_ORDER if n != "lcm"])
def test_reproduces_the_mixture(name: str, start: torch.Tensor, exact: torch.Tensor):
    """50 Karras steps from sigma 14.6: mean, std and weight of the first component within tolerance.

    The exact ODE solution from these 4000 draws is itself off by the sampling error (mean +0.027, std -0.018),
    so the tolerances are 0.06 / 0.06 / 0.03 (measured worst: Euler a, DPM++ SDE at -0.045 std, -0.022 weight).
    """
    out = run(name, start, 50)
    split = MIXTURE.split()
    assert abs(out.mean().item() - MIXTURE.mean) < 0.06
    assert abs(out.std().item() - MIXTURE.std) < 0.06
    assert abs((out < split).double().mean().item() - MIXTURE.mass_below(split)) < 0.03


def test_lcm_follows_its_closed_form_on_a_gaussian():
    """With the exact (mean) denoiser LCM is not a sampler of the data: each step keeps only E[x0 | x].

    For a single Gaussian N(m, s^2) the variance obeys v' = k^2 v + sigma_next^2 with k = s^2 / (s^2 + sigma^2),
    and the mean stays m; LCM must match that recursion (it needs a consistency model to be a sampler).
    """
    gauss = GaussianMixture(weights=(1.0,), means=(0.5,), stds=(0.8,))
    x = gauss.sample_noised(N, SIGMA_MAX, torch.Generator().manual_seed(2))
    sigmas = karras_sigmas(8)
    out = SAMPLERS["lcm"](gauss.denoiser, x.clone(), sigmas, noise_sampler=seeded_noise(x, 5))
    var = x.var().item()
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        k = 0.64 / (0.64 + sigma**2)
        var = k**2 * var + sigma_next**2
    assert out.var().item() == pytest.approx(var, rel=0.06)
    assert out.mean().item() == pytest.approx(0.5, abs=0.03)


def test_deterministic_samplers_converge(start: torch.Tensor, exact: torch.Tensor):
    """Max distance to the exact ODE solution: falls with steps; higher-order methods beat Euler at equal steps."""
    errors = {n: {k: (run(n, start, k) - exact).abs().max().item() for k in (10, 25, 50)} for n in DETERMINISTIC}
    for name, err in errors.items():
        assert err[50] < err[10] / 1.8, (name, err)
        assert err[50] < err[25], (name, err)
    for name in HIGHER_ORDER:
        assert errors[name][25] < errors["euler"][25] / 3, (name, errors[name], errors["euler"])
    # Second order: doubling the steps divides the error by ~4 (Euler: by ~2).
    for name in ("heun", "dpm_2", "dpmpp_2m"):
        assert errors[name][25] / errors[name][50] > 3.0, (name, errors[name])


def test_ancestral_samplers_keep_moving(start: torch.Tensor):
    """Near the end Euler settles while Euler a keeps replacing noise (the workshop's "Euler a keeps moving")."""

    def movement(name: str) -> float:
        xs = []
        SAMPLERS[name](
            MIXTURE.denoiser,
            start.clone(),
            karras_sigmas(30),
            callback=lambda s: xs.append(s["x"]),
            noise_sampler=seeded_noise(start, 5),
        )
        late = xs[-10:]  # the last 10 steps: sigma below ~0.5
        return sum((b - a).abs().mean().item() for a, b in itertools.pairwise(late))

    settled = max(movement(name) for name in DETERMINISTIC)
    for name in STOCHASTIC:
        assert movement(name) > 1.5 * settled, name


# ---- Identities -----------------------------------------------------------------------------------------------------


def test_ddpm_is_euler_ancestral_and_ddim_is_euler(start: torch.Tensor):
    """DDPM's posterior step, rewritten with sigmas, is Euler a with eta = 1; DDIM (eta = 0) is Euler."""
    assert torch.allclose(run("ddpm", start, 20), run("euler_ancestral", start, 20), rtol=0, atol=1e-10)
    assert torch.allclose(run("ddim", start, 20), run("euler", start, 20), rtol=0, atol=1e-10)


def test_eta_zero_makes_ancestral_samplers_deterministic(start: torch.Tensor):
    assert torch.allclose(run("euler_ancestral", start, 12, eta=0.0), run("euler", start, 12), rtol=0, atol=1e-10)
    assert torch.equal(run("dpmpp_2m_sde", start, 12, eta=0.0, seed=1), run("dpmpp_2m_sde", start, 12, eta=0.0))


def test_uni_pc_to_zero_differs_from_comfyui_stop_at_0_001_by_little(start: torch.Tensor):
    sigmas = karras_sigmas(12)
    to_zero = sample_uni_pc(MIXTURE.denoiser, start.clone(), sigmas)
    sigmas[-1] = 0.001  # what ComfyUI's sample_unipc does
    to_milli = sample_uni_pc(MIXTURE.denoiser, start.clone(), sigmas)
    assert 0 < (to_zero - to_milli).abs().max().item() < 0.002


def test_multistep_weights_integrate_the_step():
    """Lagrange basis polynomials sum to 1, so LMS's and DEIS's weights sum to the step length sigma' - sigma."""
    assert _lagrange_integral([0.0, 1.0], 0, 0.0, 1.0) == pytest.approx(0.5)  # integral of 1 - tau over [0, 1]
    assert _lagrange_integral([2.0], 0, 2.0, 1.5) == pytest.approx(-0.5)
    sigmas = karras_sigmas(10).tolist()
    for order in (2, 3, 4):
        nodes = [sigmas[5 - j] for j in range(order)]
        lms = [_lagrange_integral(nodes, j, sigmas[5], sigmas[6]) for j in range(order)]
        assert sum(lms) == pytest.approx(sigmas[6] - sigmas[5], rel=1e-12)
        assert sum(deis_coefficients(sigmas, 5, order)) == pytest.approx(sigmas[6] - sigmas[5], rel=1e-10)
