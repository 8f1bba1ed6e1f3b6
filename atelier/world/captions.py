"""Captions: a small English and French grammar that describes a scene, and the spec of what it stated.

`describe(scene, lang, rng)` picks a sentence frame, synonyms and which optional attributes to state, and returns
the caption with a `SceneSpec` of exactly what it claims. Variety matters: the text encoder must learn that
"a big red circle on the left", "on the left, a large red disc" and "il y a un grand cercle rouge à gauche" are
one picture. Size, position and background are often left out so that short prompts work too.

French needs three grammar rules, each a small visible step:
  1. agreement: an adjective takes the gender of its noun (une étoile jaune, une petite maison verte);
  2. placement: grand, gros and petit go before the noun, colours after it (un grand cercle rouge);
  3. elision and contraction: le/la/de before a vowel lose their vowel (l'arbre, d'une maison), and
     de le / à le become du / au (à gauche du cercle). `french_elision` applies them to a finished sentence.
"""

from __future__ import annotations

import random
import re

from atelier.errors import InputError
from atelier.world.scene import (
    ObjectSpec,
    RelationSpec,
    Scene,
    SceneObject,
    SceneSpec,
    relations_between,
    sample_scene,
)
from atelier.world.vocab import (
    AND_WORDS,
    BACKGROUND_WORDS,
    CELL_WORDS,
    COLOUR_WORDS,
    INTRO_WORDS,
    IS_WORDS,
    KIND_WORDS,
    RELATION_WORDS,
    SIZE_WORDS,
    THERE_IS_WORDS,
    FrenchNoun,
)

LANGUAGES = ("en", "fr")

# How often each optional part is stated. A caption always names every object's kind and colour.
P_SIZE = 0.5
P_POSITION = 0.6
P_BACKGROUND = 0.5
P_RELATION = 0.6  # for scenes of 2+ objects: describe the first two by a relation rather than by their cells
P_INTRO = 0.15  # "a picture of ..."


# --------------------------------------------------------------------------------------------------------------
# Noun phrases


def english_noun_phrase(noun: str, colour: str, size: str | None, definite: bool = False) -> str:
    """ "a big red circle", "the red circle": size before colour, both before the noun."""
    words = ["the" if definite else "a"] + ([size] if size else []) + [colour, noun]
    return " ".join(words)


def french_noun_phrase(noun: FrenchNoun, colour: str, size: str | None, definite: bool = False) -> str:
    """ "un grand cercle rouge", "une petite maison verte", "une lune grise de taille moyenne".

    `colour` and `size` are the French masculine forms; this function makes them agree with the noun's gender
    and places them (before or after the noun). Elision (le arbre -> l'arbre) is left to `french_elision`.
    """
    gender = noun.gender
    article = ("le" if gender == "m" else "la") if definite else ("un" if gender == "m" else "une")
    colour_adj = _french_adjective(COLOUR_WORDS, colour)
    size_adj = _french_adjective(SIZE_WORDS, size) if size else None
    before = [size_adj.agree(gender)] if size_adj and size_adj.before_noun else []
    after = [size_adj.agree(gender)] if size_adj and not size_adj.before_noun else []
    return " ".join([article, *before, noun.word, colour_adj.agree(gender), *after])


def _french_adjective(table, masculine: str):
    for words in table.values():
        for adj in words.fr:
            if adj.masculine == masculine:
                return adj
    raise InputError(f"French adjective {masculine!r} is not in the vocabulary.")


def french_elision(text: str) -> str:
    """Apply French elision and contraction to a sentence built word by word.

    le/la + vowel -> l' (l'arbre, l'étoile); de + vowel -> d' (d'une maison, d'un arbre);
    de le -> du (à gauche du cercle); à le -> au (au cercle). Our nouns have no h, so h aspiré never arises.
    """
    text = re.sub(r"\b(le|la) (?=[aeiouyéèêâîôûœ])", "l'", text)
    text = re.sub(r"\bde le ", "du ", text)
    text = re.sub(r"(^|\s)à le ", r"\1au ", text)
    text = re.sub(r"\bde (?=[aeiouyéèêâîôûœ])", "d'", text)
    return text


def english_articles(text: str) -> str:
    """a -> an before a vowel sound (an orange star); every word of our vocabulary is spelt as it sounds."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


# --------------------------------------------------------------------------------------------------------------
# One object, said with random synonyms


def _noun_phrase(obj: SceneObject, lang: str, rng: random.Random, say_size: bool, definite: bool = False) -> str:
    kind_words, colour_words = KIND_WORDS[obj.kind], COLOUR_WORDS[obj.colour]
    size_words = SIZE_WORDS[obj.size] if say_size else None
    if lang == "en":
        size = rng.choice(size_words.en) if size_words else None
        return english_noun_phrase(rng.choice(kind_words.en), rng.choice(colour_words.en), size, definite)
    size = rng.choice(size_words.fr).masculine if size_words else None
    return french_noun_phrase(rng.choice(kind_words.fr), colour_words.fr[0].masculine, size, definite)


def _say(words, lang: str, rng: random.Random) -> str:
    return rng.choice(words.en if lang == "en" else words.fr)


def _finish(text: str, lang: str) -> str:
    text = " ".join(text.split()).replace(" ,", ",")
    return english_articles(text) if lang == "en" else french_elision(text)


# --------------------------------------------------------------------------------------------------------------
# Whole captions


def describe(scene: Scene, lang: str, rng: random.Random) -> tuple[str, SceneSpec]:
    """A caption of the scene in `lang` ("en" or "fr") and the spec of exactly what it states.

    The spec lists the objects in the order the caption names them; relations index into that list.
    """
    if lang not in LANGUAGES:
        raise InputError(f"Caption language {lang!r} is not supported; expected 'en' or 'fr'.")
    objects = list(scene.objects)
    rng.shuffle(objects)  # name them in any order
    say_size = [rng.random() < P_SIZE for _ in objects]
    say_background = rng.random() < P_BACKGROUND
    background = _say(BACKGROUND_WORDS[scene.background], lang, rng) if say_background else ""

    relation = None
    if len(objects) >= 2 and rng.random() < P_RELATION:
        choices = relations_between(objects[0], objects[1])
        relation = rng.choice(choices) if choices else None
    say_cell = [rng.random() < P_POSITION and not (relation and i < 2) for i in range(len(objects))]

    def phrase(i: int, definite: bool = False) -> str:
        return _noun_phrase(objects[i], lang, rng, say_size[i], definite)

    def cell(i: int) -> str:
        return _say(CELL_WORDS[objects[i].cell], lang, rng) if say_cell[i] else ""

    if len(objects) == 1:
        text = _one_object(phrase, cell(0), background, lang, rng, say_cell[0])
    else:
        if relation:
            parts = [f"{phrase(0)} {_say(RELATION_WORDS[relation], lang, rng)} {phrase(1)}"]
            parts += [f"{phrase(i)} {cell(i)}" for i in range(2, len(objects))]
        else:
            parts = [f"{phrase(i)} {cell(i)}" for i in range(len(objects))]
        and_word = _say(AND_WORDS, lang, rng)
        text = f"{', '.join(parts[:-1])} {and_word} {parts[-1]}" if len(parts) > 1 else parts[0]
        if rng.random() < P_INTRO:
            text = f"{_say(INTRO_WORDS, lang, rng)} {text}"
        if background:
            text = f"{background}, {text}" if rng.random() < 0.3 else f"{text} {background}"

    spec = SceneSpec(
        objects=tuple(
            ObjectSpec(o.kind, o.colour, o.size if say_size[i] else None, o.cell if say_cell[i] else None)
            for i, o in enumerate(objects)
        ),
        background=scene.background if say_background else None,
        relations=(RelationSpec(0, relation, 1),) if relation else (),
    )
    return _finish(text, lang), spec


def _one_object(phrase, cell: str, background: str, lang: str, rng: random.Random, say_cell: bool) -> str:
    """The sentence frames for a single object."""
    frame = rng.random()
    if say_cell and frame < 0.2:  # "the red circle is on the left"
        return f"{phrase(0, definite=True)} {_say(IS_WORDS, lang, rng)} {cell} {background}"
    if frame < 0.35:  # "there is a red circle ..."
        head = f"{_say(THERE_IS_WORDS, lang, rng)} {phrase(0)}"
    elif frame < 0.35 + P_INTRO:  # "a picture of a red circle ..."
        head = f"{_say(INTRO_WORDS, lang, rng)} {phrase(0)}"
    else:
        head = phrase(0)
    tail = [t for t in (cell, background) if t]
    rng.shuffle(tail)
    if tail and frame >= 0.35 and rng.random() < 0.3:  # "on the left, a red circle ..."
        return f"{tail[0]}, {head} {' '.join(tail[1:])}"
    return f"{head} {' '.join(tail)}"


def caption(scene: Scene, lang: str, rng: random.Random) -> str:
    """A random caption of the scene in `lang` ("en" or "fr")."""
    return describe(scene, lang, rng)[0]


def random_prompt(rng: random.Random, lang: str, held_out: bool = False) -> tuple[str, SceneSpec]:
    """A prompt for evaluation and the spec of what it asks for.

    With `held_out=True` every object of the prompt has a (kind, colour) pair the model never saw in training;
    otherwise only training pairs appear.
    """
    scene = sample_scene(rng, train=not held_out, held_out_only=held_out)
    return describe(scene, lang, rng)
