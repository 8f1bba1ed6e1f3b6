"""Where training runs: one process per GPU under torchrun (DDP), or a single process; and the precision of its
arithmetic there."""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass
class Ranks:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world


def init_ranks(device: str | None) -> Ranks:
    if "RANK" in os.environ:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        if device == "cpu" or not torch.cuda.is_available():  # torchrun on a CPU: the proof of a GPU script
            dist.init_process_group("gloo")
            return Ranks(rank, world, torch.device("cpu"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return Ranks(rank, world, torch.device("cuda", local))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Ranks(0, 1, torch.device(device))


def wrap_ddp(model: nn.Module, ranks: Ranks) -> nn.Module:
    if ranks.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[ranks.device.index])


def autocast(ranks: Ranks) -> torch.autocast:
    """Mixed precision where it pays: bf16 matrix products on CUDA, plain fp32 on the CPU."""
    if ranks.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
