"""The loop every stage shares: resume, learning-rate schedule, logging, periodic saves, time budget.

A stage writes `<stage>.log.jsonl` (a line every 100 steps) and `<stage>.state.pt` (its modules, optimiser state
and step count) in its run folder, so a stage killed half-way resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from atelier.world.train.data import WorldData
from atelier.world.train.ranks import Ranks
from atelier.world.train.shapes import EmbeddedShapes


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """The loop's numbers, which every stage has (each with its defaults, see the command line's DEFAULTS)."""

    steps: int
    batch: int  # per rank
    lr: float
    warmup: int = 200


def lr_at(step: int, s: StageSettings) -> float:
    """Linear warm-up then cosine decay to 10%."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclasses.dataclass(frozen=True)
class StageJob:
    """What every stage takes; each stage's own options come apart, typed (`VAEOptions`, `UNetOptions`, ...)."""

    shapes: EmbeddedShapes
    data: WorldData | None  # the rendered world; None when only the classifier runs (it renders scenes of its own)
    out: Path  # the run folder: the earlier stages' weights are read there, this stage's written there
    settings: StageSettings
    ranks: Ranks
    budget_s: float | None  # seconds this stage may run (None: no limit); it stops there and resumes later
    seed: int
    workers: int = 1  # render processes per rank
    world: str = "v1"  # the world rendered, labelled and judged (atelier/world/worlds.py)


class Stage:
    """Shared loop mechanics: resume, lr schedule, logging, periodic saves, time budget. Its clock starts when it is
    made."""

    def __init__(self, name: str, job: StageJob):
        self.name, self.out, self.s, self.ranks = name, job.out, job.settings, job.ranks
        self.deadline = time.time() + job.budget_s if job.budget_s else None
        self.log_path = job.out / f"{name}.log.jsonl"
        self.state_path = job.out / f"{name}.state.pt"
        self.step = self.first_step = 0  # first_step: where this process started (after a resume)
        self.t0 = time.time()

    def resume(self, modules: dict[str, nn.Module], opt: torch.optim.Optimizer) -> None:
        if not self.state_path.exists():
            return
        state = torch.load(self.state_path, map_location=self.ranks.device, weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state[key])
        opt.load_state_dict(state["opt"])
        self.step = self.first_step = int(state["step"])
        if self.ranks.main:
            print(f"[{self.name}] resumed at step {self.step}", flush=True)

    def save_state(self, modules: dict[str, nn.Module], opt: torch.optim.Optimizer) -> None:
        if not self.ranks.main:
            return
        state = {key: m.state_dict() for key, m in modules.items()}
        state["opt"], state["step"] = opt.state_dict(), self.step
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def set_lr(self, opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            group["lr"] = lr_at(self.step, self.s)

    def done(self, check_clock_every: int = 25) -> bool:
        """The step count is reached, or the time budget is spent. The clock is read every `check_clock_every`
        steps only: agreeing on it across ranks is a blocking all-reduce, and a GPU kept waiting for the host
        at every step loses the queue of kernels the host had launched ahead."""
        if self.step >= self.s.steps:
            return True
        if self.deadline is None or self.step % check_clock_every:
            return False
        out_of_time = time.time() > self.deadline
        if self.ranks.world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(out_of_time)], device=self.ranks.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        return out_of_time

    def run(
        self,
        modules: dict[str, nn.Module],
        opt: torch.optim.Optimizer,
        loss_fn: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor | float]]],
        clip_norm: float | None = 1.0,
        after_step: Callable[[], None] | None = None,
        save_every: int = 1000,
    ) -> None:
        """The loop all stages share: `loss_fn()` gives (loss, values to log); one optimiser step per call, with the
        learning-rate schedule, gradient clipping, a log line every 100 steps and a resumable save every
        `save_every`. Stops at the step count or when the time budget is spent, then saves."""
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        finished = self.done()
        while not finished:
            self.set_lr(opt)
            loss, logged = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            if after_step is not None:
                after_step()
            self.step += 1
            finished = self.done()
            if self.step % 100 == 0 or finished:
                values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in logged.items()}
                self.log(loss=loss.item(), **values)
            if self.step % save_every == 0:
                self.save_state(modules, opt)
        self.save_state(modules, opt)

    def log(self, **values: float) -> None:
        values = {k: self.ranks.all_mean(float(v)) for k, v in values.items()}
        if not self.ranks.main:
            return
        rate = (self.step - self.first_step) / max(1e-6, time.time() - self.t0)
        record = {"step": self.step, "time_s": round(time.time() - self.t0, 1), **values}
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        text = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        print(f"[{self.name}] step {self.step}/{self.s.steps} {text} ({rate:.1f} it/s)", flush=True)
