"""The procedural world: scenes, pictograms, captions in two languages, held-out pairs and datasets."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import time

import numpy as np
import pytest
from PIL import Image

from atelier.errors import InputError
from atelier.world.captions import (
    describe,
    english_articles,
    english_noun_phrase,
    french_elision,
    french_noun_phrase,
    random_prompt,
)
from atelier.world.dataset import iter_shards, prerender, render_batch, render_dataset, save_samples
from atelier.world.scene import (
    COLOUR_RGB,
    MAX_JITTER,
    ObjectSpec,
    RelationSpec,
    Scene,
    SceneObject,
    SceneSpec,
    colour_fits_background,
    objects_fit_together,
    relations_between,
    render,
    sample_scene,
    scene_from_spec,
    scene_matches_spec,
)
from atelier.world.splits import ALL_PAIRS, HELD_OUT_PAIRS, TRAIN_PAIRS, is_held_out
from atelier.world.vocab import (
    BACKGROUND_WORDS,
    BACKGROUNDS,
    CELL_WORDS,
    CELLS,
    COLOUR_WORDS,
    COLOURS,
    KIND_WORDS,
    KINDS,
    RELATION_WORDS,
    RELATIONS,
    SIZE_WORDS,
    SIZES,
    FrenchNoun,
)


def _alone(kind: str, colour: str = "red", size: str = "big", cell=(1, 1), background: str = "white", offset=(0, 0)):
    return render(Scene((SceneObject(kind, colour, size, cell, offset),), background)).astype(int)


def _mask(image: np.ndarray, background: str = "white") -> np.ndarray:
    """Pixels that differ clearly from the empty background."""
    return np.abs(image - _empty(background)).max(-1) > 40


def _is_french(text: str) -> bool:
    """Every French caption has an article un, une, le, la or l'; no English caption has one."""
    return re.search(r"(^|\s)(un|une|le|la) |(^|\s)l'", text) is not None


def _empty(background: str) -> np.ndarray:
    return render(Scene((), background)).astype(int)


# --------------------------------------------------------------------------------------------------------------
# Vocabulary


def test_vocabulary_sizes_meet_the_minimums():
    assert len(KINDS) == 14 and {"circle", "square", "triangle", "star", "heart", "house", "sun"} <= set(KINDS)
    assert len(COLOURS) == 11
    assert SIZES == ("small", "medium", "big")
    assert tuple((r, c) for r in range(3) for c in range(3)) == CELLS
    assert len(BACKGROUNDS) == 10
    assert RELATIONS == ("left_of", "right_of", "above", "below", "next_to")
    for words in KIND_WORDS.values():
        assert words.en and words.fr and all(n.gender in ("m", "f") for n in words.fr)


def test_colours_are_clearly_distinct_in_rgb():
    closest = min(math.dist(COLOUR_RGB[a], COLOUR_RGB[b]) for a, b in itertools.combinations(COLOURS, 2))
    assert closest > 80  # yellow and orange are the closest pair


# --------------------------------------------------------------------------------------------------------------
# Rendering


def test_render_is_deterministic_and_has_the_asked_size():
    scene = sample_scene(random.Random(7))
    assert sample_scene(random.Random(7)) == scene
    a, b = render(scene), render(scene)
    assert a.dtype == np.uint8 and a.shape == (128, 128, 3)
    assert np.array_equal(a, b)
    assert render(scene, size=64).shape == (64, 64, 3)
    with pytest.raises(InputError, match="Render size 8"):
        render(scene, size=8)


def test_every_kind_renders_distinctly():
    # Same colour, size and cell: at least 20% of the pixels covered by either kind differ between the two.
    for size in ("small", "big"):
        images = {kind: _alone(kind, size=size) for kind in KINDS}
        for a, b in itertools.combinations(KINDS, 2):
            differ = np.abs(images[a] - images[b]).max(-1) > 40
            union = _mask(images[a]) | _mask(images[b])
            assert differ.sum() >= 0.2 * union.sum() and differ.sum() >= 100, (a, b, size)


def test_every_background_looks_different():
    empties = {name: _empty(name).astype(float) for name in BACKGROUNDS}
    for a, b in itertools.combinations(BACKGROUNDS, 2):
        assert np.abs(empties[a] - empties[b]).mean() > 15, (a, b)


def test_objects_land_in_their_grid_cell():
    # The centroid of each object's pixels lies in its third of the image, even with the largest jitter.
    for kind, cell, size in itertools.product(KINDS, CELLS, ("small", "big")):
        offset = (MAX_JITTER, -MAX_JITTER)
        ys, xs = np.nonzero(_mask(_alone(kind, size=size, cell=cell, offset=offset)))
        row, col = int(ys.mean() // (128 / 3)), int(xs.mean() // (128 / 3))
        assert (row, col) == cell, (kind, cell, size)
    # and the sizes are ordered: small < medium < big in covered area
    areas = [_mask(_alone("circle", size=s)).sum() for s in SIZES]
    assert areas[0] < areas[1] < areas[2]


def test_neighbours_never_touch():
    # The tightest allowed pairs, pushed towards each other by the jitter, keep a gap of background between them.
    j = MAX_JITTER
    for size_a, size_b in (("small", "big"), ("medium", "medium")):
        a = SceneObject("square", "red", size_a, (1, 0), (j, j))
        b = SceneObject("square", "blue", size_b, (1, 1), (-j, -j))
        assert objects_fit_together(a, b)
        mask_a = _mask(render(Scene((a,), "white")).astype(int))
        mask_b = _mask(render(Scene((b,), "white")).astype(int))
        assert not (mask_a & mask_b).any()
    assert not objects_fit_together(
        SceneObject("circle", "red", "big", (0, 0)), SceneObject("sun", "red", "big", (1, 1))
    )


def test_relations_between_cells():
    at = {cell: SceneObject("circle", "red", "small", cell) for cell in CELLS}
    assert relations_between(at[(1, 0)], at[(1, 1)]) == ("left_of", "next_to")
    assert relations_between(at[(1, 2)], at[(1, 0)]) == ("right_of",)
    assert relations_between(at[(0, 1)], at[(2, 2)]) == ("above",)  # two rows, one column: vertical dominates
    assert relations_between(at[(2, 2)], at[(1, 1)]) == ("right_of", "below")  # exact diagonal: both


# --------------------------------------------------------------------------------------------------------------
# Sampling and held-out pairs


def test_held_out_pairs_are_ten_percent_and_balanced():
    assert len(ALL_PAIRS) == 154 and len(HELD_OUT_PAIRS) == round(0.1 * len(ALL_PAIRS))
    assert len(TRAIN_PAIRS) + len(HELD_OUT_PAIRS) == len(ALL_PAIRS)
    for kind in KINDS:
        assert sum(k == kind for k, _ in HELD_OUT_PAIRS) <= 2
    for colour in COLOURS:
        assert 1 <= sum(c == colour for _, c in HELD_OUT_PAIRS) <= 2
    assert is_held_out("moon", "green") and not is_held_out("moon", "yellow")


def test_training_scenes_never_contain_held_out_pairs():
    rng = random.Random(0)
    counts = {1: 0, 2: 0, 3: 0}
    seen_backgrounds = set()
    for _ in range(20_000):
        scene = sample_scene(rng, train=True)
        counts[len(scene.objects)] += 1
        seen_backgrounds.add(scene.background)
        for obj in scene.objects:
            assert not is_held_out(obj.kind, obj.colour), obj
            assert colour_fits_background(obj.colour, scene.background), (obj.colour, scene.background)
        assert all(objects_fit_together(a, b) for a, b in itertools.combinations(scene.objects, 2))
    assert seen_backgrounds == set(BACKGROUNDS)
    assert 9_000 < counts[1] < 11_000 and 5_000 < counts[2] < 7_000 and 3_000 < counts[3] < 5_000


def test_held_out_sampling_and_all_pairs():
    rng = random.Random(1)
    held = [sample_scene(rng, held_out_only=True) for _ in range(2000)]
    assert all(is_held_out(o.kind, o.colour) for s in held for o in s.objects)
    assert {(o.kind, o.colour) for s in held for o in s.objects} == set(HELD_OUT_PAIRS)
    anything = [sample_scene(rng, train=False) for _ in range(3000)]
    assert any(is_held_out(o.kind, o.colour) for s in anything for o in s.objects)


# --------------------------------------------------------------------------------------------------------------
# French and English grammar

M, F = "m", "f"
FRENCH_CASES = [
    # (noun, gender, colour (masculine form), size word or None, definite, expected after elision)
    ("étoile", F, "jaune", None, False, "une étoile jaune"),
    ("cercle", M, "rouge", "grand", False, "un grand cercle rouge"),
    ("maison", F, "vert", "petit", False, "une petite maison verte"),
    ("étoile", F, "blanc", "grand", False, "une grande étoile blanche"),
    ("fleur", F, "bleu", "gros", False, "une grosse fleur bleue"),
    ("voiture", F, "violet", "petit", False, "une petite voiture violette"),
    ("lune", F, "gris", "de taille moyenne", False, "une lune grise de taille moyenne"),
    ("bateau", M, "orange", None, False, "un bateau orange"),
    ("fleur", F, "marron", None, False, "une fleur marron"),
    ("poisson", M, "noir", "petit", False, "un petit poisson noir"),
    ("arbre", M, "vert", None, True, "l'arbre vert"),
    ("arbre", M, "vert", "grand", True, "le grand arbre vert"),
    ("étoile", F, "noir", None, True, "l'étoile noire"),
    ("maison", F, "blanc", "petit", True, "la petite maison blanche"),
]


@pytest.mark.parametrize(("noun", "gender", "colour", "size", "definite", "expected"), FRENCH_CASES)
def test_french_agreement_and_placement(noun, gender, colour, size, definite, expected):
    phrase = french_noun_phrase(FrenchNoun(noun, gender), colour, size, definite)
    assert french_elision(phrase) == expected


def test_french_elision_and_contraction():
    assert (
        french_elision("un soleil jaune au-dessus de une maison rouge")
        == "un soleil jaune au-dessus d'une maison rouge"
    )
    assert french_elision("un carré à gauche de le cercle bleu") == "un carré à gauche du cercle bleu"
    assert french_elision("un nuage à côté de la étoile") == "un nuage à côté de l'étoile"
    assert french_elision("une image de un arbre") == "une image d'un arbre"
    assert french_elision("un poisson près de le arbre") == "un poisson près de l'arbre"
    assert french_elision("une fleur de taille moyenne") == "une fleur de taille moyenne"


def test_english_articles():
    assert english_noun_phrase("circle", "red", "big") == "a big red circle"
    assert english_articles(english_noun_phrase("star", "orange", None)) == "an orange star"
    assert english_articles("a yellow sun above a orange house") == "a yellow sun above an orange house"


def _noun_phrases(obj: ObjectSpec, lang: str) -> set[str]:
    """Every way the grammar may name this object, written out independently of captions.py."""
    sizes = [obj.size] if obj.size else [None]
    found = set()
    if lang == "en":
        for noun, colour, article in itertools.product(KIND_WORDS[obj.kind].en, COLOUR_WORDS[obj.colour].en, "at"):
            for size in sizes:
                size_words = SIZE_WORDS[size].en if size else ("",)
                for s in size_words:
                    words = " ".join(w for w in ("a" if article == "a" else "the", s, colour, noun) if w)
                    found.add(words.replace("a orange", "an orange"))
        return found
    colour = COLOUR_WORDS[obj.colour].fr[0]
    for noun in KIND_WORDS[obj.kind].fr:
        g = noun.gender
        for article in ("un", "le") if g == M else ("une", "la"):
            for size in sizes:
                for adj in SIZE_WORDS[size].fr if size else (None,):
                    before = f"{adj.agree(g)} " if adj and adj.before_noun else ""
                    after = f" {adj.agree(g)}" if adj and not adj.before_noun else ""
                    phrase = f"{article} {before}{noun.word} {colour.agree(g)}{after}"
                    if article in ("le", "la") and phrase.split(" ", 1)[1][0] in "aeiouyéè":
                        phrase = "l'" + phrase.split(" ", 1)[1]
                    found.add(phrase)
    return found


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_captions_say_what_their_spec_claims(lang):
    rng = random.Random(3 if lang == "en" else 4)
    for _ in range(1500):
        scene = sample_scene(rng, train=False)
        text, spec = describe(scene, lang, rng)
        assert scene_matches_spec(scene, spec), (text, spec)
        assert len(spec.objects) == len(scene.objects)
        for obj in spec.objects:
            # kind and colour always, with agreement in French; the size word only when the spec claims it
            assert any(p in text for p in _noun_phrases(obj, lang)), (text, obj)
            if obj.cell is not None:
                assert any(p in text for p in getattr(CELL_WORDS[obj.cell], lang)), (text, obj)
        if spec.background is not None:
            assert any(p in text for p in getattr(BACKGROUND_WORDS[spec.background], lang)), text
        else:
            assert not any(p in text for w in BACKGROUND_WORDS.values() for p in getattr(w, lang)), text
        for r in spec.relations:
            words = getattr(RELATION_WORDS[r.relation], lang)
            said = [f" {w} " for w in words] + [
                f" {w[:-2]}{c}" for w in words if w.endswith(" de") for c in ("d'", "du ")
            ]
            assert any(p in text for p in said), (text, r)
        assert "  " not in text and " ," not in text and text == text.strip()


def test_fixed_scene_captions_agree_in_french():
    # A small house and a big star: whatever synonyms and frames are drawn, the French forms agree.
    scene = Scene(
        (SceneObject("house", "green", "small", (2, 0)), SceneObject("star", "white", "big", (0, 2))), "night"
    )
    texts = [describe(scene, "fr", random.Random(i))[0] for i in range(200)]
    assert all("maison verte" in t and "étoile blanche" in t for t in texts)
    assert any("une petite maison verte" in t for t in texts)
    assert any("une grande étoile blanche" in t or "une grosse étoile blanche" in t for t in texts)
    assert any("au-dessus d'une" in t or "à droite d'une" in t or "à gauche d'une" in t for t in texts)
    assert not any("un étoile" in t or "un maison" in t or "petit maison" in t for t in texts)


def test_random_prompt_and_scene_from_spec():
    rng = random.Random(5)
    for lang in ("en", "fr"):
        for held_out in (False, True):
            for _ in range(200):
                text, spec = random_prompt(rng, lang, held_out=held_out)
                assert all(is_held_out(o.kind, o.colour) == held_out for o in spec.objects)
                scene = scene_from_spec(spec, rng)
                assert scene_matches_spec(scene, spec), (text, spec, scene)
    spec = SceneSpec(
        (ObjectSpec("sun", "yellow"), ObjectSpec("house", "red")), "sunset", (RelationSpec(0, "above", 1),)
    )
    scene = scene_from_spec(spec, random.Random(0))
    assert scene.background == "sunset" and scene.objects[0].cell[0] < scene.objects[1].cell[0]


def test_scene_from_spec_errors_name_the_problem():
    rng = random.Random(0)
    same_cell = SceneSpec((ObjectSpec("sun", "red", cell=(0, 0)), ObjectSpec("moon", "blue", cell=(0, 0))))
    with pytest.raises(InputError, match="distinct cells"):
        scene_from_spec(same_cell, rng)
    with pytest.raises(InputError, match="Object kind 'dragon' is unknown"):
        scene_from_spec(SceneSpec((ObjectSpec("dragon", "red"),)), rng)
    with pytest.raises(InputError, match="Caption language 'de'"):
        describe(sample_scene(rng), "de", rng)


# --------------------------------------------------------------------------------------------------------------
# Datasets


def test_render_batch_is_deterministic_and_mixes_languages():
    images, captions, _ = render_batch(11, 40, size=64)
    again, captions_again, _ = render_batch(11, 40, size=64)
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions_again
    tail, tail_captions, _ = render_batch(11, 10, size=64, start=30)  # items are independent of their batch
    assert np.array_equal(tail, images[30:]) and tail_captions == captions[30:]
    assert not np.array_equal(render_batch(12, 40, size=64)[0], images)
    assert all(_is_french(t) for t in render_batch(0, 30, size=32, lang_mix=1.0)[1])
    assert not any(_is_french(t) for t in render_batch(0, 30, size=32, lang_mix=0.0)[1])
    with pytest.raises(InputError, match=r"Language mix 1\.5"):
        render_batch(0, 1, lang_mix=1.5)


def test_prerender_is_the_same_for_any_worker_count(tmp_path):
    one = prerender(tmp_path / "one", 12, workers=1, seed=3, size=32, shard_size=5)
    two = prerender(tmp_path / "two", 12, workers=2, seed=3, size=32, shard_size=5)
    manifest = json.loads(one.read_text())
    assert manifest["shards"] == ["shard-00000", "shard-00001", "shard-00002"] and manifest["count"] == 12
    for name in manifest["shards"]:
        assert (one.parent / f"{name}.npy").read_bytes() == (two.parent / f"{name}.npy").read_bytes()
        assert (one.parent / f"{name}.json").read_text() == (two.parent / f"{name}.json").read_text()
    shards = list(iter_shards(one.parent))
    images = np.concatenate([np.asarray(s[0]) for s in shards])
    captions = [c for s in shards for c in s[1]]
    expected_images, expected_captions, _ = render_batch(3, 12, size=32)
    assert np.array_equal(images, expected_images) and captions == expected_captions
    assert np.array_equal(render(shards[1][2][0], size=32), expected_images[5])  # stored scenes re-render exactly
    with pytest.raises(InputError, match=r"has no manifest\.json"):
        next(iter_shards(tmp_path))


def test_render_dataset_gives_several_captions_per_image_for_any_worker_count():
    images, captions = render_dataset(seed=5, start=7, count=10, size=32, captions_per_image=4, workers=1, chunk=4)
    images2, captions2 = render_dataset(seed=5, start=7, count=10, size=32, captions_per_image=4, workers=2, chunk=4)
    assert np.array_equal(images, images2) and captions == captions2
    assert np.array_equal(images, render_batch(5, 10, size=32, start=7)[0])  # same pictures for the same indices
    assert all(len(per_image) == 4 and len(set(per_image)) >= 2 for per_image in captions)
    is_french = [[_is_french(c) for c in per_image] for per_image in captions]
    assert all(flags == [True, True, False, False] for flags in is_french)  # 2 French, then 2 English
    assert render_dataset(seed=5, start=0, count=0, size=32)[0].shape == (0, 32, 32, 3)


def test_save_samples_writes_a_contact_sheet(tmp_path):
    save_samples(tmp_path / "s.png", seed=0, rows=2, cols=3, size=32)
    assert Image.open(tmp_path / "s.png").size == (96, 64)
    assert len((tmp_path / "s.txt").read_text(encoding="utf-8").splitlines()) == 6


@pytest.mark.slow
def test_render_speed_on_one_core():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(3000)]
    for scene in scenes[:100]:
        render(scene)  # warm the background cache
    start = time.perf_counter()
    for scene in scenes:
        render(scene)
    renders_per_s = len(scenes) / (time.perf_counter() - start)
    start = time.perf_counter()
    render_batch(0, 2000)
    items_per_s = 2000 / (time.perf_counter() - start)
    print(f"render: {renders_per_s:.0f}/s, render_batch (scene + caption + render): {items_per_s:.0f}/s")
    assert renders_per_s >= 500 and items_per_s >= 500
