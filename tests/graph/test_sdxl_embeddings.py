"""`embedding:name` through the real nodes on a tiny random SDXL checkpoint: CheckpointLoaderSimple gives a CLIP
that reads models/embeddings with one vector set per tower, and CLIPTextEncode puts them in the conditioning (the
encoding itself is checked against hand-built token tables and diffusers in tests/models/test_embeddings_sdxl.py).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from atelier.graph.catalog import default_registry
from atelier.server.files import DataDir, OutputFiles
from tests.models.tiny_families import TINY_G, TINY_L, write_tiny_sdxl

BASE = "sd_xl_base_1.0.safetensors"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    write_tiny_sdxl(data.models / "checkpoints" / BASE, seed=1)
    g = torch.Generator().manual_seed(3)
    save_file(
        {"clip_l": torch.randn(2, TINY_L.width, generator=g), "clip_g": torch.randn(2, TINY_G.width, generator=g)},
        str(data.models / "embeddings" / "xl.safetensors"),
    )
    save_file({"emb_params": torch.zeros(2, 24)}, str(data.models / "embeddings" / "sd2.safetensors"))
    return default_registry(data.root, OutputFiles(data))


def encode(registry, clip, text: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    out = registry.get("CLIPTextEncode")().run(None, text, clip)
    ui, (conds,) = (out["ui"], out["result"]) if isinstance(out, dict) else ({}, out)
    return conds[0].context, conds[0].pooled, ui


def test_checkpoint_loader_clip_reads_sdxl_embeddings(registry):
    from atelier.errors import CheckpointError

    _, clip, _ = registry.get("CheckpointLoaderSimple")().run(None, BASE)
    assert clip.is_sdxl and clip.embeddings is not None
    with_it, pooled, ui = encode(registry, clip, "a photo of embedding:xl on a table")
    as_text, pooled_text, _ = encode(registry, clip, "a photo of xl on a table")
    assert ui == {} and with_it.shape == as_text.shape == (1, 77, TINY_L.width + TINY_G.width)
    # The embedding takes 2 positions where "xl" took 1: from position 4 on, both towers' halves differ.
    assert (with_it[0, 4:, : TINY_L.width] - as_text[0, 4:, : TINY_L.width]).abs().max() > 1e-3
    assert (with_it[0, 4:, TINY_L.width :] - as_text[0, 4:, TINY_L.width :]).abs().max() > 1e-3
    assert (pooled - pooled_text).abs().max() > 1e-4  # bigG's pooled vector reads its clip_g vectors too
    torch.testing.assert_close(with_it[0, :4], as_text[0, :4])  # causal attention: positions before are unchanged

    _, _, ui = encode(registry, clip, "a photo of embedding:nothing_here")
    assert ui["warnings"] == ["embedding:nothing_here matched no file in models/embeddings and was left out."]
    with pytest.raises(CheckpointError, match=r"^sd2\.safetensors holds emb_params \(2, 24\), which fits none"):
        encode(registry, clip, "embedding:sd2")


def test_generation_run_reads_sdxl_embeddings(registry):
    """The CLI's and the lab's path (generation.run), with the folder the CLI builds for the checkpoint."""
    from atelier.generation import GenerationParams, run
    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.embeddings import EmbeddingFolder

    models = registry.get("CheckpointLoaderSimple").env.models
    ckpt = load_checkpoint(models.resolve("checkpoints", BASE), device="cpu", dtype=torch.float32)
    embeddings = EmbeddingFolder.for_text_encoder(models, ckpt.text_encoder)
    assert embeddings.towers == {"clip_l": TINY_L.width, "clip_g": TINY_G.width}
    params = GenerationParams("a photo of embedding:xl", seed=4, steps=2, cfg=1.0, width=64, height=64)
    with_it = run(ckpt, params, embeddings=embeddings).latent
    again = run(ckpt, params, embeddings=embeddings).latent
    as_text = run(ckpt, params).latent  # no folder: "embedding:xl" is read as words
    assert torch.equal(with_it, again)
    assert (with_it - as_text).abs().max() > 1e-4
