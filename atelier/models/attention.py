"""Attention for the UNet: multi-head attention, the spatial transformer, and a window onto cross-attention.

The UNet of latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models") reads the prompt through cross-attention: every latent pixel is a query, every text token a key and
a value, so each pixel gathers a weighted mix of token meanings (Vaswani et al. 2017, "Attention Is All You
Need"). The weights of that mix, softmax(QK^T / sqrt(d)), say which words a pixel listens to. Normally they are
never materialised (scaled_dot_product_attention fuses them away); `capture_cross_attention` turns them on for
a while and `token_heatmaps` turns them into one picture per token.

Module and parameter names follow diffusers' UNet2DConditionModel so that its state_dict loads unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------------------
# Multi-head attention (Vaswani et al. 2017)
# --------------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention: self-attention when `context` is None, cross-attention over `context` otherwise.

    Queries come from the latent tokens x (B, N, dim); keys and values from `context` (B, T, context_dim), which
    is the text encoder's hidden states for cross-attention and x itself for self-attention.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.is_cross = context_dim is not None
        kv_dim = context_dim if context_dim is not None else dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_dim, dim, bias=False)
        self.to_v = nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # a list only so that the weight is named to_out.0
        # Set by `capture_cross_attention` while it is active: receives the probabilities (B, heads, h, w, T).
        self.record: Callable[[torch.Tensor], None] | None = None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """x: (B, N, dim) latent tokens, context: (B, T, context_dim) or None, size: the (h, w) with h*w = N."""
        context = x if context is None else context
        # Project, then split the width into heads: (B, N, dim) -> (B, heads, N, head_dim).
        q = self.to_q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k = self.to_k(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, T, head_dim)
        v = self.to_v(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, T, head_dim)

        if self.record is None:
            # The fast path: the fused kernel never stores the (N, T) probability matrix.
            out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        else:
            # The same computation written out, so the probabilities can be looked at.
            if size is None:
                raise ValueError("recording attention probabilities needs the spatial size (h, w) of the tokens")
            scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # (B, heads, N, T)
            probs = scores.float().softmax(dim=-1)  # each query's weights over the tokens sum to 1
            self.record(probs.detach().unflatten(2, size))  # (B, heads, h, w, T)
            out = probs.to(v.dtype) @ v  # (B, heads, N, head_dim)

        out = out.transpose(1, 2).flatten(2)  # merge the heads again: (B, N, dim)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """A gated linear unit with a GELU gate (Shazeer 2020): half of the projection gates the other half."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # (B, N, hidden) each
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """The transformer's per-token MLP: dim -> 4*dim (GEGLU) -> dim."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # Index 1 is where dropout sits in the reference (unused at inference); keeping the slot keeps the
        # weight names net.0.proj and net.2 identical to diffusers'.
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention, cross-attention to the text, feed-forward; each residual."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)  # latent pixels look at each other
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)  # latent pixels look at the prompt
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))  # (B, N, dim)
        x = x + self.attn2(self.norm2(x), context, size)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Runs transformer blocks over a feature map: (B, C, h, w) -> h*w tokens of width C -> (B, C, h, w).

    The LDM "spatial transformer": GroupNorm, a projection in, `depth` transformer blocks, a projection out, and a
    residual connection around the whole thing. SD1.x projects with 1x1 convs on the map; SD 2.x and SDXL
    (`linear=True`) with Linear layers on the tokens, which is the same per-pixel map stored as (C, C).
    """

    def __init__(self, channels: int, heads: int, context_dim: int, depth: int, norm_groups: int, linear: bool = False):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)  # 1e-6 here, as in LDM and diffusers
        projection = nn.Linear if linear else functools.partial(nn.Conv2d, kernel_size=1)
        self.proj_in = projection(channels, channels)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim) for _ in range(depth)])
        self.proj_out = projection(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        residual = x
        h, w = x.shape[-2:]
        x = self.norm(x)
        if not self.linear:
            x = self.proj_in(x)  # SD1.x: a 1x1 conv on the map (B, C, h, w)
        x = x.flatten(2).transpose(1, 2)  # one token per pixel: (B, h*w, C)
        if self.linear:
            x = self.proj_in(x)  # SD 2.x / SDXL: a Linear on the tokens
        for block in self.transformer_blocks:
            x = block(x, context, (h, w))
        if self.linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).unflatten(2, (h, w))  # back to a feature map: (B, C, h, w)
        if not self.linear:
            x = self.proj_out(x)
        return x + residual


# --------------------------------------------------------------------------------------------------------------
# Looking inside: cross-attention probabilities per text token
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class AttentionMap:
    """What one cross-attention layer did in one forward pass.

    layer: the module's name in the UNet, e.g. "up_blocks.1.attentions.0.transformer_blocks.0.attn2".
    probs: (B, heads, h, w, T) attention probabilities (heads is 1 when captured with average_heads=True);
           probs[b, :, y, x, :] sums to 1 over the T text tokens.
    """

    layer: str
    probs: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        """The (h, w) resolution of the feature map this layer worked at."""
        return (self.probs.shape[2], self.probs.shape[3])


@contextlib.contextmanager
def capture_cross_attention(model: nn.Module, average_heads: bool = False) -> Iterator[list[AttentionMap]]:
    """While active, every cross-attention layer of `model` appends its probabilities to the yielded list.

        with capture_cross_attention(unet) as maps:
            unet(x, t, context)
        heat = token_heatmaps(maps, (64, 64))  # (B, T, 64, 64)

    Each forward pass appends one AttentionMap per cross-attention layer, in execution order (down, middle, up);
    several passes (sampling steps) keep appending, so clear the list between steps to keep only the last.
    The outputs are the same as without capture (up to float rounding); the attention is merely computed
    explicitly instead of by the fused kernel, which costs time and memory. `average_heads=True` stores the
    mean over heads only, 8x less memory for SD1.x.
    """
    maps: list[AttentionMap] = []
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention) and m.is_cross]

    def recorder(name: str) -> Callable[[torch.Tensor], None]:
        def record(probs: torch.Tensor) -> None:
            if average_heads:
                probs = probs.mean(dim=1, keepdim=True)
            maps.append(AttentionMap(name, probs))

        return record

    for name, module in layers:
        module.record = recorder(name)
    try:
        yield maps
    finally:
        for _, module in layers:
            module.record = None


def token_heatmaps(maps: list[AttentionMap], size: int | tuple[int, int]) -> torch.Tensor:
    """One heat map per text token, (B, T, H, W): the captured probabilities averaged over heads and layers.

    Every layer's map is averaged over its heads, bilinearly resized to `size` (H, W), and the layers are then
    averaged with equal weight. Values at a pixel still sum to 1 over the T tokens.
    """
    if not maps:
        raise ValueError("token_heatmaps needs at least one captured AttentionMap; was capture_cross_attention on?")
    size = (size, size) if isinstance(size, int) else tuple(size)
    total = None
    for m in maps:
        per_token = m.probs.float().mean(dim=1).permute(0, 3, 1, 2)  # (B, heads, h, w, T) -> (B, T, h, w)
        per_token = F.interpolate(per_token, size=size, mode="bilinear", align_corners=False)  # (B, T, H, W)
        total = per_token if total is None else total + per_token
    return total / len(maps)
