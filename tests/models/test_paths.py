"""Model folders: ComfyUI layout, listing, safe name lookup and extra_model_paths.yaml."""

import os
from pathlib import Path

import pytest

from atelier.errors import AtelierError, CheckpointError, InputError
from atelier.models.paths import ModelPaths


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    ckpts = tmp_path / "comfy" / "models" / "checkpoints"
    touch(ckpts / "b.safetensors")
    touch(ckpts / "a.ckpt")
    touch(ckpts / "sd15" / "dream.safetensors")
    touch(ckpts / "notes.txt")
    touch(ckpts / ".hidden.safetensors")
    touch(ckpts / "diffusers-sd" / "model_index.json", b"{}")
    touch(ckpts / "diffusers-sd" / "unet" / "diffusion_pytorch_model.safetensors")
    touch(tmp_path / "comfy" / "models" / "vae" / "vae-ft-mse.safetensors")
    touch(tmp_path / "secret" / "outside.safetensors")
    return tmp_path / "comfy"


def test_default_layout_and_listing(root):
    paths = ModelPaths(root)
    assert paths.folders_for("checkpoints") == [root / "models" / "checkpoints"]
    assert paths.list("checkpoints") == ["a.ckpt", "b.safetensors", "diffusers-sd", "sd15/dream.safetensors"]
    assert paths.list("vae") == ["vae-ft-mse.safetensors"]
    assert paths.list("loras") == []  # the folder does not exist yet
    with pytest.raises(InputError, match=r"^Model kind 'unets' is unknown; expected one of checkpoints"):
        paths.list("unets")


def test_resolve(root):
    paths = ModelPaths(root)
    ckpts = root / "models" / "checkpoints"
    assert paths.resolve("checkpoints", "sd15/dream.safetensors") == (ckpts / "sd15" / "dream.safetensors").resolve()
    assert paths.resolve("checkpoints", "sd15\\dream.safetensors") == (ckpts / "sd15" / "dream.safetensors").resolve()
    assert paths.resolve("checkpoints", "diffusers-sd") == (ckpts / "diffusers-sd").resolve()
    with pytest.raises(CheckpointError, match=r"^No checkpoints model named 'missing\.safetensors' was found in "):
        paths.resolve("checkpoints", "missing.safetensors")
    with pytest.raises(CheckpointError, match=r"named 'notes\.txt'"):  # not a model file
        paths.resolve("checkpoints", "notes.txt")


@pytest.mark.parametrize(
    "name",
    ["../../secret/outside.safetensors", "sd15/../../x.safetensors", "/etc/passwd", "\\\\server\\share\\m.ckpt",
     "C:\\models\\m.safetensors", "~/m.safetensors", "", "bad\0.safetensors"],
)  # fmt: skip
def test_resolve_refuses_names_leaving_the_folder(root, name):
    with pytest.raises(InputError, match=r"^Model name .* is not allowed; expected a name relative to the checkpoints"):
        ModelPaths(root).resolve("checkpoints", name)


def test_symlinks_leading_outside_are_refused_and_hidden(root):
    ckpts = root / "models" / "checkpoints"
    os.symlink(root.parent / "secret" / "outside.safetensors", ckpts / "escape.safetensors")
    os.symlink(root.parent / "secret", ckpts / "escape-dir")
    os.symlink(ckpts / "sd15" / "dream.safetensors", ckpts / "alias.safetensors")  # stays inside: fine
    os.symlink(ckpts, ckpts / "sd15" / "loop")  # a link back up must not loop forever
    paths = ModelPaths(root)
    assert paths.list("checkpoints") == [
        "a.ckpt", "alias.safetensors", "b.safetensors", "diffusers-sd", "sd15/dream.safetensors",
    ]  # fmt: skip
    assert paths.resolve("checkpoints", "alias.safetensors") == (ckpts / "sd15" / "dream.safetensors").resolve()
    for name in ("escape.safetensors", "escape-dir/outside.safetensors"):
        with pytest.raises(InputError, match=r"is a link that leads outside the checkpoints folder"):
            paths.resolve("checkpoints", name)


A1111_YAML = """\
#config for a1111 ui
a1111:
    base_path: {base}

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    embeddings: embeddings

#comfyui:
#     base_path: path/to/comfyui/

shared:
    is_default: true
    checkpoints: shared-ckpts
empty:
"""


def test_extra_model_paths_yaml_a1111(root, tmp_path):
    a1111 = tmp_path / "webui"
    touch(a1111 / "models" / "Stable-diffusion" / "v1-5.safetensors")
    touch(a1111 / "models" / "LyCORIS" / "style.safetensors")
    touch(a1111 / "models" / "Lora" / "face.safetensors")
    touch(a1111 / "embeddings" / "bad-hands.pt")
    touch(tmp_path / "shared-ckpts" / "a.ckpt")  # same name as in comfy: the is_default folder wins
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(A1111_YAML.format(base=a1111))

    paths = ModelPaths(root)
    added = paths.add_extra_paths_yaml(yaml_file)
    assert ("loras", a1111 / "models" / "LyCORIS") in added
    assert ("configs", a1111 / "models" / "Stable-diffusion") in added  # kinds Atelier does not use are kept
    assert paths.folders_for("checkpoints") == [
        tmp_path / "shared-ckpts",  # is_default: searched first; no base_path, so relative to the yaml file
        root / "models" / "checkpoints",
        a1111 / "models" / "Stable-diffusion",
    ]
    assert paths.list("loras") == ["face.safetensors", "style.safetensors"]
    assert paths.list("embeddings") == ["bad-hands.pt"]
    assert "v1-5.safetensors" in paths.list("checkpoints")
    assert paths.resolve("checkpoints", "a.ckpt") == (tmp_path / "shared-ckpts" / "a.ckpt").resolve()
    assert paths.resolve("checkpoints", "v1-5.safetensors").parent.name == "Stable-diffusion"


def test_extra_model_paths_yaml_errors(tmp_path):
    paths = ModelPaths(tmp_path)
    with pytest.raises(AtelierError, match=r"nope\.yaml does not exist"):
        paths.add_extra_paths_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a1111: [unclosed\n")
    with pytest.raises(AtelierError, match=r"^bad\.yaml is not valid YAML\.$"):
        paths.add_extra_paths_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- checkpoints\n")
    with pytest.raises(AtelierError, match=r"^list\.yaml should hold named sections"):
        paths.add_extra_paths_yaml(tmp_path / "list.yaml")
    (tmp_path / "blank.yaml").write_text("# nothing\n")
    assert paths.add_extra_paths_yaml(tmp_path / "blank.yaml") == []
