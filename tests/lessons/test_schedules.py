"""lessons/schedules.py: every scheduler's sigmas side by side, on SD's training schedule."""

import pytest

from atelier.errors import InputError
from atelier.lessons.schedules import compare_schedulers
from atelier.sampling.denoisers import DiscreteSchedule
from atelier.sampling.schedules import SCHEDULERS, sigmas_for

SD = DiscreteSchedule.scaled_linear()


def test_every_scheduler_from_sigma_max_down_to_zero():
    comparison = compare_schedulers(SD, 5, "karras", 1.0)
    assert list(comparison.curves) == list(SCHEDULERS) and len(SCHEDULERS) == 9
    assert (comparison.sigma_max, comparison.sigma_min) == pytest.approx((14.614642, 0.029167), abs=1e-6)
    for name, sigmas in comparison.curves.items():
        assert sigmas == sigmas_for(name, SD, 5, 1.0).tolist(), name
        assert len(sigmas) == 6 and sigmas[-1] == 0.0 and sigmas == sorted(sigmas, reverse=True), name
    assert comparison.sigmas is comparison.curves["karras"]
    # normal and karras both start at the largest trained sigma; karras then drops faster (Karras et al. 2022, eq. 5).
    assert comparison.curves["normal"] == pytest.approx([14.61464, 4.08608, 1.61558, 0.69515, 0.02917, 0.0], abs=1e-5)
    assert comparison.curves["karras"][:2] == pytest.approx([14.61464, 4.79653], abs=1e-5)
    assert comparison.curves["karras"][-2] == pytest.approx(comparison.sigma_min, abs=1e-6)


def test_denoise_keeps_the_end_of_a_longer_schedule():
    half = compare_schedulers(SD, 10, "normal", 0.5)
    full = compare_schedulers(SD, 20, "normal", 1.0)
    assert (half.steps, half.denoise) == (10, 0.5)
    assert half.sigmas == full.sigmas[-11:] and half.sigmas[0] < half.sigma_max / 5


def test_an_unknown_scheduler_is_named():
    with pytest.raises(InputError, match=r"^Scheduler 'fast' is not known; expected one of simple, .*"):
        compare_schedulers(SD, 10, "fast", 1.0)
