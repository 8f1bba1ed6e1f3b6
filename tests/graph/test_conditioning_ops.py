"""The conditioning nodes ComfyUI's nodes.py defines (ConditioningAverage, ConditioningConcat, ConditioningZeroOut,
ConditioningSetTimestepRange), checked by hand, and the timestep range honoured by guidance: an entry joins only
the steps whose sigma lies between percent_to_sigma(end) and percent_to_sigma(start)."""

from __future__ import annotations

import math

import torch

from atelier.graph.nodes.conditioning import (
    ConditioningAverage,
    ConditioningCombine,
    ConditioningConcat,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
)
from atelier.pipeline import Cond, guide
from atelier.sampling.denoisers import DiscreteSchedule


class QuietContext:
    node_id, prompt, extra_pnginfo = "1", {}, None


CTX = QuietContext()


def context(tokens: int, value: float) -> torch.Tensor:
    return torch.full((1, tokens, 2), value)


def test_average_mixes_position_by_position_and_pads_with_zeros():
    to = [Cond(context(3, 1.0), area=(2, 2, 0, 0), strength=0.5)]
    (out,) = ConditioningAverage().run(CTX, to, [Cond(context(2, 9.0))], 0.25)
    assert out[0].context[0, :, 0].tolist() == [0.25 + 0.75 * 9, 0.25 + 0.75 * 9, 0.25]  # the 3rd: padded with 0
    assert out[0].area == (2, 2, 0, 0) and out[0].strength == 0.5  # the entry of conditioning_to keeps its options
    (cut,) = ConditioningAverage().run(CTX, [Cond(context(2, 1.0))], [Cond(context(5, 3.0))], 0.5)
    assert cut[0].context.shape == (1, 2, 2) and torch.allclose(cut[0].context, torch.tensor(2.0))


def test_concat_appends_the_tokens_of_the_first_source_entry():
    (out,) = ConditioningConcat().run(CTX, [Cond(context(2, 1.0)), Cond(context(1, 2.0))],
                                      [Cond(context(3, 7.0)), Cond(context(3, 8.0))])  # fmt: skip
    assert [c.context[0, :, 0].tolist() for c in out] == [[1, 1, 7, 7, 7], [2, 7, 7, 7]]


def test_zero_out_and_timestep_range_keep_everything_else():
    cond = [Cond(context(2, 4.0), area=(1, 1, 0, 0))]
    (zero,) = ConditioningZeroOut().run(CTX, cond)
    assert torch.equal(zero[0].context, torch.zeros(1, 2, 2)) and zero[0].area == (1, 1, 0, 0)
    (ranged,) = ConditioningSetTimestepRange().run(CTX, cond, 0.2, 0.7)
    assert (ranged[0].start_percent, ranged[0].end_percent) == (0.2, 0.7) and cond[0].start_percent == 0.0


def test_percent_to_sigma_is_comfyuis():
    schedule = DiscreteSchedule.scaled_linear()
    assert schedule.percent_to_sigma(0.0) == 999999999.9 and schedule.percent_to_sigma(1.0) == 0.0
    # 0.5 of the way: timestep (1 - 0.5) * 999 = 499.5, halfway in log-sigma between the trained 499 and 500
    expected = math.exp((math.log(schedule.sigmas[499]) + math.log(schedule.sigmas[500])) / 2)
    assert math.isclose(schedule.percent_to_sigma(0.5), expected, rel_tol=1e-5)


def test_guidance_uses_each_entry_only_inside_its_range():
    """A stub denoiser answers the mean of its context, so the guided x0 says which entries took part."""
    schedule = DiscreteSchedule.scaled_linear()

    def denoise(x, sigma, context):
        return context.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand_as(x).clone()

    (early,) = ConditioningSetTimestepRange().run(CTX, [Cond(context(1, 1.0))], 0.0, 0.5)
    (late,) = ConditioningSetTimestepRange().run(CTX, [Cond(context(1, 3.0))], 0.5, 1.0)
    (both,) = ConditioningCombine().run(CTX, early, late)
    guided = guide(denoise, both, [Cond(context(1, 0.0))], 1.0, schedule)
    x = torch.zeros(1, 4, 2, 2)
    middle = schedule.percent_to_sigma(0.5)
    at = {s: float(guided(x, torch.tensor([s]))[0, 0, 0, 0]) for s in (14.0, middle, 0.1)}
    assert at == {14.0: 1.0, middle: 2.0, 0.1: 3.0}  # high noise: early only; the boundary: both; then late only
    # An entry no step reaches: the prediction is 0, as in ComfyUI (0 / 1e-37).
    (never,) = ConditioningSetTimestepRange().run(CTX, [Cond(context(1, 5.0))], 1.0, 1.0)
    assert float(guide(denoise, never, never, 1.0, schedule)(x, torch.tensor([1.0])).abs().max()) == 0.0
