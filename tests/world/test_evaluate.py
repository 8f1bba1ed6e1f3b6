"""Scoring generated images: the points rules, the Fréchet distance, classifier labels, `atelier eval` end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from atelier.errors import CheckpointError, InputError
from atelier.world.evaluate import (
    Reading,
    adherence,
    adherence_by_point,
    classifier_accuracy,
    colourfulness,
    frechet_distance,
    kinds_drawn,
    new_classifier,
    prompt_pairs,
    read_images,
    render_labelled,
    rms_contrast,
    scene_labels,
    score,
    score_points,
    unnamed_kind_seen,
    vae_round_trip,
)
from atelier.world.scene import ObjectSpec, RelationSpec, Scene, SceneObject, SceneSpec, sample_scene
from atelier.world.splits import is_held_out
from atelier.world.vocab import BACKGROUNDS, COLOURS, KINDS, SIZES

# --------------------------------------------------------------------------------------------------------------
# Points: one per stated attribute
# --------------------------------------------------------------------------------------------------------------

# "a big red house at the top left, a yellow sun above a green tree, on grass": 4 + 2 + 2 points for the objects,
# 1 for the relation, 1 for the background = 10.
SPEC = SceneSpec(
    objects=(
        ObjectSpec("house", "red", "big", (0, 0)),
        ObjectSpec("sun", "yellow"),
        ObjectSpec("tree", "green"),
    ),
    background="grass",
    relations=(RelationSpec(1, "above", 2),),
)
HOUSE = SceneObject("house", "red", "big", (0, 0))
SUN = SceneObject("sun", "yellow", "small", (0, 2))
TREE = SceneObject("tree", "green", "medium", (2, 2))


def test_a_perfect_reading_scores_every_point():
    reading = Reading([HOUSE, SUN, TREE], "grass")
    assert score(reading, SPEC) == (10, 10)
    assert adherence([reading], [SPEC]) == 1.0
    assert score_points(reading, SPEC) == {
        "kind": (3, 3),
        "colour": (3, 3),
        "size": (1, 1),
        "cell": (1, 1),
        "background": (1, 1),
        "relation": (1, 1),
    }


def test_a_wrong_colour_loses_exactly_one_point():
    for i, obj in enumerate([HOUSE, SUN, TREE]):
        objects = [HOUSE, SUN, TREE]
        objects[i] = SceneObject(obj.kind, "purple", obj.size, obj.cell)
        assert score(Reading(objects, "grass"), SPEC) == (9, 10)


def test_wrong_size_cell_and_background_each_lose_one_point():
    assert score(Reading([SceneObject("house", "red", "small", (0, 0)), SUN, TREE], "grass"), SPEC) == (9, 10)
    assert score(Reading([SceneObject("house", "red", "big", (1, 0)), SUN, TREE], "grass"), SPEC) == (9, 10)
    assert score(Reading([HOUSE, SUN, TREE], "snow"), SPEC) == (9, 10)
    # Unstated attributes are free: the sun's size and cell may be anything (the relation still has to hold).
    assert score(Reading([HOUSE, SceneObject("sun", "yellow", "big", (1, 2)), TREE], "grass"), SPEC) == (10, 10)


def test_a_missing_object_loses_all_its_points_and_its_relations():
    assert score(Reading([SUN, TREE], "grass"), SPEC) == (6, 10)  # the house's 4 points
    assert score(Reading([HOUSE, SUN], "grass"), SPEC) == (7, 10)  # the tree's 2 and the relation
    assert score(Reading([], "grass"), SPEC) == (1, 10)  # only the background
    # An object of another kind in the house's place earns nothing for the house.
    assert score(Reading([SceneObject("car", "red", "big", (0, 0)), SUN, TREE], "grass"), SPEC) == (6, 10)


def test_relations_are_checked_between_the_paired_objects():
    below = SceneObject("sun", "yellow", "small", (2, 0))
    above_tree = SceneObject("tree", "green", "medium", (0, 2))
    assert score(Reading([HOUSE, below, above_tree], "grass"), SPEC) == (9, 10)
    # The pairing that scores most is chosen, relations included: with two red circles the one on the left is
    # the subject of "left of", whichever order the classifier lists them in.
    spec = SceneSpec((ObjectSpec("circle", "red"), ObjectSpec("circle", "red")), None, (RelationSpec(0, "left_of", 1),))
    right, left = SceneObject("circle", "red", "small", (1, 2)), SceneObject("circle", "red", "small", (1, 0))
    assert score(Reading([right, left], "white"), spec) == (5, 5)
    assert score(Reading([right], "white"), spec) == (2, 5)


def test_objects_not_asked_for_cost_nothing_and_are_not_paired_twice():
    extra = [SceneObject("fish", "blue", "small", (2, 0)), SceneObject("boat", "red", "big", (1, 1))]
    assert score(Reading([HOUSE, SUN, TREE, *extra], "grass"), SPEC) == (10, 10)
    two_cars = SceneSpec((ObjectSpec("car", "blue"), ObjectSpec("car", "blue")))
    assert score(Reading([SceneObject("car", "blue", "small", (0, 0))], "white"), two_cars) == (2, 4)


def test_adherence_pools_points_and_splits_them_by_kind():
    readings = [Reading([HOUSE, SUN, TREE], "grass"), Reading([SUN, TREE], "snow")]
    assert adherence(readings, [SPEC, SPEC]) == pytest.approx(15 / 20)
    by = adherence_by_point(readings, [SPEC, SPEC])
    assert by == {"kind": 5 / 6, "colour": 5 / 6, "size": 0.5, "cell": 0.5, "background": 0.5, "relation": 1.0}
    assert adherence_by_point([Reading([SUN], "white")], [SceneSpec((ObjectSpec("sun", "yellow"),))])["size"] is None


def test_every_named_kind_drawn_and_an_unnamed_kind_seen_per_image():
    fish = SceneObject("fish", "blue", "small", (2, 0))
    readings = [
        Reading([HOUSE, SUN, TREE], "grass"),  # all there
        Reading([SceneObject("house", "green", "small", (2, 1)), SUN, TREE], "snow"),  # wrong colour, cell: kinds right
        Reading([HOUSE, TREE], "grass"),  # the sun is missing
        Reading([HOUSE, SUN, TREE, fish], "grass"),  # all there, and a fish nobody asked for
        Reading([HOUSE, SceneObject("sun", "yellow", "small", (1, 1)), fish], "grass"),  # the fish instead of the tree
    ]
    assert kinds_drawn(readings, [SPEC] * 5) == [True, True, False, True, False]
    assert unnamed_kind_seen(readings, [SPEC] * 5) == [False, False, False, True, True]
    # The first world counts objects: two circles asked and one seen is not every named kind drawn.
    two = SceneSpec((ObjectSpec("circle", "red"), ObjectSpec("circle", "red")))
    one = Reading([SceneObject("circle", "red", "small", (0, 0))], "white")
    assert kinds_drawn([one], [two]) == [False]

    # The second world's kind point wants one object of the group's kind at least; the count is a point apart.
    from atelier.world.v2.scene import GroupSpec, Scene
    from atelier.world.v2.scene import SceneObject as Object2
    from atelier.world.v2.scene import SceneSpec as Spec2

    two_cats = Spec2((GroupSpec("cat", 2, "orange"),))
    cat, dog = Object2("cat", "orange", "small", (0, 0)), Object2("dog", "orange", "small", (0, 1))
    seen = [Scene((cat,), "sky"), Scene((dog,), "sky"), Scene((cat, dog), "sky")]
    assert kinds_drawn(seen, [two_cats] * 3, "v2") == [True, False, True]
    assert unnamed_kind_seen(seen, [two_cats] * 3) == [False, True, True]


def test_unknown_word_prompts_name_the_scenes_of_the_normal_set_with_a_word_never_trained():
    from atelier.world.evaluate import named_kinds
    from atelier.world.v2.parse import parse_prompt
    from atelier.world.v2.vocab import DISTRACTOR_WORDS

    normal = prompt_pairs(30, seed=7, world="v2")
    unknown = prompt_pairs(30, seed=7, world="v2", unknown_word=True)
    never = set(DISTRACTOR_WORDS["held_out"].en) | {
        form
        for a in DISTRACTOR_WORDS["held_out"].fr
        for form in (a.masculine, a.feminine, a.masculine_plural, a.feminine_plural)
    }
    for (en, fr, spec), (_, _, normal_spec) in zip(unknown, normal, strict=True):
        assert named_kinds(spec) == named_kinds(normal_spec)  # the same scene: the same kinds named
        for prompt in (en, fr):
            assert set(parse_prompt(prompt).unknown) & never, prompt
    assert [en for en, _, _ in unknown] != [en for en, _, _ in normal]
    with pytest.raises(InputError, match=r"first world \(v1\) has no unknown-word prompts"):
        prompt_pairs(3, seed=7, unknown_word=True)


# --------------------------------------------------------------------------------------------------------------
# Colourfulness and contrast
# --------------------------------------------------------------------------------------------------------------


def _halves(left: tuple[int, int, int], right: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((8, 8, 3), np.uint8)
    image[:, :4], image[:, 4:] = left, right
    return image


def test_colourfulness_is_zero_for_grey_and_grows_with_saturation():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8), 3, axis=-1)  # noisy greys
    assert np.allclose(colourfulness(grey), 0.0, atol=1e-12)
    red = np.full((1, 8, 8, 3), (255, 0, 0), np.uint8)
    # rg = 255, yb = 127.5 everywhere: no spread, M = 0.3 * |mean|
    assert colourfulness(red)[0] == pytest.approx(0.3 * np.hypot(255, 127.5))
    # Half red, half green: rg = +-255 (std 255, mean 0), yb = 127.5 on both halves (std 0).
    assert colourfulness(_halves((255, 0, 0), (0, 255, 0))[None])[0] == pytest.approx(255 + 0.3 * 127.5)
    pale = np.full((1, 8, 8, 3), (200, 150, 150), np.uint8)
    m = colourfulness(np.concatenate([grey[:1, :8, :8], pale, red]))
    assert m[0] < m[1] < m[2]  # grey, pale red, pure red


def test_rms_contrast_is_the_spread_of_luma():
    assert rms_contrast(np.full((2, 8, 8, 3), 128, np.uint8)) == pytest.approx([0.0, 0.0])
    assert rms_contrast(_halves((0, 0, 0), (255, 255, 255))[None])[0] == pytest.approx(0.5)
    # Pure red on black: luma 0.299 on half the pixels, so half of 0.299.
    assert rms_contrast(_halves((0, 0, 0), (255, 0, 0))[None])[0] == pytest.approx(0.299 / 2)


# --------------------------------------------------------------------------------------------------------------
# Figures of `atelier eval` from judged results
# --------------------------------------------------------------------------------------------------------------


def test_seed_reliability_counts_images_and_lists_the_worst_prompts_first():
    from atelier.world.eval_run import seed_reliability

    drawn = [True, True, True, True] + [True, False, True, False] + [False, False, False, True] + [False, True] * 2
    got = seed_reliability(["a", "b", "c", "d"], drawn, 4, worst=3)
    assert got["images"] == 16 and got["prompts"] == 4 and got["seeds_per_prompt"] == 4
    assert got["all_kinds"] == pytest.approx(9 / 16)
    assert got["always"] == pytest.approx(1 / 4)  # only "a" on every seed
    assert got["per_prompt"] == [["a", 1.0], ["b", 0.5], ["c", 0.25], ["d", 0.5]]
    assert got["worst"] == [["c", 0.25], ["b", 0.5], ["d", 0.5]]  # lowest first; b before d, as prompted
    with pytest.raises(InputError, match="7 judged images given; expected 4 prompts x 2"):
        seed_reliability(["a", "b", "c", "d"], drawn[:7], 2)


def _fake_report(world: str, unknown: dict | None, reliability: dict | None) -> dict:
    adherence = {key: {"adherence": 0.9} for key in ("english", "french", "held_out")}
    return {
        "world": world,
        "classifier": {"accuracy": {"kind": 0.99}},
        "adherence": adherence,
        "cfg_sweep": [{"cfg": 1.0, "adherence": 0.5}, {"cfg": 7.5, "adherence": 0.9}],
        "unknown_word": unknown,
        "reliability": reliability,
    }


def test_bars_compare_unknown_words_with_the_same_prompts_without_and_say_na_for_the_first_world():
    from atelier.world.eval_run import bars

    def figures(all_kinds: float, unnamed: float) -> dict:
        return {"all_kinds": all_kinds, "kind": 0.9, "unnamed_kind": unnamed, "adherence": 0.8}

    unknown = {
        "prompts": 10,
        "english": figures(0.80, 0.10),
        "french": figures(0.95, 0.06),
        "without_word": {"english": figures(0.82, 0.05), "french": figures(0.90, 0.05)},
    }
    got = {
        b["name"].split(" (")[0]: b
        for b in bars(_fake_report("v2", unknown, {"all_kinds": 0.92, "prompts": 5, "seeds_per_prompt": 4}), 7.5)
    }
    kinds = got["unknown word minus without, every named kind drawn"]
    assert kinds["value"] == pytest.approx(-0.02) and kinds["passed"]  # the worse language, English: 2 points down
    unrelated = got["unknown word minus without, an unnamed kind drawn"]
    assert unrelated["value"] == pytest.approx(0.05) and not unrelated["passed"]  # English draws 5 points more
    per_seed = got["every named kind drawn, per seed"]
    assert per_seed["value"] == 0.92 and per_seed["passed"]

    first = bars(_fake_report("v1", None, None), 7.5)
    na = [b for b in first if b["name"].startswith("unknown word")]
    assert len(na) == 2 and all(b["value"] is None and b["passed"] is None for b in na)
    assert all(b["note"].startswith("n/a") for b in na)
    skipped = bars(_fake_report("v2", None, None), 7.5)  # --unknown-prompts 0 --seed-prompts 0: not measured
    assert all("note" not in b for b in skipped) and [b["passed"] for b in skipped[-3:]] == [None] * 3


# --------------------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------------------


def test_frechet_distance_is_zero_for_identical_sets_and_the_mean_shift_for_shifted_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    assert abs(frechet_distance(a, a)) < 1e-8
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx((shift**2).sum(), rel=1e-8)  # same covariance
    assert frechet_distance(a, a * 1.5) > 0.1


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(size=(250, 8)) @ rng.normal(size=(8, 8)) + 0.7
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    direct = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-7)
    assert frechet_distance(b, a) == pytest.approx(direct, rel=1e-7)


def test_frechet_distance_needs_two_vectors_per_set():
    with pytest.raises(InputError, match=r"at least 2 feature vectors.*\(1, 3\) and \(5, 3\)"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# --------------------------------------------------------------------------------------------------------------
# Classifier labels and readings
# --------------------------------------------------------------------------------------------------------------


class _Oracle(nn.Module):
    """A stand-in classifier whose logits are one-hot of given labels (N, 28), read in order."""

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
        }


def test_scene_labels_layout():
    scene = Scene((SceneObject("moon", "white", "big", (0, 2)), SceneObject("circle", "red", "small", (2, 1))), "night")
    labels = scene_labels(scene)
    assert labels.shape == (28,) and labels.dtype == np.int64
    kind, colour, size = labels[:9], labels[9:18], labels[18:27]
    assert kind.tolist() == [0, 0, KINDS.index("moon") + 1, 0, 0, 0, 0, KINDS.index("circle") + 1, 0]
    assert colour[2] == COLOURS.index("white") and colour[7] == COLOURS.index("red")
    assert size[2] == SIZES.index("big") and size[7] == SIZES.index("small")
    assert (colour[[0, 1, 3, 4, 5, 6, 8]] == -1).all() and (size[[0, 1, 3, 4, 5, 6, 8]] == -1).all()
    assert labels[27] == BACKGROUNDS.index("night")


def test_labels_read_back_into_the_scene():
    scenes = [sample_scene(random.Random(k), train=False) for k in range(40)]
    labels = np.stack([scene_labels(s) for s in scenes])
    readings = read_images(_Oracle(labels), torch.zeros(len(scenes), 3, 8, 8), batch=16)
    for reading, scene in zip(readings, scenes, strict=True):
        assert reading.background == scene.background
        assert sorted((o.kind, o.colour, o.size, o.cell) for o in reading.objects) == sorted(
            (o.kind, o.colour, o.size, o.cell) for o in scene.objects
        )
    assert classifier_accuracy(readings, scenes) == {"kind": 1.0, "colour": 1.0, "size": 1.0, "background": 1.0}
    wrong = [Reading([], r.background) for r in readings]
    acc = classifier_accuracy(wrong, scenes)
    assert acc["colour"] == 0.0 and acc["background"] == 1.0
    assert acc["kind"] == pytest.approx(1 - sum(len(s.objects) for s in scenes) / (9 * len(scenes)))


def test_render_labelled_is_deterministic_and_train_has_no_held_out_pair():
    images, labels, scenes = render_labelled(3, 6, size=32)
    again, labels2, _ = render_labelled(3, 3, size=32, start=3)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[3:], again) and np.array_equal(labels[3:], labels2)
    assert np.array_equal(labels, np.stack([scene_labels(s) for s in scenes]))
    _, _, train = render_labelled(4, 300, size=16, train=True)
    assert not any(is_held_out(o.kind, o.colour) for s in train for o in s.objects)


# --------------------------------------------------------------------------------------------------------------
# `atelier eval` on a tiny untrained model
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random model in the shipped layout (SD single file + extras with the classifier), 32 px images."""
    from atelier.models.checkpoint import save_checkpoint
    from atelier.models.clip import CLIPTextEncoder
    from atelier.models.unet import UNet
    from atelier.models.vae import VAE
    from atelier.world.train import EmbeddedShapes

    torch.manual_seed(0)
    shapes = EmbeddedShapes.tiny()
    folder = tmp_path_factory.mktemp("tiny_eval")
    path = folder / "tiny.safetensors"
    save_checkpoint(
        path,
        UNet(shapes.unet),
        VAE(shapes.vae),
        CLIPTextEncoder(shapes.text),
        {"atelier.native_size": str(shapes.image_size)},
    )
    extras = {f"classifier.{k}": v.half() for k, v in new_classifier().state_dict().items()}
    save_file(extras, str(folder / "tiny-extras.safetensors"))
    return path


def test_batched_generation_gives_each_prompt_its_image_alone(tiny_model):
    from atelier.generation import GenerationParams, run
    from atelier.models.checkpoint import load_checkpoint
    from atelier.pipeline import SamplerSettings
    from atelier.world.eval_run import generate_many

    ckpt = load_checkpoint(tiny_model, device="cpu")
    prompts = ["a red circle on the left", "un petit disque rose au-dessus d'un gros voilier violet"]
    seeds = [11, 12345]
    for sampler in ("euler", "euler_ancestral"):  # the per-step noise of ancestral samplers is per prompt too
        batch = generate_many(ckpt, prompts, seeds, SamplerSettings(steps=3, cfg=7.5, sampler=sampler), 32, batch=2)
        assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.uint8
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
            alone = run(ckpt, GenerationParams(prompt, seed=seed, steps=3, sampler=sampler, width=32, height=32))
            assert np.array_equal(np.asarray(alone.images[0]), batch[i]), (sampler, i)
    assert not np.array_equal(batch[0], batch[1])


def test_eval_run_writes_the_report(tiny_model, tmp_path):
    from atelier.world.eval_run import main

    out = tmp_path / "eval"
    argv = [
        "--model",
        str(tiny_model),
        "--prompts",
        "4",
        "--sweep-prompts",
        "2",
        "--cfg-sweep",
        "1,7.5",
        "--steps",
        "2",
        "--renders",
        "20",
        "--seed-prompts",
        "2",
        "--seeds-per-prompt",
        "3",
        "--workers",
        "1",
        "--batch",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["classifier"]["accuracy"]) == {"kind", "colour", "size", "background"}
    assert [row["cfg"] for row in report["cfg_sweep"]] == [1.0, 7.5]
    assert all(
        set(row["by_point"]) == {"kind", "colour", "size", "cell", "background", "relation"}
        for row in report["cfg_sweep"]
    )
    ceiling = report["classifier"]["vae_round_trip"]  # the judge on renders passed through the VAE
    assert set(ceiling) == {"kind", "colour", "size", "background", "object_kind"}
    assert all(0.0 <= v <= 1.0 for v in ceiling.values())
    for key in ("english", "french", "held_out"):
        part = report["adherence"][key]
        assert part["prompts"] == 4 and 0.0 <= part["adherence"] <= 1.0 and len(part["per_prompt"]) == 4
        scored = sum(row[2] for row in part["per_prompt"]) / sum(row[3] for row in part["per_prompt"])
        assert part["adherence"] == pytest.approx(scored)
        assert part["all_kinds"] == pytest.approx(sum(row[4] for row in part["per_prompt"]) / 4)  # every kind drawn
        assert all(row[4] for row in part["per_prompt"] if row[2] == row[3])  # every point: every kind
    assert [row[1] for row in report["adherence"]["english"]["per_prompt"]] == [0, 1, 2, 3]
    # The sweep reuses the main images at CFG 7.5: same prompts, same seeds, same score.
    first_two = report["adherence"]["english"]["per_prompt"][:2]
    assert report["cfg_sweep"][1]["adherence"] == pytest.approx(
        sum(r[2] for r in first_two) / sum(r[3] for r in first_two)
    )
    # The sweep's colourfulness and contrast: means over its images, within their ranges; the renders' beside them.
    for row in report["cfg_sweep"]:
        assert row["colourfulness"] >= 0 and 0 <= row["contrast"] <= 0.5
    assert report["rendered_colour"]["images"] == 4 and report["rendered_colour"]["colourfulness"] > 0
    assert report["frechet"]["generated_vs_rendered"] > 0 and report["frechet"]["rendered_vs_rendered"] > 0
    assert report["speed"]["seconds_per_image"] > 0 and report["speed"]["device"] == "cpu (float32)"
    # Reliability: 2 prompts x 3 seeds, each prompt's share a count of 3, the worst first.
    reliable = report["reliability"]
    assert reliable["images"] == 6 and len(reliable["per_prompt"]) == 2
    shares = [share for _, share in reliable["per_prompt"]]
    assert all(round(3 * share) == pytest.approx(3 * share) for share in shares)
    assert reliable["all_kinds"] == pytest.approx(sum(shares) / 2)
    assert [share for _, share in reliable["worst"]] == sorted(shares)
    assert report["unknown_word"] is None  # the first world has no unknown words: n/a, not a crash
    assert [b["name"] for b in report["bars"]] == [
        "classifier accuracy, lowest attribute",
        "adherence, English, CFG 7.5",
        "adherence, held-out pairs",
        "French minus English",
        "CFG 7.5 minus CFG 1",
        "unknown word minus without, every named kind drawn (worse of EN, FR)",
        "unknown word minus without, an unnamed kind drawn (worse of EN, FR)",
        "every named kind drawn, per seed (2 prompts x 3 seeds)",
    ]
    assert all(b["passed"] in (True, False) for b in report["bars"] if not b["name"].startswith("unknown word"))
    assert [b["note"] for b in report["bars"][5:7]] == ["n/a: the first world has no unknown words"] * 2
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| figure | measured | bar | result |" in md and "![samples](samples.png)" in md
    assert "| colourfulness M |" in md and "| RMS contrast |" in md
    assert "## 8. Prompts with a word the model never saw in training\n\nn/a: the first world" in md
    assert "## 9. Reliability per seed" in md and "The 2 least reliable prompts:" in md
    assert Image.open(out / "cfg_sweep.png").size == (720, 2 * 440)  # adherence above, colour and contrast below
    assert Image.open(out / "samples.png").size[0] == 8 + 4 * (192 + 8)  # 4 images per row


def test_eval_arguments_are_checked(tiny_model, tmp_path):
    from atelier.world.eval_run import load_classifier, parse_args

    with pytest.raises(InputError, match="--cfg-sweep must list CFG values"):
        parse_args(["--cfg-sweep", "1,high"])
    with pytest.raises(InputError, match=r"--sweep-prompts must be from 1 to --prompts \(10\), got 20"):
        parse_args(["--prompts", "10", "--sweep-prompts", "20"])
    with pytest.raises(InputError, match="--prompts must be at least 2"):
        parse_args(["--prompts", "1", "--sweep-prompts", "1"])
    with pytest.raises(InputError, match=r"--unknown-prompts must be from 0 to --prompts \(10\), got 11"):
        parse_args(["--prompts", "10", "--sweep-prompts", "5", "--unknown-prompts", "11"])
    with pytest.raises(InputError, match="--seeds-per-prompt must be at least 1, got 0"):
        parse_args(["--seeds-per-prompt", "0"])
    with pytest.raises(InputError, match="--seed-prompts must be 0"):
        parse_args(["--seed-prompts", "-1"])
    defaults = parse_args(["--prompts", "300", "--sweep-prompts", "10"])
    assert (defaults.unknown_prompts, defaults.seed_prompts, defaults.seeds_per_prompt) == (300, 50, 16)
    assert parse_args(["--cfg-sweep", "7.5, 1,3"]).cfg_sweep == [1.0, 3.0, 7.5]
    with pytest.raises(CheckpointError, match="does not exist; expected the model's extras file"):
        load_classifier(tmp_path / "none.safetensors", torch.device("cpu"))
    save_file({"image_encoder.w": torch.zeros(2)}, str(tmp_path / "x-extras.safetensors"))
    with pytest.raises(CheckpointError, match="holds no classifier"):
        load_classifier(tmp_path / "x-extras.safetensors", torch.device("cpu"))


def test_sample_sheet_shows_every_line_of_the_longest_caption(tmp_path):
    from atelier.world.eval_run import sample_sheet

    image = np.zeros((32, 32, 3), np.uint8)
    long = "un grand cercle rouge à gauche au-dessus d'une petite maison bleue, sur fond de ciel étoilé [9/9] " * 2
    sample_sheet([("short", image[None], ["a red circle [2/2]"])], tmp_path / "short.png", cell=96)
    sample_sheet([("long", image[None], [long])], tmp_path / "long.png", cell=96)
    short, tall = Image.open(tmp_path / "short.png"), Image.open(tmp_path / "long.png")
    assert tall.height > short.height + 5 * 16  # room for many more lines, not a cut at 4
    bottom = np.asarray(tall.convert("L"))[-24:-8, 8:104]
    assert (bottom < 128).any()  # the caption's last line is drawn inside the sheet


def test_vae_round_trip_gives_8_bit_images_on_the_cpu_whatever_the_batch():
    from atelier.models.vae import VAE
    from atelier.world.train import EmbeddedShapes

    torch.manual_seed(0)
    vae = VAE(EmbeddedShapes.tiny().vae).eval()
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    out = vae_round_trip(vae, images, batch=2)
    assert out.shape == images.shape and out.device.type == "cpu"
    assert out.min() >= -1 and out.max() <= 1
    levels = (out + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)  # on the grid of a PNG's 256 levels
    torch.testing.assert_close(out, vae_round_trip(vae, images, batch=5))
