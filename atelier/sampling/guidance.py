"""Classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598) as one denoiser wrapper.

The model is asked twice, once with the prompt (cond) and once with the negative or empty prompt (uncond), and the
answer is pushed away from the unconditional one: x0 = uncond + scale * (cond - uncond). Both passes run as one
batch of 2B. Samplers see an ordinary denoiser `guided(x, sigma) -> x0` and never know guidance happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Denoise = Callable[..., Tensor]  # denoise(x, sigma, context=...) -> x0


@dataclass
class GuidanceTrace:
    """What guidance did: `skipped_uncond` is True when scale == 1 made the unconditional pass unnecessary
    (uncond + 1 * (cond - uncond) = cond, so only cond is computed); `calls` counts denoiser calls so far."""

    scale: float
    skipped_uncond: bool
    calls: int = 0


def _same_token_length(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
    """Repeat contexts (B, T, D) along T to the least common multiple of their lengths, as ComfyUI does for
    prompts longer than 77 tokens (77, 154, ...). Repeating is harmless: attention over a context repeated k times
    gives the same result. None when that takes more than 4 copies (ComfyUI then runs the two apart)."""
    n = math.lcm(a.shape[1], b.shape[1])
    if n // min(a.shape[1], b.shape[1]) > 4:
        return None
    return a.repeat(1, n // a.shape[1], 1), b.repeat(1, n // b.shape[1], 1)


class CFGDenoiser:
    """The guided denoiser made by `cfg_denoiser`; `trace` tells what it did."""

    def __init__(
        self,
        denoise: Denoise,
        cond: Tensor,
        uncond: Tensor,
        scale: float,
        cond_y: Tensor | None = None,
        uncond_y: Tensor | None = None,
    ) -> None:
        self.denoise, self.cond, self.uncond, self.scale = denoise, cond, uncond, float(scale)
        self.cond_y, self.uncond_y = cond_y, uncond_y  # SDXL's vector y of each side, (1 or B, adm), or None
        self.trace = GuidanceTrace(scale=self.scale, skipped_uncond=math.isclose(self.scale, 1.0))

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args) -> Tensor:
        b = x.shape[0]  # x: (B, C, h, w)
        sigma = sigma.expand(b) if sigma.ndim == 0 else sigma  # (B,)
        cond = self.cond.expand(b, -1, -1) if self.cond.shape[0] == 1 else self.cond  # (B, T, D)
        y_cond = _per_image(self.cond_y, x)  # (B, adm) or {}
        if self.trace.skipped_uncond:
            self.trace.calls += 1
            return self.denoise(x, sigma, context=cond, **y_cond, **extra_args)
        uncond = self.uncond.expand(b, -1, -1) if self.uncond.shape[0] == 1 else self.uncond  # (B, T', D)
        y_uncond = _per_image(self.uncond_y, x)
        pair = _same_token_length(cond, uncond)
        if pair is None:  # lengths too different to batch: two calls
            self.trace.calls += 2
            x0_cond = self.denoise(x, sigma, context=cond, **y_cond, **extra_args)
            x0_uncond = self.denoise(x, sigma, context=uncond, **y_uncond, **extra_args)
        else:  # one call on a batch of 2B: [cond images; uncond images], each with its own y (SDXL)
            self.trace.calls += 1
            both_y = {"y": torch.cat([y_cond["y"], y_uncond["y"]])} if y_cond else {}
            both = self.denoise(
                torch.cat([x, x]), torch.cat([sigma, sigma]), context=torch.cat(pair), **both_y, **extra_args
            )
            x0_cond, x0_uncond = both.chunk(2)
        return x0_uncond + (x0_cond - x0_uncond) * self.scale


def _per_image(y: Tensor | None, x: Tensor) -> dict[str, Tensor]:
    """{"y": y expanded to (B, adm) on x's device} for the denoiser's keyword arguments, or {} without a vector."""
    if y is None:
        return {}
    y = y.to(x.device)
    return {"y": y.expand(x.shape[0], -1) if y.shape[0] == 1 else y}


def cfg_denoiser(
    denoise: Denoise,
    cond: Tensor,
    uncond: Tensor,
    scale: float,
    cond_y: Tensor | None = None,
    uncond_y: Tensor | None = None,
) -> CFGDenoiser:
    """Wrap `denoise(x, sigma, context=...)` with classifier-free guidance of strength `scale`.

    cond, uncond: text-encoder contexts of shape (1 or B, T, D). scale = 1 skips the unconditional pass and says so
    in `guided.trace.skipped_uncond`. SDXL: `cond_y`, `uncond_y` (1 or B, adm), each side's vector y (pooled text
    + size embeddings), go to the network with their side's context; both or neither.
    """
    if (cond_y is None) != (uncond_y is None):
        raise ValueError("cfg_denoiser takes both sides' vectors y or neither")
    return CFGDenoiser(denoise, cond, uncond, scale, cond_y, uncond_y)
