"""A prompt read back into the spec of what it names, in English or French, skipping the words the world lacks.

"un chat astronaute" names a cat and a word the world does not know; "two red cats in the snow at night" names a
count, a colour, a kind, a place and a time. `parse_prompt` finds every phrase of the vocabulary (the longest
first, so "à gauche de" is a relation and "à gauche" a cell), sets the rest aside as unknown, and groups what it
found into noun phrases, the way the grammar of captions.py builds them:

    determiner or count   a, one, the, un, une, le, two, deux, 2, some, des, plusieurs: starts a group
    adjectives            colour and size: before the noun in English, around it in French
    noun                  the kind, in the singular or the plural
    after the group       a cell ("on the left"), or a relation that links it to the next group

Place, time and weather phrases stand anywhere. The spec is what a generated image is checked against, and what
`scene_from_spec` can draw: a prompt in other words than the captions' still gets the spec of what it names.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from atelier.world.scene import RelationSpec
from atelier.world.v2.scene import GroupSpec, SceneSpec
from atelier.world.v2.vocab import (
    AND_WORDS,
    BACKGROUND_WORDS,
    CELL_WORDS,
    COLOUR_WORDS,
    COUNT_WORDS,
    INTRO_WORDS,
    IS_WORDS,
    KIND_WORDS,
    MAX_COUNT,
    RELATION_WORDS,
    SELF_COLOURED_KINDS,
    SIZE_WORDS,
    SOME_WORDS,
    THERE_IS_WORDS,
    TIME_WORDS,
    WEATHER_WORDS,
)

# --------------------------------------------------------------------------------------------------------------
# Normalisation: prompt and vocabulary are cut into words the same way, elisions and contractions undone
# (l'arbre -> le arbre, du -> de le, au -> à le), so a phrase matches however it was contracted.

_CONTRACTIONS = {"du": "de le", "au": "à le", "aux": "à les", "an": "a"}


def words_of(text: str) -> list[str]:
    """Lowercase words and commas: "L'arbre, au centre" -> ["le", "arbre", ",", "à", "le", "centre"]."""
    text = text.lower().replace("’", "'").replace("œ", "oe")
    text = re.sub(r"\b(l|d|qu|j|n|s)'", lambda m: {"l": "le", "d": "de", "qu": "que"}.get(m[1], m[1]) + " ", text)
    text = re.sub(r"[.;:!?()\[\]\"]", " ", text).replace(",", " , ")
    out: list[str] = []
    for word in text.split():
        out += _CONTRACTIONS.get(word, word).split()
    return out


# --------------------------------------------------------------------------------------------------------------
# The phrase table: word tuple -> (what it is, its value)


def _all_forms(adjective) -> set[str]:
    return {adjective.masculine, adjective.feminine, adjective.masculine_plural, adjective.feminine_plural}


def _phrase_table() -> dict[tuple[str, ...], tuple[str, object]]:
    table: dict[tuple[str, ...], tuple[str, object]] = {}

    def add(text: str, role: str, value: object) -> None:
        table.setdefault(tuple(words_of(text)), (role, value))

    for words in (AND_WORDS, THERE_IS_WORDS, INTRO_WORDS):
        for text in words.en + words.fr:
            add(text, "separator", None)
    for text in IS_WORDS.en + IS_WORDS.fr:  # "the cat is on the left": what follows is said of the last group
        add(text, "is", None)
    for table_words, role in ((BACKGROUND_WORDS, "background"), (TIME_WORDS, "time"), (WEATHER_WORDS, "weather")):
        for name, words in table_words.items():
            for text in words.en + words.fr:
                add(text, role, name)
    for relation, words in RELATION_WORDS.items():
        for text in words.en + words.fr:
            add(text, "relation", relation)
    for cell, words in CELL_WORDS.items():
        for text in words.en + words.fr:
            add(text, "cell", cell)
    for kind, words in KIND_WORDS.items():
        for noun in words.en + words.fr:
            add(noun.word, "kind", (kind, False))
            add(noun.plural, "kind", (kind, noun.plural != noun.word))
    for colour, words in COLOUR_WORDS.items():
        for text in set(words.en).union(*(_all_forms(a) for a in words.fr)):
            add(text, "colour", colour)
    for size, words in SIZE_WORDS.items():
        for text in set(words.en).union(*(_all_forms(a) for a in words.fr)):
            add(text, "size", size)
    for count, words in COUNT_WORDS.items():
        for text in words.en + words.fr + (("une",) if count == 1 else ()):
            add(text, "count", count)
    for text in SOME_WORDS.en + SOME_WORDS.fr + ("les",):
        add(text, "count", None)
    for text in ("the", "le", "la"):
        add(text, "count", 1)
    for text in ("de", "que", "of"):  # glue words that name nothing, never reported as unknown
        add(text, "glue", None)
    return table


_TABLE = _phrase_table()
_LONGEST = max(len(k) for k in _TABLE)


def _match(words: list[str], i: int, longest: int = _LONGEST) -> tuple[str, object, int]:
    """(role, value, length) of the longest phrase at words[i] of at most `longest` words."""
    if words[i] == ",":
        return "separator", None, 1
    for n in range(min(longest, len(words) - i), 0, -1):
        key = tuple(words[i : i + n])
        if key in _TABLE:
            return (*_TABLE[key], n)
    return "unknown", None, 1


_OPENS_A_GROUP = ("count", "colour", "size", "kind", "unknown")


def phrases_of(text: str) -> list[tuple[str, object, str]]:
    """(role, value, the words) for each phrase of the prompt, longest match first; unknown words get role
    "unknown" and value None; commas are separators.

    A relation must lead to an object: in "l'avion est à gauche de jour", reading "à gauche" (a cell) leaves
    "de jour" (a time), which reaches past "à gauche de": that reading wins.
    """
    words, out, i = words_of(text), [], 0
    while i < len(words):
        role, value, n = _match(words, i)
        if role == "relation" and n > 1:
            shorter = _match(words, i, n - 1)
            after = _match(words, i + shorter[2]) if i + shorter[2] < len(words) else None
            # the words after the shorter reading make a phrase that is no group and reaches past the relation
            if shorter[0] != "unknown" and after and after[0] not in _OPENS_A_GROUP and shorter[2] + after[2] > n:
                role, value, n = shorter
        out.append((role, value, " ".join(words[i : i + n])))
        i += n
    return out


# --------------------------------------------------------------------------------------------------------------
# Grouping


@dataclass
class _Group:
    count: int | None = None
    counted: bool = False  # a determiner or number was said
    kind: str | None = None
    plural: bool = False
    colour: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None

    def spec(self) -> GroupSpec:
        count = None if self.plural and (not self.counted or self.count == 1) else (self.count if self.counted else 1)
        colour = None if self.kind in SELF_COLOURED_KINDS else self.colour
        return GroupSpec(self.kind, count, colour, self.size, self.cell if count == 1 else None)


@dataclass(frozen=True)
class ParsedPrompt:
    """What a prompt names (`spec`, whose groups may be empty when it names no kind) and the words set aside."""

    spec: SceneSpec
    unknown: tuple[str, ...] = field(default=())


def parse_prompt(text: str) -> ParsedPrompt:
    """The spec of what an English or French prompt names; words outside the world's vocabulary are skipped."""
    groups: list[GroupSpec] = []
    relations: list[RelationSpec] = []
    backdrop: dict[str, str] = {}
    unknown: list[str] = []
    current = _Group()
    waiting_cell: tuple[int, int] | None = None  # "on the left, a cat": a cell said before its group
    waiting_relation: tuple[int, str] | None = None  # (subject index, relation) until the object group closes
    last: int | None = None  # index of the group closed last
    after_is = False

    def close() -> None:
        nonlocal current, waiting_cell, waiting_relation, last
        if current.kind is not None:
            if current.cell is None and waiting_cell is not None:
                current.cell, waiting_cell = waiting_cell, None
            spec = current.spec()
            index = next((k for k, g in enumerate(groups) if g.kind == spec.kind), None)
            if index is None:
                groups.append(spec)
                index = len(groups) - 1
            else:  # the same kind named twice: one group of both counts
                known = spec.count is not None and groups[index].count is not None
                total = groups[index].count + spec.count if known else None
                groups[index] = GroupSpec(spec.kind, total if total and total <= MAX_COUNT else None, spec.colour)
            if waiting_relation is not None:
                subject, relation = waiting_relation
                if subject != index:
                    relations.append(RelationSpec(subject, relation, index))
                waiting_relation = None
            last = index
        current = _Group()

    for role, value, words in phrases_of(text):
        after_is = after_is if role == "unknown" else (role == "is" or (after_is and role == "cell"))
        if role == "count":
            if current.kind is not None or current.counted:
                close()
            current.count, current.counted = value, True
        elif role in ("colour", "size"):
            if getattr(current, role) is not None and current.kind is not None:
                close()
            setattr(current, role, value)
        elif role == "kind":
            if current.kind is not None:
                close()
            current.kind, current.plural = value
        elif role == "cell":
            if current.kind is not None:
                current.cell = value
            elif after_is and last is not None and groups[last].count == 1:
                groups[last] = dataclasses.replace(groups[last], cell=value)
            else:
                waiting_cell = value
        elif role == "relation":
            close()
            waiting_relation = (last, value) if last is not None else None
        elif role in ("background", "time", "weather"):
            backdrop[role] = value
            close()
        elif role in ("separator", "is"):
            close()
        elif role == "unknown":
            unknown.append(words)
    close()
    singles = {k for k, g in enumerate(groups) if g.count == 1}
    spec = SceneSpec(
        tuple(groups),
        backdrop.get("background"),
        backdrop.get("time"),
        backdrop.get("weather"),
        tuple(r for r in relations if r.subject in singles and r.object in singles),
    )
    return ParsedPrompt(spec, tuple(unknown))
