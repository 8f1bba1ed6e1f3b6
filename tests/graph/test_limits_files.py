"""Output files a prompt cannot break: filename prefixes refused at validation, no file left by a SaveImage that
failed, every file announced to history before it appears, and leftovers of a killed writer removed on start."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from atelier.graph.catalog import default_registry
from atelier.graph.executor import Interrupted
from atelier.graph.validation import validate_prompt
from atelier.server.files import DataDir, OutputFiles
from atelier.server.store import PromptRecord, PromptStore


@pytest.fixture()
def data(tmp_path):
    return DataDir(tmp_path)


@pytest.fixture()
def registry(data):
    return default_registry(data.root, OutputFiles(data))


def save_prompt(prefix: object) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


@pytest.mark.parametrize(
    ("prefix", "sentence"),
    [
        ("../escape", "contains '..'; expected a path inside its folder."),
        ("a\x00b", "contains a NUL character; expected a plain relative path."),
        ("/etc/atelier", "is an absolute path; expected a path relative to its folder."),
        ("C:\\Users\\x", "is an absolute path; expected a path relative to its folder."),
        ("x" * 300, "The filename prefix has 300 characters; the most is 200."),
    ],
)
def test_a_bad_filename_prefix_is_refused_at_validation(data, registry, prefix, sentence):
    Image.new("RGB", (8, 8)).save(data.input / "in.png")
    result = validate_prompt(save_prompt(prefix), registry)
    assert not result.ok
    (error,) = result.node_errors["2"]["errors"]
    assert error["type"] == "custom_validation_failed" and error["extra_info"]["input_name"] == "filename_prefix"
    assert error["details"].endswith(sentence)


def test_a_good_filename_prefix_passes(data, registry):
    Image.new("RGB", (8, 8)).save(data.input / "in.png")
    assert validate_prompt(save_prompt("portraits/cat"), registry).ok
    assert validate_prompt(save_prompt("x" * 200), registry).ok


class Ctx:
    """A node context that records the announced files and interrupts before image `stop_at`."""

    node_id, prompt, extra_pnginfo = "9", {}, None

    def __init__(self, files: OutputFiles, stop_at: int | None = None) -> None:
        self.files, self.stop_at = files, stop_at
        self.asked, self.announced = 0, []

    def progress(self, value, total) -> None: ...

    def preview(self, image) -> None: ...

    def check_interrupt(self) -> None:
        self.asked += 1
        if self.stop_at is not None and self.asked > self.stop_at:
            raise Interrupted("stop")

    def will_write(self, ref: dict) -> None:
        assert not self.files.path(ref).exists(), "a file was announced after it appeared"
        self.announced.append(ref)


def test_save_image_announces_each_file_before_it_appears(data, registry):
    files = OutputFiles(data)
    ctx = Ctx(files)
    out = registry.get("SaveImage")().run(ctx, torch.rand(3, 8, 8, 3), "batch")
    assert out.ui["images"] == ctx.announced
    assert sorted(p.name for p in data.output.iterdir()) == [f"batch_0000{i}_.png" for i in (1, 2, 3)]


def test_a_batch_stopped_during_save_leaves_no_file(data, registry):
    files = OutputFiles(data)
    ctx = Ctx(files, stop_at=3)  # the 4th of 8 images is never written
    with pytest.raises(Interrupted):
        registry.get("SaveImage")().run(ctx, torch.rand(8, 8, 8, 3), "batch")
    assert len(ctx.announced) == 3
    assert list(data.output.iterdir()) == []  # the three written were removed with the failure


def test_leftovers_of_a_killed_writer_are_removed_on_start(tmp_path):
    data = DataDir(tmp_path)
    (data.output / "sub").mkdir()
    kept = data.output / "sub" / "kept_00001_.png"
    kept.write_bytes(b"png")
    for folder in (data.output / "sub", data.input, data.user):
        (folder / ".tmp-abc123").write_bytes(b"half")
    removed = DataDir(tmp_path).remove_partial_writes()
    assert len(removed) == 3 and kept.exists()
    assert not list(tmp_path.rglob(".tmp-*"))


def test_recorded_outputs_survive_a_crash(tmp_path):
    store = PromptStore(tmp_path / "db.sqlite")
    store.add(PromptRecord("p1", 1, {}, {}, ["9"]))
    store.mark_running("p1", 0)
    refs = [{"filename": f"a_0000{i}_.png", "subfolder": "", "type": "output"} for i in (1, 2)]
    for ref in refs:
        store.record_output("p1", "9", ref)
    store.close()
    store = PromptStore(tmp_path / "db.sqlite")  # the server restarted: p1 was running
    assert store.recover() == []
    rec = store.get("p1")
    assert rec.state == "error" and rec.outputs == {"9": {"images": refs}}
