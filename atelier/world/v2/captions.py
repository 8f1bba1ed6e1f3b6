"""Captions of the second world: an English and French grammar with number, and the spec of what each states.

`describe(scene, lang, rng)` first decides what to state (each group's count, colour, size and cell, the place,
the time of day, the weather, a relation), then words it; both languages make the same decisions from the same
random stream, so one seed gives an English and a French caption of one spec. The grammar, step by step:

  1. the determiner says the count: a / an / one, un / une; two, deux, 2...; some, several, des, plusieurs;
  2. the noun takes its plural (cat -> cats, fish -> fish, cheval -> chevaux, arc-en-ciel -> arcs-en-ciel);
  3. French adjectives agree in gender and number (trois étoiles jaunes, des maisons rouges, deux chats verts)
     and stand where they belong (petit, grand, gros before the noun, colours after it); "des" becomes "de"
     before an adjective (de petits chats), as written French wants;
  4. elision and contraction as in the first world (l'arbre, d'une maison, à gauche du cercle), and
     "de des" -> "de" (une image de chats);
  5. English: a -> an before a vowel; "there is" / "there are" and "is" / "are" follow the number.

The place, time and weather phrases go before or after the objects, in any order; the objects are named in any
order. A few captions carry a word the world does not know (vocab.DISTRACTOR_WORDS: "a happy cat"), stating
nothing: the spec does not change.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from atelier.errors import InputError
from atelier.world.captions import english_articles
from atelier.world.captions import french_elision as first_world_elision
from atelier.world.scene import RelationSpec
from atelier.world.v2.scene import GroupSpec, Scene, SceneObject, SceneSpec, groups_of, relations_between, sample_scene
from atelier.world.v2.vocab import (
    AND_WORDS,
    BACKGROUND_WORDS,
    CELL_WORDS,
    COLOUR_WORDS,
    COUNT_WORDS,
    DISTRACTOR_WORDS,
    INTRO_WORDS,
    IS_WORDS,
    KIND_WORDS,
    RELATION_WORDS,
    SIZE_WORDS,
    SOME_WORDS,
    THERE_IS_WORDS,
    TIME_WORDS,
    WEATHER_WORDS,
    Adjective,
    Noun,
    Words,
)

LANGUAGES = ("en", "fr")

# How often each optional part is stated. A caption always names every group's kind and count.
P_COLOUR = 0.8
P_SIZE = 0.4
P_POSITION = 0.5  # single objects only: a cell holds one object
P_SOME = 0.15  # a group of several said "some cats" / "des chats", without its number
P_BACKGROUND = 0.55
P_TIME = {"day": 0.15, "sunset": 0.7, "night": 0.7}  # the unusual is said more often than the usual
P_WEATHER = {"clear": 0.1, "rain": 0.7, "snowfall": 0.7}
P_RELATION = 0.5  # for scenes of 2+ single objects
P_INTRO = 0.15  # "a picture of ..." / "there is ..."
P_DISTRACTOR = 0.1
P_FRONT = 0.3  # a place, time or weather phrase put before the objects


@dataclass(frozen=True)
class _Said:
    """What the caption states about one group, decided before any wording."""

    objects: tuple[SceneObject, ...]
    count: int | None  # None: "some"
    colour: bool
    size: bool
    cell: bool
    distractor: tuple[str, int] | None  # (set of vocab.DISTRACTOR_WORDS, index: the same word in both languages)


# --------------------------------------------------------------------------------------------------------------
# Noun phrases


def english_noun_phrase(
    noun: Noun, count: int | None, colour: str | None, size: str | None, *, determiner: str, extra: str | None = None
) -> str:
    """ "a big red cat", "two small cats", "some yellow stars", "the happy dog": determiner, extra word, size,
    colour, then the noun in the number of the count."""
    words = [determiner, extra, size, colour, noun.form(count != 1)]
    return " ".join(w for w in words if w)


def french_noun_phrase(
    noun: Noun,
    count: int | None,
    colour: Adjective | None,
    size: Adjective | None,
    *,
    determiner: str,
    extra: Adjective | None = None,
) -> str:
    """ "un grand chat rouge", "trois étoiles jaunes", "de petites maisons vertes", "deux chevaux blancs".

    Every adjective agrees with the noun's gender and number and goes before or after it; "des" becomes "de"
    before an adjective. Elision (le arbre -> l'arbre) is left to `french_finish`.
    """
    gender, plural = noun.gender, count != 1
    before = [a.agree(gender, plural) for a in (size,) if a and a.before_noun]
    after = [a.agree(gender, plural) for a in (colour, extra, size) if a and not a.before_noun]
    if determiner == "des" and before:
        determiner = "de"
    return " ".join([determiner, *before, noun.form(plural), *after])


def french_determiner(noun: Noun, count: int | None, definite: bool, rng: random.Random) -> str:
    if count == 1:
        if definite:
            return "le" if noun.gender == "m" else "la"
        return "un" if noun.gender == "m" else "une"
    if count is None:
        return rng.choice(SOME_WORDS.fr)
    return rng.choice(COUNT_WORDS[count].fr)


def english_determiner(count: int | None, definite: bool, rng: random.Random) -> str:
    if count == 1:
        return "the" if definite else ("one" if rng.random() < 0.1 else "a")
    if count is None:
        return rng.choice(SOME_WORDS.en)
    return rng.choice(COUNT_WORDS[count].en)


def french_finish(text: str) -> str:
    """The first world's elision and contraction, then "de des" -> "de" (une image de chats)."""
    return first_world_elision(re.sub(r"\bde des ", "de ", text))


def _group_phrase(said: _Said, lang: str, rng: random.Random, definite: bool = False) -> str:
    obj = said.objects[0]
    kind_words = KIND_WORDS[obj.kind]
    colour_words = COLOUR_WORDS[obj.colour] if said.colour else None
    size_words = SIZE_WORDS[obj.size] if said.size else None
    extras = DISTRACTOR_WORDS[said.distractor[0]] if said.distractor else None
    if lang == "en":
        return english_noun_phrase(
            rng.choice(kind_words.en),
            said.count,
            rng.choice(colour_words.en) if colour_words else None,
            rng.choice(size_words.en) if size_words else None,
            determiner=english_determiner(said.count, definite, rng),
            extra=extras.en[said.distractor[1]] if extras else None,
        )
    noun = rng.choice(kind_words.fr)
    return french_noun_phrase(
        noun,
        said.count,
        colour_words.fr[0] if colour_words else None,
        rng.choice(size_words.fr) if size_words else None,
        determiner=french_determiner(noun, said.count, definite, rng),
        extra=extras.fr[said.distractor[1]] if extras else None,
    )


def _say(words: Words, lang: str, rng: random.Random) -> str:
    return rng.choice(words.en if lang == "en" else words.fr)


def _number_word(words: Words, lang: str, plural: bool) -> str:
    """ "there is" / "there are", "is" / "are"; French has one form for "il y a" and picks "est" / "sont"."""
    options = words.en if lang == "en" else words.fr
    return options[min(len(options) - 1, int(plural))]


def _finish(text: str, lang: str) -> str:
    text = " ".join(text.split()).replace(" ,", ",")
    return english_articles(text) if lang == "en" else french_finish(text)


# --------------------------------------------------------------------------------------------------------------
# Whole captions


def _decide(
    scene: Scene, rng: random.Random, distractors: str, p_distractor: float
) -> tuple[list[_Said], tuple[str, ...], str | None]:
    """What to state: each group (in the order they will be named), the backdrop phrases to say, the relation."""
    groups = list(groups_of(scene).values())
    rng.shuffle(groups)
    relation = None
    singles = [i for i, g in enumerate(groups) if len(g) == 1]
    if len(singles) >= 2 and rng.random() < P_RELATION:
        i, j = rng.sample(singles, 2)
        choices = relations_between(groups[i][0], groups[j][0])
        if choices:
            relation = rng.choice(choices)
            groups = [groups[i], groups[j]] + [g for k, g in enumerate(groups) if k not in (i, j)]
    distractor_at = rng.randrange(len(groups)) if rng.random() < p_distractor else None
    said = []
    for k, objects in enumerate(groups):
        n = len(objects)
        self_coloured = objects[0].colour is None
        said.append(
            _Said(
                objects,
                None if n > 1 and rng.random() < P_SOME else n,
                not self_coloured and rng.random() < P_COLOUR,
                rng.random() < P_SIZE,
                n == 1 and rng.random() < P_POSITION and not (relation and k < 2),
                (distractors, rng.randrange(len(DISTRACTOR_WORDS[distractors].en))) if k == distractor_at else None,
            )
        )
    backdrop = []
    if rng.random() < P_BACKGROUND:
        backdrop.append("background")
    if scene.time is not None and rng.random() < P_TIME[scene.time]:
        backdrop.append("time")
    if scene.weather is not None and rng.random() < P_WEATHER[scene.weather]:
        backdrop.append("weather")
    return said, tuple(backdrop), relation


def describe(
    scene: Scene, lang: str, rng: random.Random, *, distractors: str = "train", p_distractor: float = P_DISTRACTOR
) -> tuple[str, SceneSpec]:
    """A caption of the scene in `lang` ("en" or "fr") and the spec of exactly what it states.

    The spec lists the groups in the order the caption names them; relations index into that list. The same
    `rng` state gives the same spec in both languages. With probability `p_distractor` one group carries a word
    of `DISTRACTOR_WORDS[distractors]` ("train" in training captions, "held_out" to test prompts with words the
    model never saw).
    """
    if lang not in LANGUAGES:
        raise InputError(f"Caption language {lang!r} is not supported; expected 'en' or 'fr'.")
    if distractors not in DISTRACTOR_WORDS:
        raise InputError(f"Distractor set {distractors!r} is unknown; expected 'train' or 'held_out'.")
    if not scene.objects:
        raise InputError("A scene without objects has nothing to describe; expected at least one object.")
    said, backdrop, relation = _decide(scene, rng, distractors, p_distractor)
    spec = SceneSpec(
        groups=tuple(
            GroupSpec(
                s.objects[0].kind,
                s.count,
                s.objects[0].colour if s.colour else None,
                s.objects[0].size if s.size else None,
                s.objects[0].cell if s.cell else None,
            )
            for s in said
        ),
        background=scene.background if "background" in backdrop else None,
        time=scene.time if "time" in backdrop else None,
        weather=scene.weather if "weather" in backdrop else None,
        relations=(RelationSpec(0, relation, 1),) if relation else (),
    )
    # Wording: from here on, the random stream only picks words.
    phrases = {
        "background": BACKGROUND_WORDS[scene.background],
        "time": TIME_WORDS.get(scene.time or ""),
        "weather": WEATHER_WORDS.get(scene.weather or ""),
    }
    around = [_say(phrases[name], lang, rng) for name in backdrop]
    rng.shuffle(around)
    front = [p for p in around if rng.random() < P_FRONT]
    back = [p for p in around if p not in front]

    def cell(s: _Said) -> str:
        return _say(CELL_WORDS[s.objects[0].cell], lang, rng) if s.cell else ""

    if len(said) == 1 and said[0].cell and rng.random() < 0.2:  # "the red cat is on the left"
        body = (
            f"{_group_phrase(said[0], lang, rng, definite=True)} {_number_word(IS_WORDS, lang, False)} {cell(said[0])}"
        )
    else:
        if relation:
            parts = [
                f"{_group_phrase(said[0], lang, rng)} {_say(RELATION_WORDS[relation], lang, rng)} "
                f"{_group_phrase(said[1], lang, rng)}"
            ]
            parts += [f"{_group_phrase(s, lang, rng)} {cell(s)}" for s in said[2:]]
        else:
            parts = [f"{_group_phrase(s, lang, rng)} {cell(s)}" for s in said]
        body = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} {_say(AND_WORDS, lang, rng)} {parts[-1]}"
        frame = rng.random()
        if frame < P_INTRO:
            body = f"{_say(INTRO_WORDS, lang, rng)} {body}"
        elif frame < 2 * P_INTRO:
            body = f"{_number_word(THERE_IS_WORDS, lang, said[0].count != 1)} {body}"
    text = f"{', '.join(front)}, {body}" if front else body
    return _finish(f"{text} {' '.join(back)}", lang), spec


def caption(scene: Scene, lang: str, rng: random.Random) -> str:
    """A random caption of the scene in `lang` ("en" or "fr")."""
    return describe(scene, lang, rng)[0]


def random_prompt(
    rng: random.Random, lang: str, held_out: bool = False, unknown_word: bool = False
) -> tuple[str, SceneSpec]:
    """A prompt for evaluation and the spec of what it asks for. With `held_out=True` every coloured group has a
    (kind, colour) pair the model never saw in training; with `unknown_word=True` the prompt carries one word the
    world does not know and training never showed ("un chat astronaute"), which changes nothing in the spec."""
    scene = sample_scene(rng, train=not held_out, held_out_only=held_out)
    if unknown_word:
        return describe(scene, lang, rng, distractors="held_out", p_distractor=1.0)
    return describe(scene, lang, rng)
