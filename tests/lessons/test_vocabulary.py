"""lessons/vocabulary.py: the words of the embedded model's world, and the prompt words it never read."""

from __future__ import annotations

import random

import pytest

from atelier.errors import InputError
from atelier.lessons.vocabulary import compose_prompt, known_words, unknown_words, words_of, world_choices
from atelier.world.captions import caption
from atelier.world.scene import sample_scene


def test_every_word_of_every_training_caption_is_known():
    rng = random.Random(16)
    seen = {w for _ in range(3000) for lang in ("en", "fr") for w in words_of(caption(sample_scene(rng), lang, rng))}
    assert seen <= known_words()
    assert len(seen) > 0.9 * len(known_words())  # the grammar reaches nearly all of them in 6000 captions


def test_words_outside_the_world_are_unknown_once_each_in_order():
    assert unknown_words("un chat astronaute, un CHAT") == ["chat", "astronaute"]
    assert unknown_words("a cat") == ["cat"]
    assert unknown_words("Une ÉTOILE verte sur l'herbe, 3 fois") == ["fois"]  # digits are not words
    assert words_of("l'herbe") == ["l", "herbe"]  # split as the tokenizer splits it


def test_choices_are_labelled_in_the_interface_language():
    fr, en = world_choices("fr"), world_choices("en")
    assert [len(fr[c]) for c in fr] == [14, 11, 3, 9, 10]
    assert (fr["objects"][3].name, fr["objects"][3].label, en["objects"][3].label) == ("star", "étoile", "star")
    assert (fr["places"][3].name, fr["places"][3].label) == ("1,0", "à gauche")
    assert (fr["colours"][3].forms, en["colours"][5].forms) == (("vert", "verte"), ("purple", "violet"))
    with pytest.raises(InputError, match="lang must be one of en, fr"):
        world_choices("de")


def test_compose_speaks_the_captions_grammar():
    assert (
        compose_prompt("fr", "star", "green", "small", "1,0", "grass") == "une petite étoile verte à gauche sur l'herbe"
    )
    assert compose_prompt("fr", "circle", "red", "medium") == "un cercle rouge de taille moyenne"
    assert compose_prompt("en", "circle", "orange", "big", "0,0") == "a big orange circle in the top left corner"
    assert compose_prompt("en", "circle", "orange") == "an orange circle"
    with pytest.raises(InputError, match="The object 'cat' is not in the embedded model's world"):
        compose_prompt("en", "cat", "red")
