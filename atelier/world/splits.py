"""Held-out (kind, colour) pairs: combinations the model never sees in training, to test compositional generalisation.

Every kind and every colour is seen in training, but 15 of the 154 (kind, colour) pairs (10%) never are. Asking the
trained model for "a green moon" then tells whether it learnt "green" and "moon" as separate ideas it can combine,
or only memorised the pictures it was shown. The list is written out, not drawn at random, so that it stays the
same whatever happens to the vocabulary's code; it is balanced so that no kind and no colour loses more than two
of its pairs.
"""

from __future__ import annotations

from atelier.world.vocab import COLOURS, KINDS

HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "green"),
        ("square", "pink"),
        ("square", "purple"),
        ("triangle", "brown"),
        ("star", "blue"),
        ("heart", "orange"),
        ("house", "yellow"),
        ("tree", "red"),
        ("sun", "purple"),
        ("moon", "green"),
        ("flower", "white"),
        ("fish", "black"),
        ("boat", "red"),
        ("car", "grey"),
        ("cloud", "pink"),
    }
)

ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((kind, colour) for kind in KINDS for colour in COLOURS)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(pair for pair in ALL_PAIRS if pair not in HELD_OUT_PAIRS)


def is_held_out(kind: str, colour: str) -> bool:
    """True when the (kind, colour) pair never appears in training scenes."""
    return (kind, colour) in HELD_OUT_PAIRS
