"""The second world (atelier/world/v2/): kinds, poses, counts, backdrops, held-out pairs, grammar and parsing.

The first world must not move while the second grows: `test_first_world_is_unchanged` pins its renders and
captions (the shipped model and `atelier eval` depend on them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from time import perf_counter

import numpy as np
import pytest
from scipy import ndimage

from atelier.errors import InputError
from atelier.world.captions import english_articles
from atelier.world.dataset import iter_shards, prerender, render_batch, render_dataset
from atelier.world.scene import RelationSpec
from atelier.world.v2 import splits
from atelier.world.v2.captions import (
    describe,
    english_noun_phrase,
    french_determiner,
    french_finish,
    french_noun_phrase,
    random_prompt,
)
from atelier.world.v2.parse import parse_prompt
from atelier.world.v2.pictograms import STYLES, Pose, posed_polygons, random_pose
from atelier.world.v2.points import scene_from_labels, scene_labels, score_points
from atelier.world.v2.scene import (
    GroupSpec,
    Scene,
    SceneObject,
    SceneSpec,
    check_scene,
    colours_for,
    groups_of,
    objects_fit_together,
    relations_between,
    render,
    sample_scene,
    scene_from_spec,
    scene_matches_spec,
)
from atelier.world.v2.vocab import (
    BACKGROUNDS,
    COLOUR_WORDS,
    COLOURS,
    COUNT_WORDS,
    DISTRACTOR_WORDS,
    KIND_WORDS,
    KINDS,
    MAX_COUNT,
    NEW_KINDS,
    PLAIN_BACKGROUNDS,
    RELATIONS,
    SELF_COLOURED_KINDS,
    SIZE_WORDS,
    TIMES,
    WEATHERS,
)
from atelier.world.vocab import KINDS as FIRST_WORLD_KINDS
from atelier.world.vocab import RELATIONS as FIRST_WORLD_RELATIONS
from atelier.world.worlds import get_world


def _alone(kind: str, colour: str | None = "red", size: str = "big", pose: Pose = Pose(), background: str = "white"):
    colour = None if kind in SELF_COLOURED_KINDS else colour
    return render(Scene((SceneObject(kind, colour, size, (1, 1), (0, 0), pose),), background)).astype(int)


def _mask(image: np.ndarray, background: str = "white") -> np.ndarray:
    return np.abs(image - render(Scene((), background)).astype(int)).max(-1) > 40


def test_first_world_is_unchanged():
    # 64 items of the first world's dataset seed 0: pixels and captions, as they were before the second world.
    images, captions, _ = render_batch(0, 64, 128)
    digest = hashlib.sha256(images.tobytes())
    digest.update("\n".join(captions).encode())
    assert digest.hexdigest() == "5a6a3882ddaac3b0c254d72fa79a118ce52ec2172c334e5ed5b9542a3e324a5b"


def test_second_world_is_pinned():
    # Once a model is trained on v2, its data must not drift: a change to the drawings, the sampler or the grammar
    # shows here, and is then a new world (v3), not an edit of this one.
    images, captions, _ = render_batch(0, 64, 128, world="v2")
    digest = hashlib.sha256(images.tobytes())
    digest.update("\n".join(captions).encode())
    assert digest.hexdigest() == "1fc75d6d3caa8f005d1b9a048037192d5a327aef74752ba53e0345a35438abc5"


# --------------------------------------------------------------------------------------------------------------
# Kinds and poses


def test_the_world_has_the_kinds_the_issue_asks_for():
    assert len(KINDS) >= 32 and KINDS[:14] == FIRST_WORLD_KINDS and KINDS[14:] == NEW_KINDS
    assert {"cat", "dog", "bird", "rabbit", "horse", "butterfly"} <= set(KINDS)
    assert {"person", "child", "plane", "train", "bicycle", "rocket"} <= set(KINDS)
    assert {"mountain", "rainbow", "umbrella", "balloon"} <= set(KINDS)
    assert set(STYLES) == set(KINDS) and set(KIND_WORDS) == set(KINDS)
    assert set(RELATIONS) >= set(FIRST_WORLD_RELATIONS) and len(RELATIONS) >= len(FIRST_WORLD_RELATIONS) + 2


@pytest.mark.parametrize("size", ["small", "big"])
def test_every_kind_renders_distinctly(size):
    # As for the first world: of the pixels either of two kinds covers, at least 20% differ between them.
    images = {kind: _alone(kind, size=size) for kind in KINDS}
    for kind, image in images.items():
        assert _mask(image).sum() >= (60 if size == "small" else 300), kind
    for a, b in itertools.combinations(KINDS, 2):
        differ = np.abs(images[a] - images[b]).max(-1) > 40
        union = _mask(images[a]) | _mask(images[b])
        assert differ.sum() >= 0.2 * union.sum(), (a, b, size)


def test_poses_vary_the_drawing_but_stay_in_the_box():
    rng = random.Random(3)
    for kind in KINDS:
        poses = [random_pose(kind, rng) for _ in range(12)]
        for pose in poses:
            assert max(np.abs(points).max() for points, _ in posed_polygons(kind, pose)) <= 1.0 + 1e-9, kind
        drawn = {_alone(kind, pose=pose).tobytes() for pose in poses}
        assert len(drawn) >= 6, kind  # stretch and jitterless tilt alone change the pixels
    mirrored = _alone("cat", pose=Pose(mirror=True))
    area = _mask(mirrored).sum()
    assert (np.abs(mirrored - _alone("cat")).max(-1) > 40).sum() > 0.15 * area  # the tail moves to the other side
    assert (np.abs(mirrored - _alone("cat")[:, ::-1]).max(-1) > 40).sum() < 0.05 * area  # a mirror image, to a pixel


def test_a_rainbow_has_its_own_colours():
    image = _alone("rainbow")
    assert len({tuple(p) for p in image[_mask(image)]}) > 6
    with pytest.raises(InputError, match="Colour 'red' does not fit a rainbow"):
        check_scene(Scene((SceneObject("rainbow", "red", "big", (1, 1)),), "white"))


# --------------------------------------------------------------------------------------------------------------
# Backdrops


def test_every_backdrop_looks_different_and_plain_ones_have_no_sky():
    empties = {}
    for place in BACKGROUNDS:
        for time, weather in [(None, None)] if place in PLAIN_BACKGROUNDS else itertools.product(TIMES, WEATHERS):
            empties[(place, time, weather)] = render(Scene((), place, time, weather)).astype(float)
    for (a, ia), (b, ib) in itertools.combinations(empties.items(), 2):
        assert np.abs(ia - ib).mean() > 4, (a, b)
    night, day = empties[("city", "night", "clear")], empties[("city", "day", "clear")]
    assert night.mean() < 0.6 * day.mean()
    with pytest.raises(InputError, match="plain backdrops have neither"):
        check_scene(Scene((), "white", "night", "clear"))


def test_colours_stand_out_on_their_backdrop():
    assert "white" not in colours_for("snow", "day", "clear") and "blue" not in colours_for("sea", "day", "clear")
    assert "green" not in colours_for("grass", "day", "clear") and "black" not in colours_for("sky", "night", "clear")
    for place in BACKGROUNDS:
        for time, weather in [(None, None)] if place in PLAIN_BACKGROUNDS else itertools.product(TIMES, WEATHERS):
            assert len(colours_for(place, time, weather)) >= 6, (place, time, weather)


# --------------------------------------------------------------------------------------------------------------
# Scenes, counts and relations


def test_sampling_is_deterministic_per_seed_and_scenes_are_valid():
    assert sample_scene(random.Random(11)) == sample_scene(random.Random(11))
    assert np.array_equal(render(sample_scene(random.Random(11))), render(sample_scene(random.Random(11))))
    assert sample_scene(random.Random(11)) != sample_scene(random.Random(12))
    rng = random.Random(0)
    counts, places, kinds_seen = {n: 0 for n in range(1, MAX_COUNT + 1)}, set(), []
    for _ in range(2000):
        scene = sample_scene(rng)
        check_scene(scene)
        kinds_seen += [objects[0] for objects in groups_of(scene).values()]
        for kind, objects in groups_of(scene).items():
            counts[len(objects)] += 1
            assert all(
                o.colour is None or o.colour in colours_for(scene.background, scene.time, scene.weather)
                for o in objects
            ), kind
        places.add((scene.background, scene.time, scene.weather))
    assert all(counts[n] >= 100 for n in counts)  # every count from one to four is common
    per_kind = [sum(o.kind == kind for o in kinds_seen) for kind in KINDS]
    assert min(per_kind) >= 0.6 * max(per_kind)  # kinds drawn first, then a colour: the rainbow is no rarer
    assert len(places) == 3 + 8 * 9  # every place, time and weather


@pytest.mark.parametrize("count", [2, 3, 4])
def test_counts_render_that_many_separated_instances(count):
    rng = random.Random(count)
    for kind in ["cat", "star", "house", "bicycle", "balloon", "person"]:
        scene = scene_from_spec(SceneSpec((GroupSpec(kind, count, "red", "small"),), "white"), rng)
        labels, _ = ndimage.label(ndimage.binary_closing(_mask(render(scene).astype(int)), iterations=2))
        sizes = np.bincount(labels.ravel())[1:]
        assert (sizes >= 20).sum() == count, (kind, count, sizes)


def test_relations_between_cells():
    def at(cell):
        return SceneObject("cat", "red", "small", cell)

    assert set(relations_between(at((1, 0)), at((1, 1)))) == {"left_of", "next_to", "near"}
    assert set(relations_between(at((0, 0)), at((1, 1)))) == {"left_of", "above", "near"}
    assert set(relations_between(at((0, 0)), at((2, 1)))) == {"above", "far_from"}
    assert set(relations_between(at((2, 2)), at((0, 0)))) == {"right_of", "below", "far_from"}
    assert not objects_fit_together(at((1, 1)), at((1, 1)))


def test_scene_from_spec_meets_the_spec_and_names_its_problems():
    rng = random.Random(5)
    spec = SceneSpec(
        (GroupSpec("cat", 1, "blue"), GroupSpec("tree", 1, size="big"), GroupSpec("star", 3, "yellow")),
        "forest",
        "night",
        None,
        (RelationSpec(0, "left_of", 1),),
    )
    for _ in range(20):
        scene = scene_from_spec(spec, rng)
        assert scene_matches_spec(scene, spec) and scene.time == "night"
        assert len(groups_of(scene)["star"]) == 3
    some = scene_from_spec(SceneSpec((GroupSpec("dog", None),)), rng)
    assert len(some.objects) >= 2
    with pytest.raises(InputError, match="a cell holds one object"):
        scene_from_spec(SceneSpec((GroupSpec("dog", 2, cell=(0, 0)),)), rng)
    with pytest.raises(InputError, match="each kind in one group"):
        scene_from_spec(SceneSpec((GroupSpec("dog"), GroupSpec("dog", 2))), rng)
    with pytest.raises(InputError, match="cannot be asked of a rainbow"):
        scene_from_spec(SceneSpec((GroupSpec("rainbow", 1, "red"),)), rng)


# --------------------------------------------------------------------------------------------------------------
# Held-out pairs


def test_held_out_pairs_keep_the_first_worlds_and_cover_the_new_kinds():
    from atelier.world.splits import HELD_OUT_PAIRS as FIRST

    assert FIRST <= splits.HELD_OUT_PAIRS
    coloured = [k for k in NEW_KINDS if k not in SELF_COLOURED_KINDS]
    assert sorted(k for k, _ in splits.NEW_HELD_OUT_PAIRS) == sorted(coloured)  # one per new coloured kind
    per_colour = {c: sum(c == colour for _, colour in splits.NEW_HELD_OUT_PAIRS) for c in COLOURS}
    assert max(per_colour.values()) <= 2
    share = len(splits.HELD_OUT_PAIRS) / sum(c is not None for _, c in splits.ALL_PAIRS)
    assert 0.08 <= share <= 0.11


def test_training_scenes_never_contain_held_out_pairs():
    rng = random.Random(1)
    for _ in range(3000):
        assert not any(splits.is_held_out(o.kind, o.colour) for o in sample_scene(rng).objects)
    for spec in render_batch(5, 400, 32, world="v2")[2]:  # the training data path: no caption asks for one either
        assert not any(splits.is_held_out(g.kind, g.colour) for g in spec.groups)
    held = [sample_scene(rng, held_out_only=True) for _ in range(300)]
    assert all(splits.is_held_out(o.kind, o.colour) for s in held for o in s.objects)
    assert {o.kind for s in held for o in s.objects} >= set(NEW_KINDS) - SELF_COLOURED_KINDS


# --------------------------------------------------------------------------------------------------------------
# Grammar


@pytest.mark.parametrize(
    "kind, count, colour, size, expected",
    [
        ("cat", 2, "green", None, "deux chats verts"),
        ("star", 3, "yellow", None, "trois étoiles jaunes"),
        ("house", 1, "red", None, "une maison rouge"),
        ("house", None, "red", None, "des maisons rouges"),
        ("house", None, "green", "small", "de petites maisons vertes"),
        ("horse", 4, "white", "big", "quatre grands chevaux blancs"),
        ("boat", 2, "brown", "medium", "deux bateaux marron de taille moyenne"),
        ("flower", 3, "orange", None, "trois fleurs orange"),
        ("moon", 2, "grey", None, "deux lunes grises"),
        ("rainbow", 2, None, "small", "deux petits arcs-en-ciel"),
        ("bird", 1, "white", None, "un oiseau blanc"),
    ],
)
def test_french_agreement_and_plurals(kind, count, colour, size, expected):
    noun = KIND_WORDS[kind].fr[0]
    colour_adj = COLOUR_WORDS[colour].fr[0] if colour else None
    size_adj = SIZE_WORDS[size].fr[0] if size else None
    determiner = french_determiner(noun, count, False, random.Random(0))
    if count in (2, 3, 4):
        determiner = COUNT_WORDS[count].fr[0]
    if count is None:
        determiner = "des"
    assert french_noun_phrase(noun, count, colour_adj, size_adj, determiner=determiner) == expected


@pytest.mark.parametrize(
    "kind, count, colour, expected",
    [
        ("cat", 2, "red", "two red cats"),
        ("fish", 3, "blue", "three blue fish"),
        ("butterfly", 4, None, "four butterflies"),
        ("child", 2, "pink", "two pink children"),
        ("person", None, None, "some people"),
        ("umbrella", 1, None, "an umbrella"),
        ("apple", 1, "orange", "an orange apple"),
    ],
)
def test_english_plurals_and_articles(kind, count, colour, expected):
    determiner = {1: "a", None: "some"}.get(count) or COUNT_WORDS[count].en[0]
    phrase = english_noun_phrase(KIND_WORDS[kind].en[0], count, colour, None, determiner=determiner)
    assert english_articles(phrase) == expected


def test_french_contractions_with_plurals():
    assert french_finish("une image de des chats") == "une image de chats"
    assert french_finish("à gauche de le arbre") == "à gauche de l'arbre"
    assert french_finish("au-dessus de une maison") == "au-dessus d'une maison"


def test_english_and_french_captions_agree_in_attributes():
    # The same random stream gives the same spec in both languages, and each caption says what its spec states.
    rng = random.Random(4)
    for _ in range(400):
        scene = sample_scene(rng)
        wording = rng.randrange(2**31)
        en, spec = describe(scene, "en", random.Random(wording))
        fr, spec_fr = describe(scene, "fr", random.Random(wording))
        assert spec == spec_fr and scene_matches_spec(scene, spec), (en, fr)
        for group in spec.groups:
            if group.colour is not None:
                assert any(w in en.replace(",", "").split() for w in COLOUR_WORDS[group.colour].en), (en, group)
                forms = {
                    f
                    for a in COLOUR_WORDS[group.colour].fr
                    for f in (a.masculine_plural, a.feminine_plural, a.masculine, a.feminine)
                }
                assert any(f in fr.replace(",", "").split() for f in forms), (fr, group)


def test_captions_vary_in_words_and_order():
    rng = random.Random(8)
    scene = scene_from_spec(SceneSpec((GroupSpec("cat", 2, "red"),), "forest", "night", "rain"), rng)
    captions = {describe(scene, lang, random.Random(k))[0] for k in range(300) for lang in ("en", "fr")}
    assert len(captions) >= 150
    assert any(c.startswith(("at night", "la nuit", "in the rain", "sous la pluie")) for c in captions)
    assert any(c.endswith(("at night", "la nuit")) for c in captions)
    assert any("kittens" in c for c in captions) and any("chatons" in c for c in captions)  # synonyms
    with pytest.raises(InputError, match="language 'de'"):
        describe(scene, "de", rng)


def test_training_captions_carry_only_training_distractors():
    held = set(DISTRACTOR_WORDS["held_out"].en) | {a.masculine for a in DISTRACTOR_WORDS["held_out"].fr}
    rng = random.Random(2)
    for k in range(2000):
        text, _ = describe(sample_scene(rng), "fr" if k % 2 else "en", rng)
        assert not held & set(text.split()), text
    text, _ = random_prompt(random.Random(3), "fr", unknown_word=True)
    assert set(parse_prompt(text).unknown) & {
        a.agree(g, p) for a in DISTRACTOR_WORDS["held_out"].fr for g in "mf" for p in (False, True)
    }


# --------------------------------------------------------------------------------------------------------------
# Parsing prompts, and the text encoder's vocabulary


def test_parse_gives_back_the_spec_of_every_caption():
    rng = random.Random(6)
    for k in range(1500):
        text, spec = describe(sample_scene(rng), "fr" if k % 2 else "en", rng, p_distractor=0.3)
        assert parse_prompt(text).spec == spec, text


@pytest.mark.parametrize(
    "prompt, groups, background, unknown",
    [
        ("un chat astronaute", (GroupSpec("cat"),), None, ("astronaute",)),
        ("a dog in the snow", (GroupSpec("dog"),), "snow", ()),
        ("deux bateaux sur la mer", (GroupSpec("boat", 2),), "sea", ()),
        ("trois étoiles jaunes", (GroupSpec("star", 3, "yellow"),), None, ()),
        ("des maisons rouges", (GroupSpec("house", None, "red"),), None, ()),
        ("a cute robot cat on the beach", (GroupSpec("cat"),), "beach", ("cute", "robot")),
        ("L'arbre est au centre", (GroupSpec("tree", cell=(1, 1)),), None, ()),
        ("a red rainbow", (GroupSpec("rainbow"),), None, ()),  # the world cannot draw it red: colour dropped
        ("un dragon", (), None, ("dragon",)),
    ],
)
def test_parse_names_what_the_world_knows(prompt, groups, background, unknown):
    parsed = parse_prompt(prompt)
    assert parsed.spec.groups == groups and parsed.spec.background == background and parsed.unknown == unknown


def test_parse_relations_and_backdrop():
    spec = parse_prompt("a cat to the left of a red bird at night while it is raining, two trees").spec
    assert spec.groups == (GroupSpec("cat"), GroupSpec("bird", 1, "red"), GroupSpec("tree", 2))
    assert spec.relations == (RelationSpec(0, "left_of", 1),) and (spec.time, spec.weather) == ("night", "rain")
    spec = parse_prompt("un chien près d'un chat").spec
    assert spec.relations == (RelationSpec(0, "near", 1),)
    assert parse_prompt("deux chiens près d'un chat").spec.relations == ()  # relations link single objects


def test_every_caption_fits_the_text_encoders_window():
    # The embedded model's tokenizer is CLIP's byte-level BPE (49,408 entries): every word of the second world
    # has tokens already, none is lost, and captions stay well under the 75 tokens between <start> and <end>.
    tokenizer = pytest.importorskip("atelier.models.tokenizer").CLIPTokenizer.from_default()
    words = {n.form(p) for w in KIND_WORDS.values() for n in w.en + w.fr for p in (False, True)}
    for word in sorted(words):
        assert tokenizer.decode(tokenizer.encode(word)).replace(" ", "") == word.replace(" ", ""), word
    rng = random.Random(9)
    longest = max(
        len(tokenizer.encode(describe(sample_scene(rng), lang, rng)[0])) for _ in range(300) for lang in ("en", "fr")
    )
    assert longest <= 64


# --------------------------------------------------------------------------------------------------------------
# Datasets of either world


def test_datasets_take_the_world_by_name(tmp_path):
    images, captions, specs = render_batch(3, 12, 64, world="v2")
    again, captions_again, _ = render_batch(3, 12, 64, world="v2")
    assert np.array_equal(images, again) and captions == captions_again
    assert all(isinstance(s, SceneSpec) for s in specs)
    assert not np.array_equal(images, render_batch(3, 12, 64)[0])  # "v1" stays the default
    one = prerender(tmp_path / "one", 7, workers=1, seed=2, size=32, shard_size=3, world="v2")
    two = prerender(tmp_path / "two", 7, workers=2, seed=2, size=32, shard_size=3, world="v2")
    assert json.loads(one.read_text())["world"] == "v2"
    stored = [s for _, _, scenes in iter_shards(one.parent) for s in scenes]
    assert [render(s, 32).tobytes() for s in stored] == [im.tobytes() for im in render_batch(2, 7, 32, world="v2")[0]]
    for name in json.loads(one.read_text())["shards"]:
        assert np.array_equal(np.load(one.parent / f"{name}.npy"), np.load(two.parent / f"{name}.npy"))
    many, per_image = render_dataset(seed=3, start=0, count=6, size=64, captions_per_image=4, world="v2")
    assert np.array_equal(many, images[:6]) and all(len(c) == 4 for c in per_image)
    with pytest.raises(InputError, match="World 'v3' is unknown"):
        render_batch(0, 1, world="v3")
    assert get_world("v2").kinds == KINDS and get_world().kinds == FIRST_WORLD_KINDS


@pytest.mark.slow
def test_second_world_render_speed_on_one_core():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(3000)]
    for scene in scenes:
        render(scene)  # fill the backdrop cache: every place, time, weather and texture
    start = perf_counter()
    for scene in scenes:
        render(scene)
    renders_per_s = len(scenes) / (perf_counter() - start)
    start = perf_counter()
    render_batch(0, 2000, world="v2")
    items_per_s = 2000 / (perf_counter() - start)
    print(f"v2 render: {renders_per_s:.0f}/s, render_batch (scene + caption + render): {items_per_s:.0f}/s")
    assert renders_per_s >= 500 and items_per_s >= 500


# --------------------------------------------------------------------------------------------------------------
# Judging


def test_labels_round_trip_and_a_true_reading_scores_every_point():
    rng = random.Random(12)
    for k in range(500):
        scene = sample_scene(rng)
        labels = scene_labels(scene)
        assert labels.shape == (30,) and labels.dtype == np.int64
        reading = scene_from_labels(labels)
        assert [(o.kind, o.colour, o.size, o.cell) for o in reading.objects] == sorted(
            ((o.kind, o.colour, o.size, o.cell) for o in scene.objects), key=lambda t: t[3]
        )
        _, spec = describe(scene, "fr" if k % 2 else "en", rng)
        assert all(s == p for s, p in score_points(reading, spec).values()), spec


def test_points_count_what_is_missing():
    spec = SceneSpec((GroupSpec("star", 3, "yellow"), GroupSpec("cat", None)), "city", "night")
    stars = tuple(SceneObject("star", "yellow", "small", c) for c in ((0, 0), (0, 2)))
    cats = (SceneObject("cat", "red", "big", (2, 2)),)
    points = score_points(Scene(stars + cats, "city", "day", "clear"), spec)
    assert points["kind"] == (2, 2) and points["count"] == (0, 2) and points["colour"] == (1, 1)
    assert points["background"] == (1, 1) and points["time"] == (0, 1) and points["weather"] == (0, 0)
    with pytest.raises(InputError, match="expected \\(30,\\)"):
        scene_from_labels(np.zeros(28, np.int64))


def test_distractor_words_name_nothing_the_world_knows():
    for words in DISTRACTOR_WORDS.values():
        assert len(words.en) == len(words.fr)  # one word, said in either language
        forms = [*words.en, *(a.agree(g, p) for a in words.fr for g in "mf" for p in (False, True))]
        for form in forms:
            parsed = parse_prompt(f"un chat {form}")
            assert parsed.spec.groups == (GroupSpec("cat"),) and parsed.unknown, form
