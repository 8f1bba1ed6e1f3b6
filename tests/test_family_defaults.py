"""Per-family defaults: the native size the CLI and the lab start from (SDXL 1024, SD 2.x 768-v 768, SD1.x and
SD 2.x base 512, the embedded model 128), SDXL and SD 2.x files through `atelier generate`, and the PNG's graph
re-run through the node executor giving the same pixels (one engine for the CLI and the graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.images import png_metadata
from atelier.models.library import EMBEDDED_PATH, native_size, resolve_model
from tests.models.tiny_families import write_tiny_refiner, write_tiny_sd2, write_tiny_sdxl


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "models" / "checkpoints"
    return {
        "sdxl": write_tiny_sdxl(folder / "tiny_sdxl.safetensors", seed=4),
        "refiner": write_tiny_refiner(folder / "tiny_refiner.safetensors", seed=5),
        "sd2-v": write_tiny_sd2(folder / "tiny_sd2_768v.safetensors", seed=6),
        "sd2-base": write_tiny_sd2(folder / "tiny_sd2_base.safetensors", seed=7, v_prediction=False),
    }


def test_native_size_per_family(files):
    assert native_size(files["sdxl"]) == native_size(files["refiner"]) == 1024
    assert native_size(files["sd2-v"]) == 768
    assert native_size(files["sd2-base"]) == 512
    if EMBEDDED_PATH.exists():
        assert native_size(EMBEDDED_PATH) == 128  # its own metadata


def test_the_lab_finds_each_model_by_name_in_the_models_folder(files):
    """The lab's options route gives native_size(resolve_model(name, data root)) for each ckpt_name."""
    root = files["sdxl"].parents[2]
    sizes = {name: native_size(resolve_model(name, root)) for name in (p.name for p in files.values())}
    assert sizes == {
        "tiny_sdxl.safetensors": 1024,
        "tiny_refiner.safetensors": 1024,
        "tiny_sd2_768v.safetensors": 768,
        "tiny_sd2_base.safetensors": 512,
    }


@pytest.mark.parametrize("family", ["sdxl", "sd2-v"])
def test_generate_on_a_family_file_reruns_identically_through_the_graph(files, tmp_path, family):
    out = tmp_path / "x.png"
    args = ["generate", "a glass bottle", "--model", str(files[family]), "--steps", "3", "--seed", "5"]
    assert main([*args, "--width", "64", "--height", "48", "-o", str(out)]) == 0
    assert Image.open(out).size == (64, 48)
    graph = png_metadata(out)["prompt"]
    assert graph["4"]["inputs"]["ckpt_name"] == files[family].name
    assert all(n["class_type"] != "CLIPSetLastLayer" for n in graph.values())  # the family's layer by default
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "checkpoints").symlink_to(files[family].parent)
    assert main(["run", str(out), "--data-dir", str(data)]) == 0
    rerun = next((data / "output").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(rerun)))


def test_the_checkpoint_node_gives_each_family_its_settings(files):
    """MODEL, CLIP and VAE of each family as ComfyUI's CheckpointLoaderSimple gives them: SDXL's latent scale
    0.13025, SD 2.x 768-v's v-prediction (from the .yaml beside the file), the penultimate text layer."""
    from atelier.graph.catalog import default_registry
    from atelier.graph.executor import Executor

    root = files["sdxl"].parents[2]
    executor = Executor(default_registry(root, files=None))
    graph = {n: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": files[n].name}} for n in files}
    result = executor.execute(graph, list(graph))
    got = {n: result.outputs[n] for n in files}
    settings = {n: (m[0].latent_scale, m[0].denoiser().prediction, c[0].clip_skip, c[0].is_sdxl)
                for n, (m, c, _) in got.items()}  # fmt: skip
    assert settings == {
        "sdxl": (0.13025, "eps", 2, True),
        "refiner": (0.13025, "eps", 2, True),
        "sd2-v": (0.18215, "v", 2, False),
        "sd2-base": (0.18215, "eps", 2, False),
    }
    assert got["refiner"][1][0].text_encoder.clip_l is None  # the refiner reads bigG alone


def test_a_lora_naming_no_sdxl_layer_is_refused_in_one_sentence(files, tmp_path):
    from safetensors.torch import save_file

    from atelier.errors import CheckpointError
    from atelier.models.lora import load_lora
    from tests.models.tiny_families import TINY_SDXL

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(4, 1), "lora_unet_x.lora_down.weight": torch.zeros(1, 4)},
              str(lora))  # fmt: skip
    with pytest.raises(CheckpointError, match="names no layer of this SDXL model"):
        load_lora(lora, TINY_SDXL, None)
