"""What the embedded model can draw: the words of its world, and which words of a prompt it never read in training.

The embedded model learned from captions of one small world (atelier/world/): every caption is built by the grammar
of world/captions.py from the tables of world/vocab.py, so the words it ever read are exactly those tables' words
and the grammar's own (articles, elided forms). A word outside them reaches the text encoder as tokens it never
saw next to a picture: the UNet gets no signal from it and draws whatever the other words say ("un chat
astronaute" draws a shape of the world). This module says so before a run; it knows nothing of a user's own
checkpoint, which learned from other captions.

Words are compared as CLIP reads them: lowercased, NFC, runs of letters (the tokenizer's pre-tokenizing rule
splits "l'herbe" into "l" and "herbe"), digits and punctuation left out.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from functools import cache

import regex

from atelier.errors import InputError
from atelier.world import vocab
from atelier.world.captions import LANGUAGES, english_articles, english_noun_phrase, french_elision, french_noun_phrase

WORD = regex.compile(r"\p{L}+")

# The grammar's own words, which no table holds: the articles of english_noun_phrase and french_noun_phrase and
# what french_elision turns them into (l', d', du, au).
GRAMMAR_WORDS = ("a", "an", "the", "un", "une", "le", "la", "l", "de", "d", "du", "au")

# The five things a scene of the world is made of, in the order a caption says them.
CATEGORIES = ("objects", "colours", "sizes", "places", "backgrounds")


def words_of(text: str) -> list[str]:
    """The words of `text` as the text encoder tells them apart: lowercased runs of letters, in order."""
    return WORD.findall(unicodedata.normalize("NFC", text).lower())


def _table_texts(words: vocab.Words) -> list[str]:
    """Every wording of one attribute, English and French (nouns, both adjective forms, phrases)."""
    texts = list(words.en)
    for fr in words.fr:
        if isinstance(fr, vocab.FrenchNoun):
            texts.append(fr.word)
        elif isinstance(fr, vocab.FrenchAdjective):
            texts += [fr.masculine, fr.feminine]
        else:
            texts.append(fr)
    return texts


@cache
def known_words() -> frozenset[str]:
    """Every word a training caption can contain, in English and French."""
    tables = [
        *vocab.KIND_WORDS.values(),
        *vocab.COLOUR_WORDS.values(),
        *vocab.SIZE_WORDS.values(),
        *vocab.CELL_WORDS.values(),
        *vocab.BACKGROUND_WORDS.values(),
        *vocab.RELATION_WORDS.values(),
        vocab.INTRO_WORDS,
        vocab.THERE_IS_WORDS,
        vocab.AND_WORDS,
        vocab.IS_WORDS,
    ]
    return frozenset(w for table in tables for text in _table_texts(table) for w in words_of(text)) | frozenset(
        GRAMMAR_WORDS
    )


def unknown_words(text: str) -> list[str]:
    """The words of `text` that no training caption contains, each once, in the order they appear."""
    known = known_words()
    return list(dict.fromkeys(w for w in words_of(text) if w not in known))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One thing the model can draw, as the interface language says it: `name` is the world's name for it."""

    name: str
    label: str
    forms: tuple[str, ...]  # every way the captions say it in that language: synonyms, feminine forms


def world_choices(lang: str) -> dict[str, list[Choice]]:
    """The objects, colours, sizes, places and backgrounds of the world, labelled in `lang` ("en" or "fr")."""
    _check_lang(lang)
    en = lang == "en"

    def nouns(w: vocab.Words) -> tuple[str, ...]:
        return w.en if en else tuple(n.word for n in w.fr)

    def adjectives(w: vocab.Words) -> tuple[str, ...]:
        return w.en if en else tuple(dict.fromkeys(f for a in w.fr for f in (a.masculine, a.feminine)))

    def phrases(w: vocab.Words) -> tuple[str, ...]:
        return w.en if en else w.fr

    tables = {
        "objects": (vocab.KIND_WORDS, nouns),
        "colours": (vocab.COLOUR_WORDS, adjectives),
        "sizes": (vocab.SIZE_WORDS, adjectives),
        "places": (vocab.CELL_WORDS, phrases),
        "backgrounds": (vocab.BACKGROUND_WORDS, phrases),
    }
    return {
        category: [Choice(_name(name), say(words)[0], say(words)) for name, words in table.items()]
        for category, (table, say) in tables.items()
    }


def _name(name: str | tuple[int, int]) -> str:
    """A world name as text: cells (row, col) become "row,col"."""
    return name if isinstance(name, str) else f"{name[0]},{name[1]}"


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise InputError(f"lang must be one of {', '.join(LANGUAGES)}, got {lang!r}.")


def compose_prompt(
    lang: str, kind: str, colour: str, size: str | None = None, cell: str | None = None, background: str | None = None
) -> str:
    """A prompt of one object in the training captions' own grammar (world/captions.py): "a big red circle on the
    left on the grass", "un grand cercle rouge à gauche sur l'herbe". `cell` is "row,col" as in `world_choices`."""
    _check_lang(lang)
    cells = {_name(c): c for c in vocab.CELLS}
    asked = {
        "object": (kind, vocab.KIND_WORDS),
        "colour": (colour, vocab.COLOUR_WORDS),
        "size": (size, vocab.SIZE_WORDS),
        "place": (cell, cells),
        "background": (background, vocab.BACKGROUND_WORDS),
    }
    for what, (value, table) in asked.items():
        if value is not None and value not in table:
            raise InputError(
                f"The {what} {value!r} is not in the embedded model's world; expected one of {', '.join(table)}."
            )

    def say(words: vocab.Words) -> str | vocab.FrenchNoun | vocab.FrenchAdjective:
        return words.en[0] if lang == "en" else words.fr[0]

    sizes = say(vocab.SIZE_WORDS[size]) if size else None
    if lang == "en":
        head = english_noun_phrase(say(vocab.KIND_WORDS[kind]), say(vocab.COLOUR_WORDS[colour]), sizes)
    else:  # French agreement and placement: french_noun_phrase takes the masculine forms
        head = french_noun_phrase(
            say(vocab.KIND_WORDS[kind]), say(vocab.COLOUR_WORDS[colour]).masculine, sizes and sizes.masculine
        )
    tail = [
        say(vocab.CELL_WORDS[cells[cell]]) if cell else "",
        say(vocab.BACKGROUND_WORDS[background]) if background else "",
    ]
    text = " ".join([head, *(t for t in tail if t)])
    return english_articles(text) if lang == "en" else french_elision(text)
