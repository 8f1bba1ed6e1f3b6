"""The second world's judge and training: labels read back, heads that ignore what a scene does not have, a tiny
v2 run of every stage whose packed checkpoint records its world, while the first world's judge keeps its shape."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from atelier.world.evaluate import (
    classifier_accuracy,
    classifier_loss,
    kind_confusions,
    new_classifier,
    prompt_pairs,
    read_images,
    render_labelled,
)
from atelier.world.train import main
from atelier.world.v2.points import scene_labels
from atelier.world.v2.scene import Scene, SceneObject, sample_scene
from atelier.world.v2.vocab import BACKGROUNDS, COLOURS, KINDS, SIZES, TIMES, WEATHERS


class _Oracle(nn.Module):
    """A stand-in second-world classifier whose logits are one-hot of given labels (N, 30), read in order; where
    a label is -1 (nothing to say) it puts its weight on class 0, as a trained head says something anyway."""

    def __init__(self, labels: np.ndarray):
        super().__init__()
        self.labels, self.at = torch.from_numpy(labels), 0
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        lab = self.labels[self.at : self.at + len(images)]
        self.at += len(images)

        def hot(x: torch.Tensor, n: int) -> torch.Tensor:
            return torch.nn.functional.one_hot(x.clamp(min=0), n).float()

        return {
            "kind": hot(lab[:, :9], len(KINDS) + 1),
            "colour": hot(lab[:, 9:18], len(COLOURS)),
            "size": hot(lab[:, 18:27], len(SIZES)),
            "background": hot(lab[:, 27], len(BACKGROUNDS)),
            "time": hot(lab[:, 28], len(TIMES)),
            "weather": hot(lab[:, 29], len(WEATHERS)),
        }


def test_the_second_world_judge_has_time_and_weather_heads_and_the_first_keeps_its_keys():
    second, first = new_classifier("v2"), new_classifier()
    out = second(torch.zeros(2, 3, 128, 128))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "kind": (2, 9, 34),
        "colour": (2, 9, 11),
        "size": (2, 9, 3),
        "background": (2, 11),
        "time": (2, 3),
        "weather": (2, 3),
    }
    assert not any(k.startswith(("time", "weather")) for k in first.state_dict())
    assert set(first.state_dict()) < set(second.state_dict())


def test_labels_of_the_second_world_read_back_into_the_scene():
    scenes = [sample_scene(random.Random(k), train=False) for k in range(60)]
    cat = SceneObject("cat", "black", "small", (2, 0))
    rainbow = Scene((SceneObject("rainbow", None, "big", (0, 1)), cat), "white")
    scenes.append(rainbow)  # self-coloured, on a plain backdrop: no colour, no time, no weather to read
    labels = np.stack([scene_labels(s) for s in scenes])
    readings = read_images(_Oracle(labels), torch.zeros(len(scenes), 3, 8, 8), batch=16, world="v2")
    for reading, scene in zip(readings, scenes, strict=True):
        assert (reading.background, reading.time, reading.weather) == (scene.background, scene.time, scene.weather)
        assert sorted((o.kind, o.colour or "", o.size, o.cell) for o in reading.objects) == sorted(
            (o.kind, o.colour or "", o.size, o.cell) for o in scene.objects
        )
    assert readings[-1].objects[0].colour is None and readings[-1].time is None
    names = ("kind", "colour", "size", "background", "time", "weather", "count")
    assert classifier_accuracy(readings, scenes) == dict.fromkeys(names, 1.0)
    assert kind_confusions(readings, scenes) == []

    # one cat read as a dog: a kind, a count (no dog was drawn: only the cat's kind is counted wrong)
    wrong = Scene((SceneObject("rainbow", None, "big", (0, 1)), SceneObject("dog", "black", "small", (2, 0))), "white")
    acc = classifier_accuracy([wrong], [rainbow])
    assert acc["kind"] == 8 / 9 and acc["count"] == 0.5 and acc["colour"] == 1.0 and acc["time"] == 0.0
    assert kind_confusions([wrong], [rainbow]) == [("cat", "dog", 1)]


def test_time_and_weather_losses_leave_out_plain_backdrops():
    _, labels, scenes = render_labelled(3, 8, size=32, world="v2")
    assert labels.shape == (8, 30) and np.array_equal(labels, np.stack([scene_labels(s) for s in scenes]))
    labels = torch.from_numpy(labels)
    labels[:, 28:] = -1  # every backdrop plain: nothing to learn from the time and weather heads
    out = new_classifier("v2")(torch.zeros(8, 3, 128, 128))
    loss = classifier_loss(out, labels)
    out["time"], out["weather"] = torch.tensor([[5.0, -5.0, 0.0]]).expand(8, 3), out["weather"] - 50
    assert torch.isfinite(loss) and torch.equal(classifier_loss(out, labels), loss)
    labels[0, 28] = 1  # one scene with a time, whose logit is 10 below the best: its cross-entropy counts
    assert classifier_loss(out, labels) - loss > 9


def test_second_world_prompt_pairs_say_one_scene_in_both_languages():
    pairs = prompt_pairs(30, seed=5, world="v2")
    assert all(en != fr for en, fr, _ in pairs) and len({en for en, _, _ in pairs}) == 30
    assert any(g.count is not None and g.count > 1 for _, _, spec in pairs for g in spec.groups)
    assert prompt_pairs(30, seed=5) != prompt_pairs(30, seed=5, world="v2")  # the first world's stay its own


def test_every_stage_trains_on_the_second_world_and_the_checkpoint_records_it(tmp_path):
    out, packed = tmp_path / "run", tmp_path / "model.safetensors"
    common = ["--tiny", "--images", "16", "--workers", "1", "--batch", "4", "--device", "cpu", "--out", str(out)]
    stages = ["--stage", "vae", "--stage", "classifier", "--stage", "clip", "--stage", "unet"]
    main([*stages, "--steps", "2", "--world", "v2", "--pack", str(packed), *common])
    log = json.loads((out / "classifier.log.jsonl").read_text().splitlines()[-1])
    assert set(log["fresh_accuracy"]) == {"kind", "colour", "size", "background", "time", "weather", "count"}
    assert set(log["vae_round_trip"]) == set(log["fresh_accuracy"]) | {"object_kind"}
    assert all(len(row) == 3 for row in log["kind_confusions"])
    with safe_open(str(packed), "pt") as f:
        assert f.metadata()["atelier.train.world"] == "v2"
    extras = load_file(str(packed.with_name("model-extras.safetensors")))
    assert extras["classifier.kind.weight"].shape[0] == len(KINDS) + 1 and "classifier.weather.weight" in extras

    # without its optimiser state, the clip stage continues from the towers in --out (what --init unpacks)
    (out / "clip.state.pt").unlink()
    before = load_file(str(out / "text_encoder.safetensors"))
    main(["--stage", "clip", "--steps", "0", "--world", "v2", *common])
    after = load_file(str(out / "text_encoder.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_atelier_eval_takes_the_world_the_model_records(tmp_path):
    from safetensors.torch import save_file

    from atelier.errors import CheckpointError
    from atelier.models.checkpoint import save_checkpoint
    from atelier.models.clip import CLIPTextEncoder
    from atelier.models.unet import UNet
    from atelier.models.vae import VAE
    from atelier.world.eval_run import checkpoint_world
    from atelier.world.eval_run import main as eval_main
    from atelier.world.train import EmbeddedShapes
    from atelier.world.v2.parse import parse_prompt
    from atelier.world.v2.points import POINTS

    torch.manual_seed(0)
    shapes = EmbeddedShapes.tiny()
    model = tmp_path / "tiny.safetensors"
    parts = (UNet(shapes.unet), VAE(shapes.vae), CLIPTextEncoder(shapes.text))
    save_checkpoint(model, *parts, {"atelier.native_size": "32", "atelier.train.world": "v2"})
    extras = {f"classifier.{k}": v.half() for k, v in new_classifier("v2").state_dict().items()}
    save_file(extras, str(tmp_path / "tiny-extras.safetensors"))
    unknown = tmp_path / "odd.safetensors"
    save_checkpoint(unknown, *parts, {"atelier.native_size": "32", "atelier.train.world": "v9"})
    old = tmp_path / "old.safetensors"
    save_checkpoint(old, *parts, {"atelier.native_size": "32"})
    assert checkpoint_world(model) == "v2" and checkpoint_world(old) == "v1"  # packed before worlds had names
    with pytest.raises(CheckpointError, match=r"world 'v9'; expected one of v1, v2\.$"):
        checkpoint_world(unknown)

    out = tmp_path / "eval"
    small = ["--prompts", "3", "--sweep-prompts", "2", "--cfg-sweep", "1,7.5", "--steps", "1", "--renders", "20"]
    small += ["--unknown-prompts", "2", "--seed-prompts", "1", "--seeds-per-prompt", "2"]
    assert eval_main(["--model", str(model), *small, "--workers", "1", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["world"] == "v2"
    assert set(report["classifier"]["accuracy"]) == {"kind", "colour", "size", "background", "time", "weather", "count"}
    assert list(report["adherence"]["english"]["by_point"]) == list(POINTS)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| prompt set | prompts | adherence | every named kind drawn | kind | count |" in md

    # Prompts with a word never seen in training, on the English and French sets' first 2 scenes and seeds: the
    # baseline "without" is those 2 images of each set, judged again.
    unknown = report["unknown_word"]
    assert unknown["prompts"] == 2 and report["settings"]["unknown_prompts"] == 2
    for lang in ("english", "french"):
        rows = unknown[lang]["per_prompt"]
        assert [row[1] for row in rows] == [0, 1] and all(parse_prompt(row[0]).unknown for row in rows)
        assert unknown[lang]["all_kinds"] == pytest.approx(sum(row[4] for row in rows) / 2)
        assert 0 <= unknown[lang]["kind"] <= 1 and 0 <= unknown[lang]["unnamed_kind"] <= 1
        first_two = report["adherence"][lang]["per_prompt"][:2]
        assert unknown["without_word"][lang]["all_kinds"] == pytest.approx(sum(row[4] for row in first_two) / 2)
    gaps = {b["name"].split(" (")[0]: b for b in report["bars"]}
    assert gaps["unknown word minus without, every named kind drawn"]["passed"] in (True, False)
    assert gaps["unknown word minus without, an unnamed kind drawn"]["passed"] in (True, False)
    assert report["reliability"]["images"] == 2
    assert "| English, with an unknown word |" in md and "| French, without the word |" in md
