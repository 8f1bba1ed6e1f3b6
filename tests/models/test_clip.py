"""Parity of atelier's CLIP text encoder with transformers' CLIPTextModel on the same random weights."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from atelier.errors import CheckpointError, InputError
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig

START, END = 49406, 49407


def reference_config(config: TextEncoderConfig) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.width,
        intermediate_size=config.mlp_width,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        max_position_embeddings=config.max_positions,
        hidden_act=config.activation,
        layer_norm_eps=config.layer_norm_eps,
        projection_dim=config.projection_dim or 512,
    )


def file_state_dict(reference: CLIPTextModel) -> dict[str, torch.Tensor]:
    """transformers 5 builds CLIPTextModel without its `text_model.` wrapper and strips that prefix when loading;
    checkpoint files (and CLIPTextModelWithProjection) keep it. Atelier uses the file names."""
    return {f"text_model.{k}": v for k, v in reference.state_dict().items()}


def prompt_ids(batch: int = 2, length: int = 77) -> torch.Tensor:
    """<start>, random words, <end>, padded with <end> as SD1.x does; prompts of different lengths."""
    ids = torch.randint(0, START, (batch, length))
    ids[:, 0] = START
    for b in range(batch):
        ids[b, 5 + 7 * b :] = END
    return ids


def pair(config: TextEncoderConfig) -> tuple[CLIPTextModel, CLIPTextEncoder]:
    reference = CLIPTextModel(reference_config(config)).eval()
    ours = CLIPTextEncoder(config).eval()
    ours.load_state_dict(file_state_dict(reference), strict=True)
    return reference, ours


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference divided by the output's scale (its max abs value, at least 1)."""
    return ((a - b).abs().max() / a.abs().max().clamp(min=1.0)).item()


@pytest.fixture(scope="module")
def tiny() -> tuple[CLIPTextModel, CLIPTextEncoder]:
    torch.manual_seed(1)
    return pair(TextEncoderConfig.tiny())


def test_state_dict_names_and_shapes_equal_transformers(tiny):
    reference, ours = tiny
    theirs = {k: v.shape for k, v in file_state_dict(reference).items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
    assert "text_model.embeddings.position_ids" not in ours.state_dict()


@torch.no_grad()
def test_forward_matches_transformers(tiny):
    reference, ours = tiny
    ids = prompt_ids()
    theirs = reference(ids, output_hidden_states=True)
    mine = ours(ids)
    assert len(mine.hidden_states) == len(theirs.hidden_states) == 4  # embeddings + 3 layers
    for a, b in zip(theirs.hidden_states, mine.hidden_states, strict=True):
        assert max_rel_diff(a, b) <= 1e-4
    assert max_rel_diff(theirs.last_hidden_state, mine.last_hidden_state) <= 1e-4
    assert max_rel_diff(theirs.pooler_output, mine.pooled) <= 1e-4
    assert mine.projected is None


@torch.no_grad()
def test_short_prompt_without_padding_matches(tiny):
    reference, ours = tiny
    ids = prompt_ids(batch=1, length=9)
    assert max_rel_diff(reference(ids).last_hidden_state, ours(ids).last_hidden_state) <= 1e-4


@torch.no_grad()
def test_pooled_is_the_first_end_token(tiny):
    _, ours = tiny
    ids = prompt_ids()
    out = ours(ids)
    assert torch.equal(out.pooled[0], out.last_hidden_state[0, 5])
    assert torch.equal(out.pooled[1], out.last_hidden_state[1, 12])


@torch.no_grad()
def test_projection_matches_clip_text_model_with_projection():
    torch.manual_seed(2)
    config = TextEncoderConfig(width=32, layers=2, heads=4, mlp_width=64, projection_dim=16)
    reference = CLIPTextModelWithProjection(reference_config(config)).eval()
    ours = CLIPTextEncoder(config).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict(), strict=True)
    ids = prompt_ids()
    theirs, mine = reference(ids), ours(ids)
    assert mine.projected is not None and mine.projected.shape == (2, 16)
    assert max_rel_diff(theirs.text_embeds, mine.projected) <= 1e-4
    assert max_rel_diff(theirs.last_hidden_state, mine.last_hidden_state) <= 1e-4


@torch.no_grad()
def test_clip_skip_is_an_earlier_layer_through_the_final_layer_norm(tiny):
    reference, ours = tiny
    ids = prompt_ids()
    theirs = reference(ids, output_hidden_states=True)
    final_ln = reference.final_layer_norm
    assert max_rel_diff(theirs.last_hidden_state, ours.encode(ids, clip_skip=1)) <= 1e-4
    assert max_rel_diff(final_ln(theirs.hidden_states[-2]), ours.encode(ids, clip_skip=2)) <= 1e-4
    assert max_rel_diff(final_ln(theirs.hidden_states[1]), ours.encode(ids, clip_skip=3)) <= 1e-4
    # clip skip 2 is a different conditioning, not a rounding of the same one
    assert (ours.encode(ids, clip_skip=1) - ours.encode(ids, clip_skip=2)).abs().max() > 0.1


def test_clip_skip_out_of_range_names_the_range(tiny):
    _, ours = tiny
    for bad in (0, 4):
        with pytest.raises(InputError, match=rf"clip_skip is {bad}; expected a whole number from 1 to 3\."):
            ours.encode(prompt_ids(), clip_skip=bad)


def test_too_many_tokens_is_an_input_error(tiny):
    _, ours = tiny
    with pytest.raises(InputError, match="hold 78 tokens; the text encoder reads at most 77"):
        ours(prompt_ids(length=78))
    with pytest.raises(InputError, match=r"expected \(batch, tokens\)"):
        ours(torch.zeros(77, dtype=torch.long))


def test_unknown_activation_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="activation 'relu' is not supported"):
        CLIPTextEncoder(TextEncoderConfig(width=8, layers=1, heads=2, mlp_width=16, activation="relu"))


@pytest.mark.slow
@torch.no_grad()
def test_sd15_size_matches_transformers():
    torch.manual_seed(3)
    config = TextEncoderConfig()
    reference, ours = pair(config)
    ids = prompt_ids()
    t0 = time.perf_counter()
    theirs = reference(ids, output_hidden_states=True)
    t1 = time.perf_counter()
    mine = ours(ids)
    t2 = time.perf_counter()
    diffs = [(a - b).abs().max().item() for a, b in zip(theirs.hidden_states, mine.hidden_states, strict=True)]
    last = (theirs.last_hidden_state - mine.last_hidden_state).abs().max().item()
    pooled = (theirs.pooler_output - mine.pooled).abs().max().item()
    skip2 = (reference.final_layer_norm(theirs.hidden_states[-2]) - ours.encode(ids, clip_skip=2)).abs().max().item()
    print(
        f"\nCLIP ViT-L/14 text, batch 2x77, fp32 CPU: max|diff| hidden {max(diffs):.2e}, last {last:.2e}, "
        f"pooled {pooled:.2e}, clip_skip=2 {skip2:.2e}; transformers {t1 - t0:.2f}s, atelier {t2 - t1:.2f}s"
    )
    assert max(diffs) <= 1e-4 * max(1.0, max(h.abs().max().item() for h in theirs.hidden_states))
    assert max(last, pooled, skip2) <= 1e-4 * max(1.0, theirs.last_hidden_state.abs().max().item())
