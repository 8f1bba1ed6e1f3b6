"""Which noise levels a sampler visits: every scheduler's sigmas for one number of steps, side by side.

Sampling is the same walk whatever the scheduler; only where the steps land changes. karras and exponential spend
more steps at low noise (details), normal and simple spread them evenly over the model's timesteps. With denoise
below 1 (img2img) only the end of a longer schedule is kept (`sampling.schedules.sigmas_for`, ComfyUI's rule).
"""

from __future__ import annotations

import dataclasses

from atelier.errors import InputError
from atelier.sampling.denoisers import DiscreteSchedule
from atelier.sampling.schedules import SCHEDULERS, sigmas_for


@dataclasses.dataclass(frozen=True)
class SchedulerComparison:
    scheduler: str  # the one the lesson is about
    steps: int
    denoise: float
    curves: dict[str, list[float]]  # every scheduler, in SCHEDULERS' order: its steps + 1 sigmas, ending at 0
    sigma_max: float  # the model's largest and smallest trained noise levels (14.6146 and 0.0292 for SD)
    sigma_min: float

    @property
    def sigmas(self) -> list[float]:
        """The chosen scheduler's sigmas."""
        return self.curves[self.scheduler]


def compare_schedulers(schedule: DiscreteSchedule, steps: int, scheduler: str, denoise: float) -> SchedulerComparison:
    """Every scheduler's sigmas for `steps` steps on the model's training `schedule`, `scheduler` the chosen one."""
    if scheduler not in SCHEDULERS:
        raise InputError(f"Scheduler {scheduler!r} is not known; expected one of {', '.join(SCHEDULERS)}.")
    curves = {name: sigmas_for(name, schedule, steps, denoise).tolist() for name in SCHEDULERS}
    return SchedulerComparison(scheduler, steps, denoise, curves, schedule.sigma_max, schedule.sigma_min)
