"""The CLIP text encoder: token ids in, one vector per token out (the UNet's conditioning).

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision") trained a
text transformer and an image encoder together so that matching captions and images land close in one space.
Stable Diffusion (Rombach et al. 2022) keeps only the text tower and feeds its per-token hidden states to the
UNet's cross-attention. SD1.x uses OpenAI's ViT-L/14 text tower: 12 pre-LayerNorm transformer layers, 768 wide.

The forward pass, for ids (B, T) with T <= 77:
    1. embeddings   x = token_embedding[ids] + position_embedding[0..T)      # (B, T, 768)
    2. 12 layers    x = x + attention(LN(x))  (causal: token i sees 0..i)    # (B, T, 768)
                    x = x + mlp(LN(x))        (quick_gelu between two Linear layers)
    3. final LN     last_hidden_state = LN(x)                                # (B, T, 768)
    4. pooling      pooled = last_hidden_state at the <end> token             # (B, 768)

SD 2.x swaps in OpenCLIP ViT-H/14 (24 layers, 1024 wide, exact GELU) and reads its penultimate layer. SDXL reads two
towers side by side (`SDXLTextEncoder`): OpenAI's ViT-L/14 and OpenCLIP ViT-bigG/14 (32 layers, 1280 wide), each
at its penultimate layer without the final LayerNorm, concatenated to 2048 per token; bigG's pooled <end> vector,
projected, also feeds the UNet (its vector y). OpenCLIP's towers are the same network as OpenAI's, so one module
serves all three; only the names inside the files differ (keymap.py).

Parameter names follow transformers' CLIPTextModel (and CLIPTextModelWithProjection for `text_projection`), so
their state_dict loads here unchanged.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from atelier.errors import CheckpointError, InputError
from atelier.models.config import TextEncoderConfig
from atelier.models.layers import multi_head_attention


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the sigmoid approximation of GELU that OpenAI trained CLIP with."""
    return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


@dataclasses.dataclass
class TextEncoderOutput:
    """Everything one pass of the text encoder computes, for ids of shape (B, T)."""

    last_hidden_state: torch.Tensor  # (B, T, width): the last layer's output after the final LayerNorm
    hidden_states: tuple[torch.Tensor, ...]  # layers + 1 entries of (B, T, width): embeddings, then each layer
    pooled: torch.Tensor  # (B, width): last_hidden_state at the first <end> token
    projected: torch.Tensor | None  # (B, projection_dim): pooled @ text_projection, if the model has one


class SelfAttention(nn.Module):
    """Causal multi-head self-attention over the tokens."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, width)
        out = multi_head_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, causal=True)
        return self.out_proj(out)  # (B, T, width)


class MLP(nn.Module):
    """Two Linear layers with the activation between them: width -> mlp_width -> width."""

    def __init__(self, width: int, mlp_width: int, activation: str):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise CheckpointError(
                f"Text encoder activation {activation!r} is not supported; expected one of {', '.join(_ACTIVATIONS)}."
            )
        self.fc1 = nn.Linear(width, mlp_width)
        self.fc2 = nn.Linear(mlp_width, width)
        self.activation = _ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))  # (B, T, mlp_width) in the middle, (B, T, width) out


class EncoderLayer(nn.Module):
    """One pre-LayerNorm transformer layer: normalise, then add each sub-layer's output to the residual stream."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.self_attn = SelfAttention(config.width, config.heads)
        self.layer_norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = MLP(config.width, config.mlp_width, config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, width)
        x = x + self.self_attn(self.layer_norm1(x))
        x = x + self.mlp(self.layer_norm2(x))
        return x


class Embeddings(nn.Module):
    """A learned vector per token id plus a learned vector per position (0..76)."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.max_positions, config.width)

    def forward(self, input_ids: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> (B, T, width). With `vectors` (E, width), a textual-inversion embedding's, an id
        below 0 stands for row -1 - id of them instead of a row of the token table (tokenizer.tokenize_prompt)."""
        T = input_ids.shape[1]
        tokens = self.token_embedding(input_ids.clamp(min=0))  # (B, T, width)
        if vectors is not None:
            rows = vectors.to(tokens.device, tokens.dtype)[(-1 - input_ids).clamp(min=0)]  # (B, T, width)
            tokens = torch.where((input_ids < 0)[..., None], rows, tokens)
        return tokens + self.position_embedding.weight[:T]  # (B, T, width)


class Encoder(nn.Module):
    """The stack of transformer layers (a module of its own only so that parameter names match)."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(config.layers)])


class TextTransformer(nn.Module):
    """Embeddings, the layer stack and the final LayerNorm."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, num_layers: int, vectors: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The embeddings and the outputs of the first `num_layers` layers, each (B, T, width), no final LN."""
        x = self.embeddings(input_ids, vectors)
        hidden_states = [x]
        for layer in self.encoder.layers[:num_layers]:
            x = layer(x)
            hidden_states.append(x)
        return hidden_states


class CLIPTextEncoder(nn.Module):
    """The CLIP text tower. `encode` gives the SD conditioning; `forward` gives every intermediate result."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.text_model = TextTransformer(config)
        # The projection into the joint text-image space (used by CLIP scoring, not by SD1.x's UNet).
        self.text_projection = (
            nn.Linear(config.width, config.projection_dim, bias=False) if config.projection_dim is not None else None
        )

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.ndim != 2:
            raise InputError(f"Token ids have shape {tuple(input_ids.shape)}; expected (batch, tokens).")
        if input_ids.shape[1] > self.config.max_positions:
            raise InputError(
                f"Token ids hold {input_ids.shape[1]} tokens; the text encoder reads at most "
                f"{self.config.max_positions}."
            )

    def forward(self, input_ids: torch.Tensor) -> TextEncoderOutput:
        """All layers on ids (B, T); equals transformers' CLIPTextModel with output_hidden_states=True."""
        self._check_ids(input_ids)
        hidden_states = self.text_model(input_ids, num_layers=self.config.layers)
        last = self.text_model.final_layer_norm(hidden_states[-1])  # (B, T, width)
        # Pooling: the causal mask means only the <end> token has read the whole prompt, so its vector stands for
        # the prompt. <end> (49407) is the largest id in CLIP's vocabulary and SD pads with it, so the argmax of
        # the ids is the first <end>, as in OpenAI's code.
        end = input_ids.argmax(dim=-1)  # (B,)
        pooled = last[torch.arange(last.shape[0], device=last.device), end]  # (B, width)
        projected = self.text_projection(pooled) if self.text_projection is not None else None
        return TextEncoderOutput(last, tuple(hidden_states), pooled, projected)

    def encode(self, input_ids: torch.Tensor, clip_skip: int = 1, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning SD1.x gives the UNet: (B, T) ids -> (B, T, width).

        `clip_skip` picks the layer: 1 is the last layer, 2 the one before it ("clip skip 2", which many anime
        checkpoints were trained with), and so on. Whichever layer is picked, the final LayerNorm is applied to
        it, as A1111's "Clip skip" setting and ComfyUI's CLIPSetLastLayer node do for SD1.x (ComfyUI's
        comfy/sd1_clip.py: `layer_norm_hidden_state=True` by default). ComfyUI counts from the end with negative
        numbers: stop_at_clip_layer = -1 is clip_skip 1, -2 is clip_skip 2. The layers after the picked one
        would be thrown away, so they are not run. `vectors` (E, width): textual-inversion vectors that negative
        ids stand for (see `Embeddings.forward`).
        """
        self._check_ids(input_ids)
        if not 1 <= clip_skip <= self.config.layers:
            raise InputError(f"clip_skip is {clip_skip}; expected a whole number from 1 to {self.config.layers}.")
        if vectors is None and bool((input_ids < 0).any()):
            raise InputError("Token ids below 0 stand for embedding vectors, but no vectors were given.")
        hidden_states = self.text_model(input_ids, num_layers=self.config.layers - clip_skip + 1, vectors=vectors)
        return self.text_model.final_layer_norm(hidden_states[-1])  # (B, T, width)

    def encode_with_pooled(
        self,
        input_ids: torch.Tensor,
        clip_skip: int = 2,
        final_norm: bool = False,
        vectors: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL's reading of a tower: (hidden (B, T, width), pooled (B, projection_dim or width)).

        `hidden` is layer `clip_skip` from the end (2, the penultimate, by default), through the final LayerNorm
        only if `final_norm` (SDXL: not; ComfyUI's `layer_norm_hidden_state=False`, diffusers' hidden_states[-2]).
        `pooled` always comes from the last layer after the final LayerNorm, at the first <end> token, projected
        when the tower has a projection: CLIPTextModelWithProjection's text_embeds, whatever `clip_skip` is.
        """
        self._check_ids(input_ids)
        if not 1 <= clip_skip <= self.config.layers:
            raise InputError(f"clip_skip is {clip_skip}; expected a whole number from 1 to {self.config.layers}.")
        if vectors is None and bool((input_ids < 0).any()):
            raise InputError("Token ids below 0 stand for embedding vectors, but no vectors were given.")
        hidden_states = self.text_model(input_ids, num_layers=self.config.layers, vectors=vectors)
        picked = hidden_states[-clip_skip]  # (B, T, width)
        if final_norm:
            picked = self.text_model.final_layer_norm(picked)
        last = self.text_model.final_layer_norm(hidden_states[-1])
        # <end> is the largest id; bigG pads with 0 and SD1.x with <end>, so the argmax is the first <end> in both.
        pooled = last[torch.arange(last.shape[0], device=last.device), input_ids.argmax(dim=-1)]  # (B, width)
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)  # (B, projection_dim)
        return picked, pooled


class SDXLTextEncoder(nn.Module):
    """SDXL's two text towers (Podell et al. 2023, section 2.1): CLIP ViT-L/14 and OpenCLIP ViT-bigG/14.

    encode(ids_l (B, T), ids_g (B, T)) -> context (B, T, 768 + 1280 = 2048), pooled (B, 1280): per token, the
    penultimate layers of both towers side by side (no final LayerNorm), and bigG's projected pooled vector. The
    refiner has `clip_l=None` and reads bigG alone (context 1280 wide).
    """

    def __init__(self, clip_l: TextEncoderConfig | None, clip_g: TextEncoderConfig):
        super().__init__()
        self.clip_l = CLIPTextEncoder(clip_l) if clip_l is not None else None
        self.clip_g = CLIPTextEncoder(clip_g)

    @property
    def context_dim(self) -> int:
        return self.clip_g.config.width + (self.clip_l.config.width if self.clip_l is not None else 0)

    def encode(
        self, ids_l: torch.Tensor | None, ids_g: torch.Tensor, clip_skip: int = 2
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (B, T, 2048), pooled (B, 1280)); `clip_skip` counts from the end in each tower (2 = penultimate,
        SDXL's default; 1 = ComfyUI's CLIPSetLastLayer -1)."""
        hidden_g, pooled = self.clip_g.encode_with_pooled(ids_g, clip_skip)
        if self.clip_l is None:
            return hidden_g, pooled
        if ids_l is None or ids_l.shape != ids_g.shape:
            got = None if ids_l is None else tuple(ids_l.shape)
            raise InputError(f"The CLIP-L token ids have shape {got}; expected {tuple(ids_g.shape)}, as bigG's.")
        hidden_l, _ = self.clip_l.encode_with_pooled(ids_l, clip_skip)
        return torch.cat([hidden_l, hidden_g], dim=-1), pooled
