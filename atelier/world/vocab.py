"""The words of the world: every attribute a scene can have, with its English and French vocabulary.

A scene is described by *names* (`"circle"`, `"red"`, `"big"`, `(0, 2)`, `"night"`); this module maps each name to
the words that may describe it. Synonyms give the text encoder several ways to say one thing, and French words
carry what agreement needs: the gender of each noun, the masculine and feminine form of each adjective, and
whether the adjective goes before the noun (`un grand cercle`) or after it (`un cercle rouge`).

The order of every tuple below is fixed: training data, held-out splits and evaluation all index into it.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------------------------------------------
# Word types


@dataclass(frozen=True)
class FrenchNoun:
    """A French noun and its grammatical gender ("m" or "f"), which decides the article and the adjective forms."""

    word: str
    gender: str


@dataclass(frozen=True)
class FrenchAdjective:
    """A French adjective: masculine and feminine forms, and whether it stands before the noun.

    Most adjectives, colours included, follow the noun (`une maison verte`); a few short common ones such as
    grand and petit come before it (`une petite maison`). Some colours never change (`une fleur orange`,
    `une voiture marron`): their two forms are equal.
    """

    masculine: str
    feminine: str
    before_noun: bool = False

    def agree(self, gender: str) -> str:
        return self.feminine if gender == "f" else self.masculine


@dataclass(frozen=True)
class Words:
    """The ways to say one attribute in each language; the first entry is the plain, canonical wording."""

    en: tuple[str, ...]
    fr: tuple


def _adj(masculine: str, feminine: str | None = None, before_noun: bool = False) -> FrenchAdjective:
    return FrenchAdjective(masculine, feminine if feminine is not None else masculine, before_noun)


# --------------------------------------------------------------------------------------------------------------
# Object kinds: 4 geometric shapes and 10 pictograms. `Words.fr` holds FrenchNoun entries; a synonym may have
# another gender than the canonical word (une voiture, une auto; un bateau, un voilier).

KIND_WORDS: dict[str, Words] = {
    "circle": Words(
        ("circle", "disc", "round shape"),
        (FrenchNoun("cercle", "m"), FrenchNoun("disque", "m"), FrenchNoun("rond", "m")),
    ),
    "square": Words(("square",), (FrenchNoun("carré", "m"),)),
    "triangle": Words(("triangle",), (FrenchNoun("triangle", "m"),)),
    "star": Words(("star",), (FrenchNoun("étoile", "f"),)),
    "heart": Words(("heart",), (FrenchNoun("cœur", "m"), FrenchNoun("coeur", "m"))),
    "house": Words(("house",), (FrenchNoun("maison", "f"),)),
    "tree": Words(("tree",), (FrenchNoun("arbre", "m"),)),
    "sun": Words(("sun",), (FrenchNoun("soleil", "m"),)),
    "moon": Words(
        ("moon", "crescent moon", "crescent"), (FrenchNoun("lune", "f"), FrenchNoun("croissant de lune", "m"))
    ),
    "flower": Words(("flower",), (FrenchNoun("fleur", "f"),)),
    "fish": Words(("fish",), (FrenchNoun("poisson", "m"),)),
    "boat": Words(("boat", "sailboat", "sailing boat"), (FrenchNoun("bateau", "m"), FrenchNoun("voilier", "m"))),
    "car": Words(("car",), (FrenchNoun("voiture", "f"), FrenchNoun("auto", "f"))),
    "cloud": Words(("cloud",), (FrenchNoun("nuage", "m"),)),
}
KINDS: tuple[str, ...] = tuple(KIND_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Colours. The RGB values live with the renderer (scene.py); here only the words.

COLOUR_WORDS: dict[str, Words] = {
    "red": Words(("red",), (_adj("rouge"),)),
    "orange": Words(("orange",), (_adj("orange"),)),
    "yellow": Words(("yellow",), (_adj("jaune"),)),
    "green": Words(("green",), (_adj("vert", "verte"),)),
    "blue": Words(("blue",), (_adj("bleu", "bleue"),)),
    "purple": Words(("purple", "violet"), (_adj("violet", "violette"),)),
    "pink": Words(("pink",), (_adj("rose"),)),
    "brown": Words(("brown",), (_adj("marron"),)),
    "black": Words(("black",), (_adj("noir", "noire"),)),
    "white": Words(("white",), (_adj("blanc", "blanche"),)),
    "grey": Words(("grey", "gray"), (_adj("gris", "grise"),)),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Sizes. In French "moyen" reads oddly next to a colour, so the medium size is the invariant phrase
# "de taille moyenne", placed after the colour: un cercle rouge de taille moyenne.

SIZE_WORDS: dict[str, Words] = {
    "small": Words(("small", "little"), (_adj("petit", "petite", before_noun=True),)),
    "medium": Words(("medium", "medium-sized"), (_adj("de taille moyenne"),)),
    "big": Words(
        ("big", "large"), (_adj("grand", "grande", before_noun=True), _adj("gros", "grosse", before_noun=True))
    ),
}
SIZES: tuple[str, ...] = tuple(SIZE_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Positions: the cells of a 3x3 grid, (row, col) with row 0 at the top and col 0 at the left.

CELL_WORDS: dict[tuple[int, int], Words] = {
    (0, 0): Words(("in the top left corner", "at the top left"), ("en haut à gauche", "dans le coin en haut à gauche")),
    (0, 1): Words(("at the top", "at the top center"), ("en haut", "en haut au centre")),
    (0, 2): Words(
        ("in the top right corner", "at the top right"), ("en haut à droite", "dans le coin en haut à droite")
    ),
    (1, 0): Words(("on the left", "at the left"), ("à gauche", "sur la gauche")),
    (1, 1): Words(("in the center", "in the middle"), ("au centre", "au milieu")),
    (1, 2): Words(("on the right", "at the right"), ("à droite", "sur la droite")),
    (2, 0): Words(
        ("in the bottom left corner", "at the bottom left"), ("en bas à gauche", "dans le coin en bas à gauche")
    ),
    (2, 1): Words(("at the bottom", "at the bottom center"), ("en bas", "en bas au centre")),
    (2, 2): Words(
        ("in the bottom right corner", "at the bottom right"), ("en bas à droite", "dans le coin en bas à droite")
    ),
}
CELLS: tuple[tuple[int, int], ...] = tuple(CELL_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Backgrounds: 3 plain colours and 7 textured scenes. Each phrase completes "a red circle ...".

BACKGROUND_WORDS: dict[str, Words] = {
    "white": Words(("on a white background", "on white"), ("sur fond blanc", "sur un fond blanc")),
    "black": Words(("on a black background", "on black"), ("sur fond noir", "sur un fond noir")),
    "grey": Words(("on a grey background", "on a gray background"), ("sur fond gris", "sur un fond gris")),
    "day_sky": Words(("in a blue sky", "in the daytime sky"), ("dans un ciel bleu", "dans le ciel de jour")),
    "sunset": Words(("at sunset", "on a sunset sky"), ("au coucher du soleil", "sur un ciel de coucher de soleil")),
    "night": Words(
        ("on a night sky with stars", "in a starry night sky", "at night"),
        ("sur un ciel de nuit étoilé", "dans un ciel étoilé", "la nuit"),
    ),
    "grass": Words(
        ("on the grass", "on green grass", "in a meadow"), ("sur l'herbe", "sur l'herbe verte", "dans un pré")
    ),
    "sea": Words(("on the sea", "on the water"), ("sur la mer", "sur l'eau")),
    "sand": Words(("on the sand", "on a sandy beach"), ("sur le sable", "sur une plage de sable")),
    "snow": Words(("in the snow", "on snow"), ("dans la neige", "sur la neige")),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Spatial relations "A <relation> B". French phrases ending in "de" are contracted with the article that follows
# (au-dessus d'une maison, à gauche du cercle) by `captions.french_elision`.

RELATION_WORDS: dict[str, Words] = {
    "left_of": Words(("to the left of", "left of"), ("à gauche de",)),
    "right_of": Words(("to the right of", "right of"), ("à droite de",)),
    "above": Words(("above", "over"), ("au-dessus de",)),
    "below": Words(("below", "under", "beneath"), ("au-dessous de", "sous", "en dessous de")),
    "next_to": Words(("next to", "beside"), ("à côté de", "près de")),
}
RELATIONS: tuple[str, ...] = tuple(RELATION_WORDS)

# The inverse of each relation: "A above B" says the same as "B below A".
INVERSE_RELATION: dict[str, str] = {
    "left_of": "right_of",
    "right_of": "left_of",
    "above": "below",
    "below": "above",
    "next_to": "next_to",
}

# --------------------------------------------------------------------------------------------------------------
# Sentence frames around a description.

INTRO_WORDS = Words(
    ("a picture of", "an image of", "a drawing of"), ("une image de", "un dessin de", "une illustration de")
)
THERE_IS_WORDS = Words(("there is",), ("il y a",))
AND_WORDS = Words(("and",), ("et",))
IS_WORDS = Words(("is",), ("est",))
