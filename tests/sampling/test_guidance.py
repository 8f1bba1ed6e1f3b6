"""Classifier-free guidance: the formula, one batched call, token-length matching, the scale-1 shortcut."""

import pytest
import torch

from atelier.sampling.guidance import GuidanceTrace, cfg_denoiser


class RecordingDenoiser:
    """x0 = x * (1 + sigma) + mean of the context per image; remembers the shapes of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, context=None, **extra):
        self.calls.append((tuple(x.shape), tuple(sigma.shape), tuple(context.shape), extra))
        return x * (1 + sigma.view(-1, 1, 1, 1)) + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def _inputs(cond_len=77, uncond_len=77):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    sigma = torch.tensor([3.0, 3.0])
    return x, sigma, torch.randn(1, cond_len, 16, generator=g), torch.randn(1, uncond_len, 16, generator=g)


def test_guidance_is_uncond_plus_scale_times_difference_in_one_batched_call():
    x, sigma, cond, uncond = _inputs()
    inner = RecordingDenoiser()
    guided = cfg_denoiser(inner, cond, uncond, scale=7.5)
    out = guided(x, sigma, extra_option=1)
    ref_cond = inner(x, sigma, context=cond.expand(2, -1, -1))
    ref_uncond = inner(x, sigma, context=uncond.expand(2, -1, -1))
    torch.testing.assert_close(out, ref_uncond + 7.5 * (ref_cond - ref_uncond))
    assert inner.calls[0] == ((4, 4, 8, 8), (4,), (4, 77, 16), {"extra_option": 1})  # cond and uncond: one batch
    assert guided.trace == GuidanceTrace(scale=7.5, skipped_uncond=False, calls=1)


def test_scale_one_skips_the_unconditional_pass_and_says_so():
    x, sigma, cond, uncond = _inputs()
    inner = RecordingDenoiser()
    guided = cfg_denoiser(inner, cond, uncond, scale=1.0)
    out = guided(x, sigma)
    guided(x, sigma)
    torch.testing.assert_close(out, inner(x, sigma, context=cond.expand(2, -1, -1)))
    assert inner.calls[0][0] == (2, 4, 8, 8)  # batch B, not 2B
    assert guided.trace.skipped_uncond and guided.trace.calls == 2


def test_contexts_of_different_lengths_repeat_to_their_lcm():
    x, sigma, cond, uncond = _inputs(cond_len=154, uncond_len=77)
    inner = RecordingDenoiser()
    out = cfg_denoiser(inner, cond, uncond, scale=5.0)(x, sigma)
    assert inner.calls[0][2] == (4, 154, 16)  # uncond repeated twice along the tokens
    ref_cond, ref_uncond = inner(x, sigma, context=cond.expand(2, -1, -1)), inner(x, sigma, context=uncond)
    torch.testing.assert_close(out, ref_uncond + 5.0 * (ref_cond - ref_uncond))


def test_contexts_too_different_in_length_run_apart():
    x, sigma, cond, uncond = _inputs(cond_len=77 * 5, uncond_len=77)
    inner = RecordingDenoiser()
    guided = cfg_denoiser(inner, cond, uncond, scale=2.0)
    guided(x, sigma)
    assert [c[2] for c in inner.calls] == [(2, 385, 16), (2, 77, 16)]
    assert guided.trace.calls == 2


@pytest.mark.parametrize("scale", [0.0, 3.0])
def test_scalar_sigma_and_per_image_contexts(scale):
    x, _, _, _ = _inputs()
    cond, uncond = torch.randn(2, 77, 16), torch.randn(2, 77, 16)
    inner = RecordingDenoiser()
    out = cfg_denoiser(inner, cond, uncond, scale)(x, torch.tensor(2.0))
    ref_uncond = inner(x, torch.tensor([2.0, 2.0]), context=uncond)
    ref_cond = inner(x, torch.tensor([2.0, 2.0]), context=cond)
    torch.testing.assert_close(out, ref_uncond + scale * (ref_cond - ref_uncond))
