"""Held-out (kind, colour) pairs of the second world: never in training, asked for to measure composition.

The first world's 15 pairs are kept as they are (a retrained model is then compared on the same pairs), and one
pair per new coloured kind is added, 18 more: 33 of the 352 coloured pairs (9.4%). No new kind loses more than
one pair and no colour more than two among the new ones, so every word is still seen with most colours. The
rainbow has colours of its own (vocab.SELF_COLOURED_KINDS): it has no pair to hold out.
"""

from __future__ import annotations

from functools import cache

from atelier.world.splits import HELD_OUT_PAIRS as FIRST_WORLD_HELD_OUT
from atelier.world.v2.vocab import COLOURS, KINDS, SELF_COLOURED_KINDS

NEW_HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("cat", "blue"),
        ("dog", "pink"),
        ("bird", "brown"),
        ("rabbit", "green"),
        ("horse", "purple"),
        ("butterfly", "grey"),
        ("turtle", "red"),
        ("person", "yellow"),
        ("child", "orange"),
        ("plane", "black"),
        ("train", "white"),
        ("bicycle", "yellow"),
        ("rocket", "green"),
        ("mountain", "pink"),
        ("umbrella", "brown"),
        ("balloon", "grey"),
        ("apple", "blue"),
        ("mushroom", "purple"),
    }
)
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = FIRST_WORLD_HELD_OUT | NEW_HELD_OUT_PAIRS

ALL_PAIRS: tuple[tuple[str, str | None], ...] = tuple(
    (kind, None) if kind in SELF_COLOURED_KINDS else (kind, colour)
    for kind in KINDS
    for colour in ((None,) if kind in SELF_COLOURED_KINDS else COLOURS)
)
TRAIN_PAIRS: tuple[tuple[str, str | None], ...] = tuple(p for p in ALL_PAIRS if p not in HELD_OUT_PAIRS)


def is_held_out(kind: str, colour: str | None) -> bool:
    """True when the (kind, colour) pair never appears in training scenes."""
    return (kind, colour) in HELD_OUT_PAIRS


@cache
def pairs(split: str) -> tuple[tuple[str, str | None], ...]:
    """The pairs a scene of this split may use: "train", "held_out" or "all"."""
    return {"train": TRAIN_PAIRS, "held_out": tuple(sorted(HELD_OUT_PAIRS)), "all": ALL_PAIRS}[split]
