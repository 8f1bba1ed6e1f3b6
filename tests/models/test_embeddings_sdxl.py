"""SDXL textual-inversion embeddings: one vector set per text tower, made here with random vectors.

An SDXL file holds `clip_l` (n, 768) and `clip_g` (n, 1280) (kohya's sdxl_train_textual_inversion.py); the
CLIP-L tower reads the first, bigG the second, at the same n positions of the prompt. The reference is built by
hand: the towers with n rows of their token tables overwritten by the vectors, reading a prompt that has those
token ids where `embedding:name` was. diffusers' `load_textual_inversion`, called once per text encoder as its SDXL
docs do, gives the same context and pooled vector on the same random weights.
"""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTokenizer as ReferenceTokenizer

from atelier.errors import CheckpointError
from atelier.models.clip import SDXLTextEncoder
from atelier.models.config import TextEncoderConfig
from atelier.models.embeddings import EmbeddingFolder
from atelier.models.paths import ModelPaths
from atelier.models.tokenizer import CLIPTokenizer
from atelier.pipeline import encode_prompt_sdxl
from tests.models.test_clip_families import TINY_G, TINY_L, pair

TOK_L, TOK_G = CLIPTokenizer.from_default(), CLIPTokenizer.from_default(pad_with_end=False)  # bigG pads with 0
STAND_INS = ("red", "green", "blue")  # one token each; their table rows are overwritten in the reference
I18N = Path(__file__).parents[2] / "atelier" / "web" / "lab" / "i18n"


def stand_in_ids() -> list[int]:
    ids = [TOK_L.encode(word) for word in STAND_INS]
    assert all(len(i) == 1 for i in ids)
    return [i[0] for i in ids]


def encoder(clip_l: TextEncoderConfig | None, clip_g: TextEncoderConfig, seed: int) -> SDXLTextEncoder:
    torch.manual_seed(seed)
    return SDXLTextEncoder(clip_l, clip_g).eval()


def by_hand(model: SDXLTextEncoder, vectors: dict[str, torch.Tensor], prompt: str) -> tuple[torch.Tensor, ...]:
    """The reference: each tower's token rows for the stand-in words replaced by its vectors, then the plain
    prompt (`embedding:xl` written as the stand-in words) encoded."""
    model = copy.deepcopy(model)
    rows = stand_in_ids()[: len(next(iter(vectors.values())))]
    with torch.no_grad():
        for tower, v in vectors.items():
            getattr(model, tower).text_model.embeddings.token_embedding.weight[rows] = v
    plain = prompt.replace("embedding:xl", " ".join(STAND_INS[: len(rows)]))
    return encode_prompt_sdxl(model, TOK_L, TOK_G, plain)


def folder(root: Path, model: SDXLTextEncoder, **files: dict[str, torch.Tensor]) -> EmbeddingFolder:
    (root / "models" / "embeddings").mkdir(parents=True, exist_ok=True)
    for name, tensors in files.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "models" / "embeddings" / name))
    return EmbeddingFolder.for_text_encoder(ModelPaths(root), model)


@pytest.mark.parametrize("prompt", ["a photo of embedding:xl on a table", "a photo of (embedding:xl:1.3), on a table"])
def test_each_tower_reads_its_vectors_as_if_written_into_its_token_table(tmp_path, prompt):
    model = encoder(TINY_L, TINY_G, seed=1)  # CLIP-L 32 wide, bigG 40
    g = torch.Generator().manual_seed(2)
    vectors = {"clip_l": torch.randn(3, 32, generator=g), "clip_g": torch.randn(3, 40, generator=g)}
    lookup = folder(tmp_path, model, **{"xl.safetensors": vectors})
    unknown: list[str] = []
    context, pooled = encode_prompt_sdxl(model, TOK_L, TOK_G, prompt, embeddings=lookup, unknown=unknown)
    expected, expected_pooled = by_hand(model, vectors, prompt)
    assert context.shape == (1, 77, 72) and unknown == []
    torch.testing.assert_close(context, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, expected_pooled, rtol=1e-5, atol=1e-5)
    plain, _ = encode_prompt_sdxl(model, TOK_L, TOK_G, prompt)  # no folder: "embedding:xl" is just text
    assert (plain - expected).abs().max() > 1e-2


def test_clip_l_and_clip_g_go_to_their_own_towers(tmp_path):
    """Towers of one width, so that swapped keys would load without complaint: only the right order matches."""
    same_g = TextEncoderConfig(width=32, layers=4, heads=4, mlp_width=64, activation="gelu", projection_dim=24)
    model = encoder(TINY_L, same_g, seed=3)
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 32, generator=g), torch.randn(2, 32, generator=g)
    lookup = folder(tmp_path, model, **{"xl.safetensors": {"clip_l": a, "clip_g": b}})
    prompt = "embedding:xl in the snow"
    context, _ = encode_prompt_sdxl(model, TOK_L, TOK_G, prompt, embeddings=lookup)
    right, _ = by_hand(model, {"clip_l": a, "clip_g": b}, prompt)
    swapped, _ = by_hand(model, {"clip_l": b, "clip_g": a}, prompt)
    torch.testing.assert_close(context, right, rtol=1e-5, atol=1e-5)
    assert (context[..., :32] - swapped[..., :32]).abs().max() > 1e-2  # CLIP-L's half
    assert (context[..., 32:] - swapped[..., 32:]).abs().max() > 1e-2  # bigG's half


def test_a_one_tower_file_goes_where_it_fits_and_the_other_tower_reads_zeros(tmp_path):
    model = encoder(TINY_L, TINY_G, seed=5)
    g = torch.Generator().manual_seed(6)
    wide_g, wide_l = torch.randn(2, 40, generator=g), torch.randn(2, 32, generator=g)
    lookup = folder(tmp_path, model, **{"g.safetensors": {"emb_params": wide_g}})
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": wide_l}}, tmp_path / "models/embeddings/l.pt")
    for name, vectors in (("g", {"clip_l": torch.zeros(2, 32), "clip_g": wide_g}),
                          ("l", {"clip_l": wide_l, "clip_g": torch.zeros(2, 40)})):  # fmt: skip
        prompt = "a cat, embedding:xl"
        context, _ = encode_prompt_sdxl(model, TOK_L, TOK_G, prompt.replace("xl", name), embeddings=lookup)
        expected, _ = by_hand(model, vectors, prompt)
        torch.testing.assert_close(context, expected, rtol=1e-5, atol=1e-5, msg=name)


def test_files_that_fit_no_tower_are_refused_in_one_sentence_in_both_languages(tmp_path):
    model = encoder(TINY_L, TINY_G, seed=7)
    lookup = folder(
        tmp_path, model,
        **{"sd2.safetensors": {"emb_params": torch.zeros(2, 24)},
           "uneven.safetensors": {"clip_l": torch.zeros(2, 32), "clip_g": torch.zeros(3, 40)}},
    )  # fmt: skip
    with pytest.raises(CheckpointError) as caught:
        encode_prompt_sdxl(model, TOK_L, TOK_G, "embedding:sd2", embeddings=lookup)
    assert str(caught.value) == (
        "sd2.safetensors holds emb_params (2, 24), which fits none of this checkpoint's text towers: they read "
        "vectors 32 (CLIP-L) or 40 (bigG) wide (is it an embedding for another model family?)."
    )
    french = json.loads((I18N / "fr.json").read_text(encoding="utf-8"))[f"server.{caught.value.key}"]
    assert french.format(**caught.value.params).startswith("sd2.safetensors contient emb_params (2, 24), qui ne")
    with pytest.raises(CheckpointError, match=r"^uneven\.safetensors holds a different number of vectors per tower"):
        encode_prompt_sdxl(model, TOK_L, TOK_G, "embedding:uneven", embeddings=lookup)

    refiner = encoder(None, TINY_G, seed=8)  # bigG alone: a CLIP-L-only file fits nothing
    lookup = folder(tmp_path / "r", refiner, **{"l.safetensors": {"clip_l": torch.zeros(2, 32)}})
    with pytest.raises(CheckpointError, match=r"^l\.safetensors holds clip_l \(2, 32\), .* vectors 40 \(bigG\) wide"):
        encode_prompt_sdxl(refiner, TOK_L, TOK_G, "embedding:l", embeddings=lookup)


def test_unknown_names_are_reported_once_and_left_out(tmp_path):
    model = encoder(TINY_L, TINY_G, seed=9)
    lookup = folder(tmp_path, model)
    unknown: list[str] = []
    got, _ = encode_prompt_sdxl(model, TOK_L, TOK_G, "red embedding:missing dog", embeddings=lookup, unknown=unknown)
    assert unknown == ["missing"]
    assert torch.equal(got, encode_prompt_sdxl(model, TOK_L, TOK_G, "red dog")[0])


def reference_tokenizer(root: Path, pad: str) -> ReferenceTokenizer:
    """transformers' CLIP tokenizer with our vocabulary and merges, written out (nothing is downloaded)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(TOK_L.vocab))
    merges = sorted(TOK_L.ranks, key=TOK_L.ranks.get)
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return ReferenceTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), pad_token=pad)


def test_sdxl_embedding_encodes_as_diffusers_load_textual_inversion_into_both_encoders(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers.loaders import TextualInversionLoaderMixin

    ref_l, ours_l = pair(TINY_L, seed=10)
    ref_g, ours_g = pair(TINY_G, seed=11)
    model = SDXLTextEncoder(TINY_L, TINY_G).eval()
    model.clip_l.load_state_dict(ours_l.state_dict())
    model.clip_g.load_state_dict(ours_g.state_dict())
    g = torch.Generator().manual_seed(12)
    vectors = {"clip_l": torch.randn(3, 32, generator=g), "clip_g": torch.randn(3, 40, generator=g)}
    lookup = folder(tmp_path, model, **{"xl.safetensors": vectors})

    class Loader(TextualInversionLoaderMixin):  # the pipeline mixin, on its own
        hf_device_map = None
        components: typing.ClassVar[dict] = {}

    # diffusers' SDXL recipe: one load_textual_inversion per text encoder, clip_l's vectors into text_encoder and
    # clip_g's into text_encoder_2, under the same token.
    loader, text = Loader(), "a photo of <xl> on a table"
    hidden, pooled = [], None
    for ref, tower, pad in ((ref_l, "clip_l", "<|endoftext|>"), (ref_g, "clip_g", "!")):
        tokenizer = reference_tokenizer(tmp_path / tower, pad)
        loader.load_textual_inversion(vectors[tower], token="<xl>", tokenizer=tokenizer, text_encoder=ref)
        ids = tokenizer(loader.maybe_convert_prompt(text, tokenizer), padding="max_length", max_length=77,
                        return_tensors="pt").input_ids  # fmt: skip
        with torch.no_grad():
            out = ref(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])  # SDXL reads the penultimate layer of both towers
        pooled = getattr(out, "text_embeds", None)
    expected = torch.cat(hidden, dim=-1)  # (1, 77, 72)

    context, ours_pooled = encode_prompt_sdxl(model, TOK_L, TOK_G, "a photo of embedding:xl on a table",
                                              embeddings=lookup)  # fmt: skip
    torch.testing.assert_close(context, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_pooled, pooled, rtol=1e-5, atol=1e-5)
