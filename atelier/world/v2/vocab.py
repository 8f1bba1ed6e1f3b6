"""The words of the second world: 33 kinds, colours, sizes, counts, places, times of day, weather and relations.

As in the first world (atelier/world/vocab.py), a scene is described by *names* and this module maps each name to
the words that may say it, first the plain canonical wording, then synonyms. What is new is number: a scene may
hold two to four objects of one kind ("three yellow stars", "trois étoiles jaunes"), so every noun has a plural
and every French adjective four forms, masculine and feminine, singular and plural:

    vert, verte, verts, vertes      blanc, blanche, blancs, blanches      gris, grise, gris, grises
    rouge, rouge, rouges, rouges    marron and orange never change        "de taille moyenne" never changes

Some French nouns have plurals of their own (bateau -> bateaux, cheval -> chevaux, arc-en-ciel -> arcs-en-ciel),
and some English ones (fish -> fish, butterfly -> butterflies, child -> children, person -> people): each noun
spells its plural out.

The order of every tuple is fixed: the classifier's labels and the held-out splits index into it. The first
world's 14 kinds come first, in their order, so a v2 classifier head can start from a v1 one.
"""

from __future__ import annotations

from dataclasses import dataclass

# The grid and the intros do not change: re-exported from the first world.
from atelier.world.vocab import CELL_WORDS as CELL_WORDS
from atelier.world.vocab import CELLS as CELLS
from atelier.world.vocab import INTRO_WORDS as INTRO_WORDS
from atelier.world.vocab import Words as Words

# --------------------------------------------------------------------------------------------------------------
# Word types


@dataclass(frozen=True)
class Noun:
    """A noun with its plural; in French also its gender ("m" or "f"), which picks the article and adjective forms.

    English nouns have gender "" (English adjectives do not agree).
    """

    word: str
    plural: str
    gender: str = ""

    def form(self, plural: bool) -> str:
        return self.plural if plural else self.word


@dataclass(frozen=True)
class Adjective:
    """A French adjective's four forms and whether it stands before the noun (petit, grand, gros do)."""

    masculine: str
    feminine: str
    masculine_plural: str
    feminine_plural: str
    before_noun: bool = False

    def agree(self, gender: str, plural: bool) -> str:
        if plural:
            return self.feminine_plural if gender == "f" else self.masculine_plural
        return self.feminine if gender == "f" else self.masculine


@dataclass(frozen=True)
class NounWords:
    """The nouns for one kind in each language; the first is the plain, canonical one."""

    en: tuple[Noun, ...]
    fr: tuple[Noun, ...]


@dataclass(frozen=True)
class AdjectiveWords:
    """The English words and French adjectives for a colour, a size or a distractor; the first is canonical."""

    en: tuple[str, ...]
    fr: tuple[Adjective, ...]


def _en(word: str, plural: str | None = None) -> Noun:
    return Noun(word, plural if plural is not None else word + "s")


def _fr(word: str, gender: str, plural: str | None = None) -> Noun:
    return Noun(word, plural if plural is not None else word + "s", gender)


def _adj(masculine: str, feminine: str | None = None, *, plural: str | None = None, before_noun: bool = False):
    """Forms from the masculine: the feminine is the same unless given (rouge, rose), plurals add s (the
    masculine plural keeps a final s or x: gris, joyeux)."""
    feminine = feminine if feminine is not None else masculine
    masculine_plural = (
        plural if plural is not None else (masculine if masculine.endswith(("s", "x")) else masculine + "s")
    )
    return Adjective(masculine, feminine, masculine_plural, feminine + "s", before_noun)


def _invariable(word: str, before_noun: bool = False) -> Adjective:
    return Adjective(word, word, word, word, before_noun)


# --------------------------------------------------------------------------------------------------------------
# Object kinds. The first 14 are the first world's (same words, plurals added); then animals, people, vehicles,
# nature and things.

KIND_WORDS: dict[str, NounWords] = {
    "circle": NounWords(
        (_en("circle"), _en("disc"), _en("round shape")), (_fr("cercle", "m"), _fr("disque", "m"), _fr("rond", "m"))
    ),
    "square": NounWords((_en("square"),), (_fr("carré", "m"),)),
    "triangle": NounWords((_en("triangle"),), (_fr("triangle", "m"),)),
    "star": NounWords((_en("star"),), (_fr("étoile", "f"),)),
    "heart": NounWords((_en("heart"),), (_fr("cœur", "m"), _fr("coeur", "m"))),
    "house": NounWords((_en("house"),), (_fr("maison", "f"),)),
    "tree": NounWords((_en("tree"),), (_fr("arbre", "m"),)),
    "sun": NounWords((_en("sun"),), (_fr("soleil", "m"),)),
    "moon": NounWords(
        (_en("moon"), _en("crescent moon"), _en("crescent")),
        (_fr("lune", "f"), _fr("croissant de lune", "m", "croissants de lune")),
    ),
    "flower": NounWords((_en("flower"),), (_fr("fleur", "f"),)),
    "fish": NounWords((_en("fish", "fish"),), (_fr("poisson", "m"),)),
    "boat": NounWords(
        (_en("boat"), _en("sailboat"), _en("sailing boat")), (_fr("bateau", "m", "bateaux"), _fr("voilier", "m"))
    ),
    "car": NounWords((_en("car"),), (_fr("voiture", "f"), _fr("auto", "f"))),
    "cloud": NounWords((_en("cloud"),), (_fr("nuage", "m"),)),
    # animals
    "cat": NounWords((_en("cat"), _en("kitten")), (_fr("chat", "m"), _fr("chaton", "m"))),
    "dog": NounWords((_en("dog"), _en("puppy", "puppies")), (_fr("chien", "m"), _fr("chiot", "m"))),
    "bird": NounWords((_en("bird"),), (_fr("oiseau", "m", "oiseaux"),)),
    "rabbit": NounWords((_en("rabbit"), _en("bunny", "bunnies")), (_fr("lapin", "m"),)),
    "horse": NounWords((_en("horse"), _en("pony", "ponies")), (_fr("cheval", "m", "chevaux"), _fr("poney", "m"))),
    "butterfly": NounWords((_en("butterfly", "butterflies"),), (_fr("papillon", "m"),)),
    "turtle": NounWords((_en("turtle"), _en("tortoise")), (_fr("tortue", "f"),)),
    # people
    "person": NounWords((_en("person", "people"), _en("grown-up")), (_fr("personne", "f"), _fr("adulte", "m"))),
    "child": NounWords((_en("child", "children"), _en("kid")), (_fr("enfant", "m"), _fr("gamin", "m"))),
    # vehicles
    "plane": NounWords((_en("plane"), _en("airplane"), _en("aeroplane")), (_fr("avion", "m"),)),
    "train": NounWords((_en("train"), _en("locomotive")), (_fr("train", "m"), _fr("locomotive", "f"))),
    "bicycle": NounWords((_en("bicycle"), _en("bike")), (_fr("vélo", "m"), _fr("bicyclette", "f"))),
    "rocket": NounWords((_en("rocket"), _en("spaceship")), (_fr("fusée", "f"),)),
    # nature and things
    "mountain": NounWords((_en("mountain"),), (_fr("montagne", "f"),)),
    "rainbow": NounWords((_en("rainbow"),), (_fr("arc-en-ciel", "m", "arcs-en-ciel"),)),
    "umbrella": NounWords((_en("umbrella"),), (_fr("parapluie", "m"),)),
    "balloon": NounWords(
        (_en("balloon"),), (_fr("ballon", "m"), _fr("ballon de baudruche", "m", "ballons de baudruche"))
    ),
    "apple": NounWords((_en("apple"),), (_fr("pomme", "f"),)),
    "mushroom": NounWords((_en("mushroom"),), (_fr("champignon", "m"),)),
}
KINDS: tuple[str, ...] = tuple(KIND_WORDS)
NEW_KINDS: tuple[str, ...] = KINDS[14:]

# A rainbow has colours of its own: its colour is never drawn from the palette nor stated ("a red rainbow" would
# name something the world cannot draw); its objects carry colour None.
SELF_COLOURED_KINDS: frozenset[str] = frozenset({"rainbow"})

# --------------------------------------------------------------------------------------------------------------
# Colours: the first world's 11, with their plural forms.

COLOUR_WORDS: dict[str, AdjectiveWords] = {
    "red": AdjectiveWords(("red",), (_adj("rouge"),)),
    "orange": AdjectiveWords(("orange",), (_invariable("orange"),)),
    "yellow": AdjectiveWords(("yellow",), (_adj("jaune"),)),
    "green": AdjectiveWords(("green",), (_adj("vert", "verte"),)),
    "blue": AdjectiveWords(("blue",), (_adj("bleu", "bleue"),)),
    "purple": AdjectiveWords(("purple", "violet"), (_adj("violet", "violette"),)),
    "pink": AdjectiveWords(("pink",), (_adj("rose"),)),
    "brown": AdjectiveWords(("brown",), (_invariable("marron"),)),
    "black": AdjectiveWords(("black",), (_adj("noir", "noire"),)),
    "white": AdjectiveWords(("white",), (_adj("blanc", "blanche"),)),
    "grey": AdjectiveWords(("grey", "gray"), (_adj("gris", "grise"),)),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Sizes (as in the first world: "de taille moyenne" after the colour, petit/grand/gros before the noun).

SIZE_WORDS: dict[str, AdjectiveWords] = {
    "small": AdjectiveWords(("small", "little"), (_adj("petit", "petite", before_noun=True),)),
    "medium": AdjectiveWords(("medium", "medium-sized"), (_invariable("de taille moyenne"),)),
    "big": AdjectiveWords(
        ("big", "large"),
        (_adj("grand", "grande", before_noun=True), _adj("gros", "grosse", plural="gros", before_noun=True)),
    ),
}
SIZES: tuple[str, ...] = tuple(SIZE_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Counts. One object takes the article (a, an, un, une; "one" at times); two to four take a number, spelt or in
# digits. "some" / "des" / "plusieurs" say "more than one" without a number: the spec then has count None.

MAX_COUNT = 4
COUNT_WORDS: dict[int, Words] = {
    1: Words(("a", "one"), ("un",)),  # French "un" becomes "une" before a feminine noun (captions.py)
    2: Words(("two", "2"), ("deux", "2")),
    3: Words(("three", "3"), ("trois", "3")),
    4: Words(("four", "4"), ("quatre", "4")),
}
SOME_WORDS = Words(("some", "several"), ("des", "plusieurs"))

# --------------------------------------------------------------------------------------------------------------
# Places. White, black and grey are plain backdrops; the others are places under a sky or ground seen from above,
# drawn by time of day and weather. Each phrase completes "a red cat ...".

BACKGROUND_WORDS: dict[str, Words] = {
    "white": Words(("on a white background", "on white"), ("sur fond blanc", "sur un fond blanc")),
    "black": Words(("on a black background", "on black"), ("sur fond noir", "sur un fond noir")),
    "grey": Words(("on a grey background", "on a gray background"), ("sur fond gris", "sur un fond gris")),
    "sky": Words(("in the sky", "up in the sky"), ("dans le ciel", "en plein ciel")),
    "grass": Words(
        ("on the grass", "on green grass", "in a meadow"), ("sur l'herbe", "sur l'herbe verte", "dans un pré")
    ),
    "sea": Words(("on the sea", "on the water"), ("sur la mer", "sur l'eau")),
    "sand": Words(("on the sand", "in the desert"), ("sur le sable", "dans le désert")),
    "snow": Words(("in the snow", "on snowy ground"), ("dans la neige", "sur la neige")),
    "forest": Words(("in a forest", "in the woods"), ("dans une forêt", "dans les bois")),
    "city": Words(("in the city", "in a town", "in the street"), ("en ville", "dans la ville", "dans la rue")),
    "beach": Words(("on the beach", "at the seaside"), ("sur la plage", "au bord de la mer")),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_WORDS)
PLAIN_BACKGROUNDS: frozenset[str] = frozenset({"white", "black", "grey"})  # no sky, no time of day, no weather

# --------------------------------------------------------------------------------------------------------------
# Time of day and weather, for every background but the plain ones. Day and clear skies are the usual case and
# are said less often than the others (captions.py).

TIME_WORDS: dict[str, Words] = {
    "day": Words(("in the daytime", "by day"), ("de jour", "en plein jour")),
    "sunset": Words(("at sunset", "at dusk"), ("au coucher du soleil", "au crépuscule")),
    "night": Words(("at night", "on a starry night"), ("la nuit", "par une nuit étoilée")),
}
TIMES: tuple[str, ...] = tuple(TIME_WORDS)

WEATHER_WORDS: dict[str, Words] = {
    "clear": Words(("under a clear sky",), ("sous un ciel dégagé",)),
    "rain": Words(("in the rain", "while it is raining"), ("sous la pluie", "pendant qu'il pleut")),
    "snowfall": Words(("in falling snow", "while it is snowing"), ("sous la neige qui tombe", "pendant qu'il neige")),
}
WEATHERS: tuple[str, ...] = tuple(WEATHER_WORDS)

# --------------------------------------------------------------------------------------------------------------
# Relations "A <relation> B" between two single objects. The first world's five, where "près de" moves from
# next_to to the new "near"; then near (any of the 8 neighbouring cells) and far_from (two cells apart).

RELATION_WORDS: dict[str, Words] = {
    "left_of": Words(("to the left of", "left of"), ("à gauche de",)),
    "right_of": Words(("to the right of", "right of"), ("à droite de",)),
    "above": Words(("above", "over"), ("au-dessus de",)),
    "below": Words(("below", "under", "beneath"), ("au-dessous de", "sous", "en dessous de")),
    "next_to": Words(("next to", "beside"), ("à côté de",)),
    "near": Words(("near", "close to"), ("près de", "proche de")),
    "far_from": Words(("far from", "far away from"), ("loin de",)),
}
RELATIONS: tuple[str, ...] = tuple(RELATION_WORDS)
INVERSE_RELATION: dict[str, str] = {
    "left_of": "right_of",
    "right_of": "left_of",
    "above": "below",
    "below": "above",
    "next_to": "next_to",
    "near": "near",
    "far_from": "far_from",
}

# --------------------------------------------------------------------------------------------------------------
# Sentence frames. "there is" / "there are", "is" / "are" follow the number of what comes next.

THERE_IS_WORDS = Words(("there is", "there are"), ("il y a",))
IS_WORDS = Words(("is", "are"), ("est", "sont"))
AND_WORDS = Words(("and", "with"), ("et", "avec"))

# --------------------------------------------------------------------------------------------------------------
# Words the world does not know. A learner types "un chat astronaute": the model should draw the cat it knows and
# let the rest go. A few training captions carry one of the TRAIN words (stating nothing, so their spec is
# unchanged) to teach the text encoder that such words name nothing to draw; the HELD_OUT words never appear in
# training and measure whether that lesson carries over. French ones agree like any adjective (after the noun);
# English ones are opinion words, which stand before size and colour (a happy big red cat).

DISTRACTOR_WORDS: dict[str, AdjectiveWords] = {
    "train": AdjectiveWords(
        ("happy", "funny", "magic", "sleepy", "famous", "friendly", "shiny", "cheerful"),
        (
            _adj("joyeux", "joyeuse", plural="joyeux"),
            _adj("rigolo", "rigolote"),
            _adj("magique"),
            _adj("endormi", "endormie"),
            _adj("célèbre"),
            _adj("gentil", "gentille"),
            _adj("brillant", "brillante"),
            _adj("gai", "gaie"),
        ),
    ),
    "held_out": AdjectiveWords(
        ("astronaut", "pirate", "robot", "brave", "dancing"),
        (
            _adj("astronaute"),
            _adj("pirate"),
            _adj("robot"),
            _adj("courageux", "courageuse", plural="courageux"),
            _adj("dansant", "dansante"),
        ),
    ),
}
