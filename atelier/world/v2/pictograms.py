"""How each kind of the second world is drawn, and in which poses.

A pictogram is a list of parts in the unit box [-1, 1]^2 (y points down), drawn in order, each filled with one
shade (see `shades`): the first world's format (atelier/world/scene.py), whose 14 pictograms are reused as they
are. Every part is turned into a polygon once (`polygons`), so that a pose is one 2x2 matrix applied to all its
points: a mirror image (a cat facing left or right), a stretch (a wider or taller house) and a small tilt. Some
kinds also have a second drawing (a bird perched or flying, a person with arms down or waving).

After the pose, the points are scaled back into the unit box when they leave it, so an object never grows past
its size: the spacing rules of scene.py keep holding.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from atelier.world.scene import PICTOGRAMS as FIRST_WORLD_PICTOGRAMS
from atelier.world.scene import _shades as first_world_shades

# --------------------------------------------------------------------------------------------------------------
# Part helpers: everything below is a ("poly" | "ellipse" | "rect", geometry, shade) part.


def _bar(p0: tuple[float, float], p1: tuple[float, float], width: float, shade: str) -> tuple:
    """A straight stroke of the given width from p0 to p1, as a quadrilateral."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0)
    nx, ny = -(y1 - y0) / length * width / 2, (x1 - x0) / length * width / 2  # half-width normal
    return ("poly", [(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)], shade)


def _stroke(points: list[tuple[float, float]], width: float, shade: str) -> list[tuple]:
    """A polyline of bars with round joints (a tail, a string, an antenna)."""
    parts = [_bar(a, b, width, shade) for a, b in itertools.pairwise(points)]
    return parts + [("ellipse", (x, y, width / 2, width / 2), shade) for x, y in points[1:-1]]


def _tilted_ellipse(cx: float, cy: float, rx: float, ry: float, angle: float, shade: str, n: int = 28) -> tuple:
    cos, sin = math.cos(angle), math.sin(angle)
    points = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x, y = rx * math.cos(t), ry * math.sin(t)
        points.append((cx + x * cos - y * sin, cy + x * sin + y * cos))
    return ("poly", points, shade)


def _arc_band(cx: float, cy: float, r0: float, r1: float, shade: str, a0: float = math.pi, a1: float = 2 * math.pi):
    """The ring between radii r0 < r1 from angle a0 to a1 (angles from +x, y down: pi..2pi is the upper half)."""
    outer = [(cx + r1 * math.cos(a), cy + r1 * math.sin(a)) for a in np.linspace(a0, a1, 24)]
    inner = [(cx + r0 * math.cos(a), cy + r0 * math.sin(a)) for a in np.linspace(a1, a0, 24)]
    return ("poly", outer + inner, shade)


def _dome(cx: float, cy: float, rx: float, ry: float, shade: str, scallops: int = 0) -> tuple:
    """The upper half of an ellipse; with scallops, its flat side is cut into that many upward arcs (an umbrella)."""
    top = [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(math.pi, 2 * math.pi, 28)]
    if not scallops:
        return ("poly", top, shade)
    edge, width = [], 2 * rx / scallops
    for k in range(scallops):  # from right to left
        x_right = cx + rx - k * width
        for t in np.linspace(0, 1, 8)[1:]:
            edge.append((x_right - t * width, cy - 0.14 * ry * math.sin(math.pi * t)))
    return ("poly", top + edge, shade)


def _mirror(parts: list[tuple]) -> list[tuple]:
    """The parts flipped left-right."""
    out = []
    for shape, geometry, shade in parts:
        if shape == "poly":
            out.append((shape, [(-x, y) for x, y in geometry], shade))
        elif shape == "ellipse":
            ex, ey, rx, ry = geometry
            out.append((shape, (-ex, ey, rx, ry), shade))
        else:
            x0, y0, x1, y1 = geometry
            out.append((shape, (-x1, y0, -x0, y1), shade))
    return out


def _both_sides(parts: list[tuple]) -> list[tuple]:
    return parts + _mirror(parts)


# --------------------------------------------------------------------------------------------------------------
# The new kinds. Shades: body (the object's colour), dark, light, accent (eyes, windows: contrasts with the body),
# and fixed colours: trunk, wheel, skin, beak, flame, leaf, stem, and the rainbow's six bands.

_CAT = [
    *_stroke([(0.4, 0.85), (0.85, 0.6), (0.9, 0.1), (0.75, -0.15)], 0.16, "body"),  # tail
    ("ellipse", (0.0, 0.42, 0.55, 0.55), "body"),
    ("ellipse", (0.0, -0.38, 0.46, 0.4), "body"),
    *_both_sides([("poly", [(-0.44, -0.5), (-0.38, -0.98), (-0.08, -0.72)], "body")]),  # ears
    *_both_sides([("ellipse", (-0.17, -0.42, 0.07, 0.1), "accent")]),  # eyes
    ("poly", [(-0.06, -0.27), (0.06, -0.27), (0.0, -0.2)], "accent"),  # nose
]

_DOG = [
    *_stroke([(0.55, -0.02), (0.78, -0.3), (0.88, -0.55)], 0.14, "body"),  # tail up
    *[("rect", (x, 0.15, x + 0.17, 0.78), "body") for x in (-0.5, -0.25, 0.2, 0.42)],  # legs
    ("ellipse", (0.02, 0.05, 0.62, 0.3), "body"),
    ("ellipse", (-0.6, -0.4, 0.3, 0.27), "body"),  # head
    ("ellipse", (-0.86, -0.3, 0.16, 0.12), "body"),  # snout
    ("ellipse", (-0.42, -0.3, 0.11, 0.24), "dark"),  # floppy ear
    ("ellipse", (-0.66, -0.48, 0.05, 0.05), "accent"),  # eye
    ("ellipse", (-1.0, -0.32, 0.06, 0.06), "accent"),  # nose
]

_BIRD_PERCHED = [
    ("poly", [(0.5, 0.0), (1.0, -0.22), (1.0, 0.22), (0.55, 0.32)], "body"),  # tail
    *_stroke([(-0.05, 0.45), (-0.1, 0.8)], 0.07, "beak"),
    *_stroke([(0.2, 0.45), (0.18, 0.8)], 0.07, "beak"),  # legs
    ("ellipse", (0.05, 0.1, 0.6, 0.42), "body"),
    ("ellipse", (-0.45, -0.38, 0.32, 0.3), "body"),  # head
    ("poly", [(-0.72, -0.46), (-1.0, -0.34), (-0.72, -0.24)], "beak"),
    _tilted_ellipse(0.15, 0.05, 0.42, 0.2, -0.35, "dark"),  # wing
    ("ellipse", (-0.5, -0.42, 0.06, 0.06), "accent"),  # eye
]

_BIRD_FLYING = [
    ("poly", [(-0.1, 0.05), (-0.55, -0.8), (-0.2, -0.75), (0.2, 0.0)], "dark"),  # far wing
    ("poly", [(0.6, 0.1), (1.0, -0.1), (1.0, 0.3)], "body"),  # tail
    ("ellipse", (0.1, 0.15, 0.6, 0.26), "body"),
    ("ellipse", (-0.55, 0.0, 0.26, 0.24), "body"),  # head
    ("poly", [(-0.78, -0.06), (-1.0, 0.04), (-0.78, 0.12)], "beak"),
    ("poly", [(-0.05, 0.1), (0.3, -0.95), (0.6, -0.85), (0.35, 0.1)], "body"),  # near wing, raised
    ("ellipse", (-0.6, -0.04, 0.05, 0.05), "accent"),
]

_RABBIT = [
    *_both_sides([_tilted_ellipse(-0.17, -0.62, 0.12, 0.38, -0.12, "body")]),  # long ears
    *_both_sides([_tilted_ellipse(-0.17, -0.6, 0.05, 0.26, -0.12, "light")]),
    ("ellipse", (0.52, 0.62, 0.18, 0.17), "light"),  # tail puff
    ("ellipse", (0.0, 0.48, 0.52, 0.48), "body"),
    ("ellipse", (0.0, -0.08, 0.34, 0.3), "body"),  # head
    *_both_sides([("ellipse", (-0.13, -0.12, 0.06, 0.07), "accent")]),
    ("ellipse", (0.0, 0.02, 0.05, 0.04), "accent"),
]

_HORSE = [
    *_stroke([(0.66, -0.22), (0.86, 0.05), (0.9, 0.45)], 0.16, "dark"),  # tail
    *[("rect", (x, 0.0, x + 0.12, 0.95), "body") for x in (-0.45, -0.28, 0.35, 0.52)],  # long legs
    *[("rect", (x, 0.85, x + 0.12, 0.95), "dark") for x in (-0.45, -0.28, 0.35, 0.52)],  # hooves
    ("ellipse", (0.1, -0.12, 0.62, 0.27), "body"),
    ("poly", [(-0.28, -0.28), (-0.6, -0.8), (-0.38, -0.9), (-0.05, -0.3)], "body"),  # neck
    _tilted_ellipse(-0.7, -0.72, 0.32, 0.14, 0.55, "body"),  # head, nose down
    ("poly", [(-0.5, -0.88), (-0.44, -1.0), (-0.38, -0.86)], "body"),  # ear
    *_stroke([(-0.42, -0.92), (-0.25, -0.6), (-0.08, -0.35)], 0.1, "dark"),  # mane
    ("ellipse", (-0.66, -0.8, 0.045, 0.045), "accent"),
]

_BUTTERFLY = [
    *_both_sides(_stroke([(-0.04, -0.5), (-0.2, -0.8), (-0.34, -0.95)], 0.05, "dark")),  # antennae
    *_both_sides([_tilted_ellipse(-0.48, -0.3, 0.48, 0.36, 0.5, "body")]),  # upper wings
    *_both_sides([_tilted_ellipse(-0.36, 0.42, 0.3, 0.3, -0.4, "light")]),  # lower wings
    *_both_sides([("ellipse", (-0.55, -0.34, 0.12, 0.12), "accent")]),  # spots
    ("ellipse", (0.0, 0.05, 0.09, 0.6), "dark"),  # body
]

_TURTLE = [
    *[("rect", (x, 0.15, x + 0.2, 0.55), "light") for x in (-0.55, 0.32)],  # legs
    ("ellipse", (-0.82, -0.02, 0.2, 0.17), "light"),  # head
    ("poly", [(0.68, 0.18), (0.98, 0.3), (0.68, 0.32)], "light"),  # tail
    ("rect", (-0.75, 0.08, 0.75, 0.28), "dark"),  # shell rim
    _dome(0.0, 0.18, 0.72, 0.8, "body"),  # shell
    *[("ellipse", (x, y, 0.14, 0.12), "dark") for x, y in ((-0.32, -0.05), (0.0, -0.32), (0.32, -0.05))],
    ("ellipse", (-0.88, -0.06, 0.04, 0.04), "accent"),
]

_PERSON = [
    ("rect", (-0.24, 0.22, -0.05, 0.98), "dark"),  # legs
    ("rect", (0.05, 0.22, 0.24, 0.98), "dark"),
    *_both_sides(_stroke([(-0.27, -0.38), (-0.5, 0.15)], 0.14, "body")),  # arms down
    *_both_sides([("ellipse", (-0.5, 0.18, 0.08, 0.08), "skin")]),
    ("poly", [(-0.3, -0.45), (0.3, -0.45), (0.36, 0.28), (-0.36, 0.28)], "body"),  # torso
    ("ellipse", (0.0, -0.7, 0.22, 0.24), "skin"),
    _dome(0.0, -0.7, 0.23, 0.27, "dark"),  # hair
]
_PERSON_WAVING = [
    *_PERSON[:2],
    *_stroke([(-0.27, -0.38), (-0.5, 0.15)], 0.14, "body"),
    ("ellipse", (-0.5, 0.18, 0.08, 0.08), "skin"),
    *_stroke([(0.27, -0.38), (0.55, -0.6), (0.62, -0.95)], 0.14, "body"),  # arm raised
    ("ellipse", (0.62, -0.95, 0.08, 0.08), "skin"),
    *_PERSON[-3:],
]

# A child: a bigger head on a shorter body in a dress, so it stands lower in its box than a grown-up.
_CHILD = [
    ("rect", (-0.2, 0.55, -0.06, 0.95), "skin"),  # legs
    ("rect", (0.06, 0.55, 0.2, 0.95), "skin"),
    *_both_sides(_stroke([(-0.18, -0.02), (-0.45, 0.35)], 0.12, "body")),
    *_both_sides([("ellipse", (-0.45, 0.37, 0.07, 0.07), "skin")]),
    ("poly", [(-0.18, -0.08), (0.18, -0.08), (0.45, 0.6), (-0.45, 0.6)], "body"),  # dress
    ("ellipse", (0.0, -0.38, 0.3, 0.31), "skin"),
    _dome(0.0, -0.38, 0.31, 0.34, "dark"),
    *_both_sides([("ellipse", (-0.11, -0.34, 0.045, 0.05), "dark")]),
]
_CHILD_WAVING = [
    *_CHILD[:2],
    *_stroke([(-0.18, -0.02), (-0.45, 0.35)], 0.12, "body"),
    ("ellipse", (-0.45, 0.37, 0.07, 0.07), "skin"),
    *_stroke([(0.18, -0.02), (0.45, -0.25), (0.5, -0.55)], 0.12, "body"),
    ("ellipse", (0.5, -0.57, 0.07, 0.07), "skin"),
    *_CHILD[-5:],
]

# The plane seen from above, nose up and to the right: the travel-sign silhouette.
_PLANE_UPRIGHT = [
    (
        "poly",
        [(-0.9, 0.2), (-0.1, -0.3), (0.1, -0.3), (0.9, 0.2), (0.9, 0.38), (0.1, 0.1), (-0.1, 0.1), (-0.9, 0.38)],
        "dark",
    ),
    ("poly", [(-0.38, 0.86), (-0.06, 0.62), (0.06, 0.62), (0.38, 0.86), (0.38, 0.98), (-0.38, 0.98)], "dark"),
    ("ellipse", (0.0, 0.0, 0.15, 0.98), "body"),  # fuselage
    ("ellipse", (0.0, -0.68, 0.07, 0.13), "light"),  # cockpit
]

_TRAIN = [
    ("rect", (-0.85, -0.2, 0.2, 0.4), "body"),  # boiler
    ("rect", (0.15, -0.62, 0.82, 0.4), "body"),  # cabin
    ("rect", (0.08, -0.74, 0.9, -0.6), "dark"),  # roof
    ("rect", (0.3, -0.5, 0.66, -0.15), "light"),  # window
    ("rect", (-0.68, -0.62, -0.44, -0.2), "dark"),  # chimney
    ("rect", (-0.74, -0.7, -0.38, -0.6), "dark"),
    ("poly", [(-0.85, 0.1), (-1.0, 0.55), (-0.7, 0.4)], "dark"),  # cow-catcher
    *[("ellipse", (x, 0.5, 0.19, 0.19), "wheel") for x in (-0.55, -0.08, 0.52)],
]

_BICYCLE_FRAME = [(-0.55, 0.35), (-0.05, 0.35), (-0.22, -0.22), (0.38, -0.26), (0.55, 0.35)]
_R, _B, _S, _H, _F = _BICYCLE_FRAME
_BICYCLE = [
    _arc_band(_R[0], _R[1], 0.31, 0.43, "wheel", 0.0, 2 * math.pi),
    _arc_band(_F[0], _F[1], 0.31, 0.43, "wheel", 0.0, 2 * math.pi),
    *[_bar(a, b, 0.13, "body") for a, b in ((_R, _B), (_R, _S), (_S, _B), (_S, _H), (_B, _H), (_H, _F))],
    ("rect", (-0.36, -0.34, -0.08, -0.24), "dark"),  # saddle
    *_stroke([(0.38, -0.26), (0.32, -0.5), (0.5, -0.55)], 0.1, "dark"),  # handlebar
]

_ROCKET = [
    ("poly", [(-0.26, 0.5), (0.0, 1.0), (0.26, 0.5)], "flame"),
    *_both_sides([("poly", [(-0.3, 0.05), (-0.62, 0.62), (-0.3, 0.5)], "dark")]),  # fins
    (
        "poly",
        [(0.0, -1.0), (0.22, -0.72), (0.32, -0.35), (0.32, 0.55), (-0.32, 0.55), (-0.32, -0.35), (-0.22, -0.72)],
        "body",
    ),
    ("ellipse", (0.0, -0.2, 0.17, 0.17), "dark"),
    ("ellipse", (0.0, -0.2, 0.11, 0.11), "light"),  # porthole
]

_MOUNTAIN = [
    ("poly", [(-0.1, 0.85), (0.45, -0.25), (1.0, 0.85)], "dark"),  # the peak behind
    ("poly", [(-1.0, 0.85), (-0.15, -0.85), (0.7, 0.85)], "body"),
    (
        "poly",
        [(-0.15, -0.85), (0.08, -0.38), (-0.03, -0.45), (-0.12, -0.36), (-0.25, -0.46), (-0.38, -0.38)],
        "snowcap",
    ),
]

_RAINBOW = [_arc_band(0.0, 0.42, 1.0 - 0.1 * (k + 1), 1.0 - 0.1 * k, f"band{k}") for k in range(6)]

_UMBRELLA = [
    *_stroke([(0.0, -0.1), (0.0, 0.72), (-0.06, 0.86), (-0.2, 0.88), (-0.28, 0.76)], 0.1, "dark"),  # shaft, hook
    _dome(0.0, -0.06, 0.96, 0.8, "body", scallops=4),
    *[_bar((0.0, -0.84), (x, -0.12), 0.05, "dark") for x in (-0.48, 0.0, 0.48)],  # ribs
    ("rect", (-0.04, -0.98, 0.04, -0.84), "dark"),  # tip
]

_BALLOON = [
    *_stroke([(0.0, 0.42), (0.1, 0.6), (-0.05, 0.8), (0.06, 1.0)], 0.05, "dark"),  # string
    ("poly", [(-0.08, 0.46), (0.0, 0.36), (0.08, 0.46)], "body"),  # knot
    ("ellipse", (0.0, -0.3, 0.52, 0.66), "body"),
    _tilted_ellipse(-0.22, -0.58, 0.09, 0.17, 0.4, "light"),  # highlight
]

_APPLE = [
    ("ellipse", (-0.27, 0.15, 0.56, 0.7), "body"),
    ("ellipse", (0.27, 0.15, 0.56, 0.7), "body"),
    *_stroke([(0.0, -0.45), (0.08, -0.88)], 0.1, "trunk"),
    _tilted_ellipse(0.3, -0.7, 0.26, 0.11, -0.5, "leaf"),
    _tilted_ellipse(-0.42, -0.1, 0.1, 0.2, 0.3, "light"),
]

_MUSHROOM = [
    ("poly", [(-0.28, -0.1), (0.28, -0.1), (0.33, 0.88), (-0.33, 0.88)], "stem"),
    _dome(0.0, -0.05, 0.96, 0.85, "body"),
    *[("ellipse", (x, y, r, r), "spot") for x, y, r in ((-0.5, -0.3, 0.14), (0.05, -0.6, 0.16), (0.5, -0.28, 0.12))],
]


# --------------------------------------------------------------------------------------------------------------
# Kinds, drawings and poses


@dataclass(frozen=True)
class KindStyle:
    """How a kind may vary: its drawings, whether it may face either way, and how much it may tilt (radians)."""

    drawings: tuple[list, ...]
    mirror: bool = True
    max_tilt: float = 0.12


_UPRIGHT = 0.05  # houses, people and trees lean only a little
STYLES: dict[str, KindStyle] = {
    "circle": KindStyle((FIRST_WORLD_PICTOGRAMS["circle"],), mirror=False, max_tilt=0.0),
    "square": KindStyle((FIRST_WORLD_PICTOGRAMS["square"],), mirror=False, max_tilt=0.12),
    "triangle": KindStyle((FIRST_WORLD_PICTOGRAMS["triangle"],), mirror=False, max_tilt=0.08),
    "star": KindStyle((FIRST_WORLD_PICTOGRAMS["star"],), mirror=False, max_tilt=0.2),
    "heart": KindStyle((FIRST_WORLD_PICTOGRAMS["heart"],), mirror=False, max_tilt=0.15),
    "house": KindStyle((FIRST_WORLD_PICTOGRAMS["house"],), max_tilt=0.0),
    "tree": KindStyle((FIRST_WORLD_PICTOGRAMS["tree"],), max_tilt=_UPRIGHT),
    "sun": KindStyle((FIRST_WORLD_PICTOGRAMS["sun"],), mirror=False, max_tilt=0.2),
    "moon": KindStyle((FIRST_WORLD_PICTOGRAMS["moon"],), max_tilt=0.2),
    "flower": KindStyle((FIRST_WORLD_PICTOGRAMS["flower"],), mirror=False, max_tilt=0.2),
    "fish": KindStyle((FIRST_WORLD_PICTOGRAMS["fish"],), max_tilt=0.15),
    "boat": KindStyle((FIRST_WORLD_PICTOGRAMS["boat"],), max_tilt=0.1),
    "car": KindStyle((FIRST_WORLD_PICTOGRAMS["car"],), max_tilt=0.0),
    "cloud": KindStyle((FIRST_WORLD_PICTOGRAMS["cloud"],), max_tilt=0.05),
    "cat": KindStyle((_CAT,), max_tilt=0.08),
    "dog": KindStyle((_DOG,), max_tilt=0.05),
    "bird": KindStyle((_BIRD_PERCHED, _BIRD_FLYING), max_tilt=0.12),
    "rabbit": KindStyle((_RABBIT,), max_tilt=0.1),
    "horse": KindStyle((_HORSE,), max_tilt=0.04),
    "butterfly": KindStyle((_BUTTERFLY,), mirror=False, max_tilt=0.25),
    "turtle": KindStyle((_TURTLE,), max_tilt=0.05),
    "person": KindStyle((_PERSON, _PERSON_WAVING), max_tilt=_UPRIGHT),
    "child": KindStyle((_CHILD, _CHILD_WAVING), max_tilt=_UPRIGHT),
    "plane": KindStyle((_PLANE_UPRIGHT,), max_tilt=0.0),  # its pose turns it a quarter to an eighth of a turn
    "train": KindStyle((_TRAIN,), max_tilt=0.0),
    "bicycle": KindStyle((_BICYCLE,), max_tilt=0.0),
    "rocket": KindStyle((_ROCKET,), max_tilt=0.3),
    "mountain": KindStyle((_MOUNTAIN,), max_tilt=0.0),
    "rainbow": KindStyle((_RAINBOW,), mirror=False, max_tilt=0.0),
    "umbrella": KindStyle((_UMBRELLA,), max_tilt=0.2),
    "balloon": KindStyle((_BALLOON,), max_tilt=0.15),
    "apple": KindStyle((_APPLE,), max_tilt=0.12),
    "mushroom": KindStyle((_MUSHROOM,), max_tilt=0.1),
}
_PLANE_HEADING = (0.6, 0.95)  # radians clockwise from nose-up: the plane flies up and to the right


@dataclass(frozen=True)
class Pose:
    """Which drawing of its kind an object uses, mirrored or not, tilted (radians) and stretched (x, y factors <= 1).

    Pose() is the kind's first drawing as drawn in the unit box.
    """

    drawing: int = 0
    mirror: bool = False
    tilt: float = 0.0
    stretch: tuple[float, float] = (1.0, 1.0)


def random_pose(kind: str, rng) -> Pose:
    """A pose for one object of `kind`, drawn from `rng` (a random.Random)."""
    style = STYLES[kind]
    drawing = rng.randrange(len(style.drawings))
    mirror = style.mirror and rng.random() < 0.5
    tilt = rng.uniform(-style.max_tilt, style.max_tilt)
    if kind == "plane":
        tilt = rng.uniform(*_PLANE_HEADING)
    stretch = (rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0))
    return Pose(drawing, mirror, round(tilt, 4), (round(stretch[0], 4), round(stretch[1], 4)))


def _polygon(shape: str, geometry) -> np.ndarray:
    if shape == "poly":
        return np.asarray(geometry, dtype=np.float64)
    if shape == "ellipse":
        ex, ey, rx, ry = geometry
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        return np.stack([ex + rx * np.cos(t), ey + ry * np.sin(t)], axis=1)
    x0, y0, x1, y1 = geometry
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


@cache
def polygons(kind: str, drawing: int) -> tuple[tuple[np.ndarray, str], ...]:
    """The drawing's parts as (points (P, 2) in the unit box, shade), in drawing order."""
    return tuple((_polygon(shape, geometry), shade) for shape, geometry, shade in STYLES[kind].drawings[drawing])


def posed_polygons(kind: str, pose: Pose) -> list[tuple[np.ndarray, str]]:
    """The parts in the given pose, scaled back inside the unit box if the pose pushed any point out of it."""
    cos, sin = math.cos(pose.tilt), math.sin(pose.tilt)
    # x' = R S M x: mirror, then stretch, then turn (y points down, so a positive tilt turns clockwise)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.diag(pose.stretch) @ np.diag([-1.0 if pose.mirror else 1.0, 1.0])
    parts = [(points @ matrix.T, shade) for points, shade in polygons(kind, pose.drawing)]
    reach = max(np.abs(points).max() for points, _ in parts)
    if reach > 1.0:
        parts = [(points / reach, shade) for points, shade in parts]
    return parts


RAINBOW_BANDS = ((225, 35, 35), (250, 140, 20), (250, 220, 40), (50, 170, 60), (40, 100, 220), (130, 60, 180))
FIXED_SHADES: dict[str, tuple[int, int, int]] = {
    "trunk": (105, 62, 28),
    "wheel": (35, 35, 40),
    "skin": (236, 188, 150),
    "beak": (245, 150, 30),
    "flame": (250, 120, 20),
    "leaf": (60, 150, 50),
    "stem": (240, 228, 200),
    "snowcap": (250, 250, 252),
    "spot": (250, 250, 245),
    **{f"band{k}": rgb for k, rgb in enumerate(RAINBOW_BANDS)},
}


def shades(rgb: tuple[int, int, int] | None) -> dict[str, tuple[int, int, int]]:
    """Every shade name -> RGB for an object of colour `rgb` (None: a self-coloured kind, only fixed shades)."""
    return {**(first_world_shades(rgb) if rgb is not None else {}), **FIXED_SHADES}
