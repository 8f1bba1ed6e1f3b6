"""OpenCLIP text towers (SD 2.x's ViT-H/14, SDXL's ViT-bigG/14) and SDXL's pair: parity with transformers'
CLIPTextModel / CLIPTextModelWithProjection on the same random weights, the bigG tokenizer's 0 padding, and the
SDXL prompt encoding (75-token chunks, weights per tower)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from atelier.models.clip import CLIPTextEncoder, SDXLTextEncoder
from atelier.models.config import TextEncoderConfig
from atelier.models.tokenizer import CLIPTokenizer
from atelier.pipeline import encode_prompt_sdxl

START, END = 49406, 49407
# Small towers with the real ones' activations: OpenAI's quick_gelu for CLIP-L, exact GELU for OpenCLIP.
TINY_L = TextEncoderConfig(width=32, layers=3, heads=4, mlp_width=64)
TINY_H = TextEncoderConfig(width=48, layers=4, heads=3, mlp_width=96, activation="gelu")
TINY_G = TextEncoderConfig(width=40, layers=4, heads=5, mlp_width=80, activation="gelu", projection_dim=24)


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
        eos_token_id=END,
    )


def pair(config: TextEncoderConfig, seed: int) -> tuple[torch.nn.Module, CLIPTextEncoder]:
    torch.manual_seed(seed)
    if config.projection_dim is None:
        reference = CLIPTextModel(reference_config(config)).eval()
        state = {f"text_model.{k}": v for k, v in reference.state_dict().items()}  # file names keep the prefix
    else:
        reference = CLIPTextModelWithProjection(reference_config(config)).eval()
        state = reference.state_dict()
    ours = CLIPTextEncoder(config).eval()
    ours.load_state_dict(state, strict=True)
    return reference, ours


def prompt_ids(pad: int, batch: int = 2) -> torch.Tensor:
    ids = torch.randint(0, START, (batch, 77))
    ids[:, 0] = START
    for b in range(batch):
        ids[b, 5 + 7 * b] = END
        ids[b, 6 + 7 * b :] = pad
    return ids


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp(min=1.0)).item()


@pytest.mark.parametrize("config", [TINY_H, TINY_G], ids=["open_clip_h", "open_clip_bigg"])
@pytest.mark.parametrize("pad", [END, 0], ids=["pad_end", "pad_zero"])
@torch.no_grad()
def test_open_clip_towers_match_transformers(config, pad):
    reference, ours = pair(config, seed=3)
    ids = prompt_ids(pad)
    theirs = reference(ids, output_hidden_states=True)
    mine = ours(ids)
    assert len(mine.hidden_states) == config.layers + 1
    for a, b in zip(theirs.hidden_states, mine.hidden_states, strict=True):
        assert rel(a, b) <= 1e-4
    assert rel(theirs.last_hidden_state, mine.last_hidden_state) <= 1e-4
    if config.projection_dim is None:
        assert rel(theirs.pooler_output, mine.pooled) <= 1e-4
    else:
        assert rel(theirs.text_embeds, mine.projected) <= 1e-4
    # SD 2.x's reading: the penultimate layer through the final LayerNorm.
    final_ln = reference.text_model.final_layer_norm if config.projection_dim else reference.final_layer_norm
    assert rel(final_ln(theirs.hidden_states[-2]), ours.encode(ids, clip_skip=2)) <= 1e-4


@torch.no_grad()
def test_sdxl_pair_is_both_penultimate_layers_and_bigg_projected_pooled():
    ref_l, ours_l = pair(TINY_L, seed=4)
    ref_g, ours_g = pair(TINY_G, seed=5)
    encoder = SDXLTextEncoder(TINY_L, TINY_G).eval()
    encoder.clip_l.load_state_dict(ours_l.state_dict())
    encoder.clip_g.load_state_dict(ours_g.state_dict())
    ids_l, ids_g = prompt_ids(END), prompt_ids(0)
    context, pooled = encoder.encode(ids_l, ids_g)
    theirs_l = ref_l(ids_l, output_hidden_states=True)
    theirs_g = ref_g(ids_g, output_hidden_states=True)
    # diffusers' StableDiffusionXLPipeline.encode_prompt: hidden_states[-2] of each, concatenated; text_embeds.
    expected = torch.cat([theirs_l.hidden_states[-2], theirs_g.hidden_states[-2]], dim=-1)
    assert context.shape == (2, 77, 32 + 40) and encoder.context_dim == 72
    assert rel(expected, context) <= 1e-4
    assert rel(theirs_g.text_embeds, pooled) <= 1e-4
    # clip skip 1 (CLIPSetLastLayer -1): the last layers, still without the final LayerNorm; pooled unchanged.
    context1, pooled1 = encoder.encode(ids_l, ids_g, clip_skip=1)
    assert rel(torch.cat([theirs_l.hidden_states[-1], theirs_g.hidden_states[-1]], -1), context1) <= 1e-4
    assert torch.equal(pooled1, pooled)


def test_refiner_reads_bigg_alone():
    encoder = SDXLTextEncoder(None, TINY_G).eval()
    context, pooled = encoder.encode(None, prompt_ids(0))
    assert context.shape == (2, 77, 40) and pooled.shape == (2, 24)


def test_presets_are_the_published_towers():
    h, g = TextEncoderConfig.open_clip_h(), TextEncoderConfig.open_clip_bigg()
    assert (h.width, h.layers, h.heads, h.mlp_width, h.activation) == (1024, 24, 16, 4096, "gelu")
    assert (g.width, g.layers, g.heads, g.mlp_width, g.projection_dim) == (1280, 32, 20, 5120, 1280)
    with torch.device("meta"):
        assert sum(p.numel() for p in CLIPTextEncoder(g).parameters()) == 694_659_840  # bigG text tower


def test_bigg_tokenizer_pads_with_zero():
    tok_l, tok_g = CLIPTokenizer.from_default(), CLIPTokenizer.from_default(pad_with_end=False)
    ids_l, ids_g = tok_l("a photo of a cat"), tok_g("a photo of a cat")
    assert ids_l[:7] == ids_g[:7] and ids_g[6] == END
    assert set(ids_l[7:]) == {END} and set(ids_g[7:]) == {0}
    assert len(ids_g) == 77


@torch.no_grad()
def test_sdxl_prompt_chunks_and_weights_per_tower():
    torch.manual_seed(6)
    encoder = SDXLTextEncoder(TINY_L, TINY_G).eval()
    tok_l, tok_g = CLIPTokenizer.from_default(), CLIPTokenizer.from_default(pad_with_end=False)
    long = ", ".join(f"word{i}" for i in range(40))  # more than 75 tokens: two chunks
    context, pooled = encode_prompt_sdxl(encoder, tok_l, tok_g, long)
    assert context.shape == (1, 154, 72) and pooled.shape == (1, 24)

    # One chunk, each tower's ids exactly as its tokenizer gives them.
    plain, pooled_plain = encode_prompt_sdxl(encoder, tok_l, tok_g, "a red cat")
    ids_l, ids_g = torch.tensor([tok_l("a red cat")]), torch.tensor([tok_g("a red cat")])
    direct, direct_pooled = encoder.encode(ids_l, ids_g)
    assert torch.equal(plain, direct) and torch.equal(pooled_plain, direct_pooled)

    # Weighting: z_empty + w (z - z_empty), per tower, on the weighted tokens only.
    weighted, _ = encode_prompt_sdxl(encoder, tok_l, tok_g, "a (red:1.5) cat")
    empty, _ = encoder.encode(torch.tensor([tok_l("")]), torch.tensor([tok_g("")]))
    expected = empty + torch.tensor([1.0, 1.0, 1.5] + [1.0] * 74)[None, :, None] * (direct - empty)
    assert torch.allclose(weighted, expected, atol=1e-5)

    # Different texts per tower, one longer: the shorter is padded with empty chunks.
    two, _ = encode_prompt_sdxl(encoder, tok_l, tok_g, "a cat", long)
    assert two.shape == (1, 154, 72)
    assert torch.allclose(two[:, 77:, :32], empty[..., :32], atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Full size, run on purpose: pytest -m slow tests/models/test_clip_families.py -s
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["open_clip_h", "open_clip_bigg"])
@torch.no_grad()
def test_full_size_open_clip_towers_match_transformers(name):
    config = getattr(TextEncoderConfig, name)()
    reference, ours = pair(config, seed=7)
    ids = prompt_ids(0)
    theirs, mine = reference(ids, output_hidden_states=True), ours(ids)
    scale = max(h.abs().max().item() for h in theirs.hidden_states)
    hidden = max((a - b).abs().max().item() for a, b in zip(theirs.hidden_states, mine.hidden_states, strict=True))
    pooled_ref = theirs.text_embeds if config.projection_dim else theirs.pooler_output
    pooled = (pooled_ref - (mine.projected if config.projection_dim else mine.pooled)).abs().max().item()
    params = sum(p.numel() for p in ours.parameters())
    print(
        f"\n{name}: {params:,} parameters; max|diff| hidden states {hidden:.2e} (scale {scale:.1f}), "
        f"pooled {pooled:.2e}"
    )
    assert hidden <= 1e-4 * max(1.0, scale) and pooled <= 1e-4 * max(1.0, pooled_ref.abs().max().item())
