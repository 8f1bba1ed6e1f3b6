"""ModelMergeSimple and CheckpointSave on the embedded model (ComfyUI's comfy_extras/nodes_model_merging.py):

- the merged UNet samples with ratio * W1 + (1 - ratio) * W2 for every weight, and both checkpoints are left bit
  for bit as they were; ratio 1 is model1 itself;
- CheckpointSave writes output/checkpoints/ComfyUI_00001_.safetensors, which Load Checkpoint reads back with the
  merged weights and which then draws the same latent as the merged MODEL.
"""

from __future__ import annotations

import pytest
import torch

from atelier.errors import InputError
from atelier.graph.catalog import default_registry
from atelier.graph.kit import ClipModel
from atelier.models.lora import patched
from atelier.pipeline import DiffusionModel
from atelier.server.files import DataDir, OutputFiles


class Context:
    node_id, prompt, extra_pnginfo = "1", {"1": {"class_type": "CheckpointSave"}}, None

    def progress(self, value, total) -> None: ...

    def preview(self, image) -> None: ...

    def check_interrupt(self) -> None: ...

    def will_write(self, ref) -> None: ...


CTX = Context()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    registry = default_registry(data.root, OutputFiles(data))
    load = registry.get("CheckpointLoaderSimple")()
    model1, clip, vae = load.run(CTX, "embedded.safetensors")
    model2, _, _ = load.run(CTX, "embedded.safetensors")  # a second copy, made different below
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        for p in model2.unet.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return registry, data, model1, model2, clip, vae


def weights(model) -> dict[str, torch.Tensor]:
    with patched(model.unet, model.patches):
        return {name: p.detach().clone() for name, p in model.unet.named_parameters()}


def test_merge_blends_every_weight_and_changes_neither_model(env):
    registry, _, model1, model2, _, _ = env
    before1, before2 = weights(model1), weights(model2)
    (merged,) = registry.get("ModelMergeSimple")().run(CTX, model1, model2, 0.3)
    blended = weights(merged)
    for name, w in blended.items():
        assert torch.allclose(w, 0.3 * before1[name] + 0.7 * before2[name], atol=1e-6), name
    assert all(torch.equal(w, before1[n]) for n, w in weights(model1).items())  # restored after sampling
    assert all(torch.equal(w, before2[n]) for n, w in weights(model2).items())
    assert registry.get("ModelMergeSimple")().run(CTX, model1, model2, 1.0)[0] is model1


def test_merge_refuses_another_architecture(env):
    registry, _, model1, model2, _, _ = env
    import dataclasses

    small = dataclasses.replace(model2, unet=torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="model2 has other weights than model1"):
        registry.get("ModelMergeSimple")().run(CTX, model1, small, 0.5)


def test_checkpoint_save_writes_a_loadable_checkpoint_of_the_merge(env):
    registry, data, model1, model2, clip, vae = env
    (merged,) = registry.get("ModelMergeSimple")().run(CTX, model1, model2, 0.5)
    out = registry.get("CheckpointSave")().run(CTX, merged, clip, vae, "checkpoints/ComfyUI", CTX.prompt)
    (ref,) = out.ui["checkpoints"]
    assert ref == {"filename": "ComfyUI_00001_.safetensors", "subfolder": "checkpoints", "type": "output"}
    path = data.output / "checkpoints" / "ComfyUI_00001_.safetensors"
    assert path.is_file()

    from atelier.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    saved = dict(loaded.unet.named_parameters())
    for name, w in weights(merged).items():
        assert torch.allclose(saved[name], w, atol=1e-6), name

    # The reloaded file draws the merged model's latent (same seed, same prompt), its text encoder included.
    reloaded = DiffusionModel(loaded.unet, loaded.vae.config.scaling_factor)
    reclip = ClipModel(loaded.text_encoder, loaded.tokenizer)
    encode, empty, sampler = (registry.get(name)() for name in ("CLIPTextEncode", "EmptyLatentImage", "KSampler"))
    (latent,) = empty.run(CTX, 32, 32, 1)

    def draw(model, text_clip):
        (pos,) = encode.run(CTX, "a red circle", text_clip)
        (neg,) = encode.run(CTX, "", text_clip)
        return sampler.run(CTX, model, 3, 3, 5.0, "euler", "normal", pos, neg, latent, 1.0)[0]["samples"]

    assert torch.allclose(draw(reloaded, reclip), draw(merged, clip), atol=1e-4)


def test_checkpoint_save_refuses_a_prefix_outside_the_output_folder(env):
    registry = env[0]
    verdict = registry.get("CheckpointSave").validate_inputs("../../models/checkpoints/x")
    assert isinstance(verdict, str) and "prefix" in verdict.lower()
