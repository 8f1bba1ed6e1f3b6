"""Textual-inversion embeddings in the three file layouts, made here with random vectors, read as ComfyUI reads them
(`embedding:name` in the prompt) and encoded exactly as diffusers' `load_textual_inversion` does."""

from __future__ import annotations

import functools
import json
import typing

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel
from transformers import CLIPTokenizer as ReferenceTokenizer

from atelier.errors import CheckpointError
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig
from atelier.models.embeddings import EmbeddingFolder, read_embedding
from atelier.models.paths import ModelPaths
from atelier.models.tokenizer import CLIPTokenizer
from atelier.pipeline import encode_prompt
from tests.models.test_clip import file_state_dict, reference_config

diffusers = pytest.importorskip("diffusers")

CONFIG = TextEncoderConfig.tiny()  # 32 wide
WIDTH = CONFIG.width


@functools.cache
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_default()


@pytest.fixture(scope="module")
def encoders() -> tuple[CLIPTextModel, CLIPTextEncoder]:
    torch.manual_seed(2)
    reference = CLIPTextModel(reference_config(CONFIG)).eval()
    ours = CLIPTextEncoder(CONFIG).eval()
    ours.load_state_dict(file_state_dict(reference), strict=True)
    return reference, ours


def write_layouts(folder, vectors: torch.Tensor) -> None:
    """The same vectors as A1111 .pt, SD1.x .safetensors and (one vector) diffusers learned_embeds.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "a1111", "step": 3000},
        folder / "a1111.pt",
    )
    save_file({"emb_params": vectors.contiguous()}, str(folder / "kohya.safetensors"))
    save_file(
        {"clip_l": vectors.contiguous(), "clip_g": torch.zeros(len(vectors), 1280)}, str(folder / "xl.safetensors")
    )
    torch.save({"<cat-toy>": vectors[0]}, folder / "learned_embeds.bin")


def test_every_layout_gives_its_vectors(tmp_path):
    vectors = torch.randn(3, WIDTH)
    write_layouts(tmp_path, vectors)
    for name in ("a1111.pt", "kohya.safetensors", "xl.safetensors"):
        assert torch.equal(read_embedding(tmp_path / name, WIDTH), vectors), name
    assert torch.equal(read_embedding(tmp_path / "learned_embeds.bin", WIDTH), vectors[:1])


def reference_tokenizer(tmp_path) -> ReferenceTokenizer:
    """transformers' CLIP tokenizer with our vocabulary and merges, written out (nothing is downloaded)."""
    ours = tokenizer()
    (tmp_path / "vocab.json").write_text(json.dumps(ours.vocab))
    merges = sorted(ours.ranks, key=ours.ranks.get)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return ReferenceTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), pad_token="<|endoftext|>")


def test_a_multi_vector_embedding_encodes_as_diffusers_load_textual_inversion(tmp_path, encoders):
    from diffusers.loaders import TextualInversionLoaderMixin

    reference, ours = encoders
    vectors = torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(4))
    folder = tmp_path / "models" / "embeddings"
    write_layouts(folder, vectors)

    class Loader(TextualInversionLoaderMixin):  # the pipeline mixin, on its own
        hf_device_map = None
        components: typing.ClassVar[dict] = {}

    hf_tokenizer, hf_encoder = reference_tokenizer(tmp_path), CLIPTextModel(reference_config(CONFIG)).eval()
    hf_encoder.load_state_dict(reference.state_dict())
    loader = Loader()
    loader.load_textual_inversion(str(folder / "a1111.pt"), token="<cat>", tokenizer=hf_tokenizer,
                                  text_encoder=hf_encoder)  # fmt: skip
    text = loader.maybe_convert_prompt("a photo of <cat> on a table", hf_tokenizer)  # <cat> <cat>_1 <cat>_2
    ids = hf_tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = hf_encoder(ids).last_hidden_state  # (1, 77, width)

    lookup = EmbeddingFolder(ModelPaths(tmp_path), WIDTH)
    unknown: list[str] = []
    for name in ("a1111", "kohya.safetensors", "kohya"):
        got = encode_prompt(ours, tokenizer(), f"a photo of embedding:{name} on a table", 1, lookup, unknown)
        assert got.shape == (1, 77, WIDTH)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert unknown == []
    plain = encode_prompt(ours, tokenizer(), "a photo of embedding:a1111 on a table")  # no folder: just text
    assert (plain - expected).abs().max() > 1e-2


def test_weights_unknown_names_and_commas(tmp_path, encoders):
    _, ours = encoders
    vectors = torch.randn(2, WIDTH)
    write_layouts(tmp_path / "models" / "embeddings", vectors)
    lookup = EmbeddingFolder(ModelPaths(tmp_path), WIDTH)
    tokens = tokenizer().tokenize_prompt("red (embedding:kohya:1.2), embedding:a1111, dog", lookup)
    window = tokens.windows[0]
    red, dog = tokenizer().encode("red")[0], tokenizer().encode("dog")[0]
    assert [i for i, _ in window[:9]] == [tokenizer().start_id, red, -1, -2, 267, -3, -4, 267, dog]  # 267: ","
    assert [w for _, w in window[1:4]] == [1.0, 1.2, 1.2]
    assert torch.equal(torch.cat(tokens.vectors), torch.cat([vectors, vectors]))

    unknown: list[str] = []
    got = encode_prompt(ours, tokenizer(), "red embedding:missing dog", 1, lookup, unknown)
    assert unknown == ["missing"]
    assert torch.equal(got, encode_prompt(ours, tokenizer(), "red dog", 1, lookup))  # left out, as ComfyUI does


def test_bad_embedding_files_get_one_sentence(tmp_path):
    save_file({"emb_params": torch.zeros(2, 768)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(CheckpointError, match=r"^wide\.safetensors holds vectors of shape \(2, 768\); .* 32 wide"):
        read_embedding(tmp_path / "wide.safetensors", WIDTH)
    save_file({"a": torch.zeros(2), "b": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="is not a textual-inversion embedding"):
        read_embedding(tmp_path / "other.safetensors", WIDTH)

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"string_to_param": {"*": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="run code"):
        read_embedding(tmp_path / "evil.pt", WIDTH)
