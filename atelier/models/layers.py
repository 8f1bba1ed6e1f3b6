"""Small building blocks shared by the model files.

Kept deliberately tiny and stable: other model files import from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False
) -> torch.Tensor:
    """Multi-head scaled dot-product attention (Vaswani et al. 2017) on token sequences.

    q: (B, N, C) queries, k: (B, M, C) keys, v: (B, M, Cv) values -> (B, N, Cv).
    Each of the `heads` heads attends with its own C/heads-wide slice: softmax(q k^T / sqrt(C/heads)) v.
    `causal=True` lets token i see only tokens 0..i (the text encoder reads left to right).
    The softmax matrix is never built here: torch's fused kernel does the work.
    """
    B, N, C = q.shape
    M, Cv = k.shape[1], v.shape[2]
    q = q.reshape(B, N, heads, C // heads).transpose(1, 2)  # (B, heads, N, C/heads)
    k = k.reshape(B, M, heads, C // heads).transpose(1, 2)  # (B, heads, M, C/heads)
    v = v.reshape(B, M, heads, Cv // heads).transpose(1, 2)  # (B, heads, M, Cv/heads)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, heads, N, Cv/heads)
    return out.transpose(1, 2).reshape(B, N, Cv)
