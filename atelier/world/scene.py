"""Scenes of the procedural world: what they contain, how they are sampled, and how they are drawn.

A `Scene` is a background and one to three objects, each a kind (circle, house, fish...), a colour, a size and a
cell of a 3x3 grid. `sample_scene(rng)` draws one at random; `render(scene)` turns it into pixels, the same pixels
every time. Scenes are infinite in number and cost well under a millisecond each, so the model can be trained on
fresh pictures instead of a fixed dataset.

Drawing is supersampled: objects are drawn at twice the asked size with PIL, then every 2x2 block of pixels is
averaged (`Image.reduce(2)`), which gives anti-aliased edges without any per-shape care.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw

from atelier.errors import InputError
from atelier.world.splits import ALL_PAIRS, HELD_OUT_PAIRS, TRAIN_PAIRS
from atelier.world.vocab import BACKGROUNDS, CELLS, COLOURS, KINDS, RELATIONS, SIZES

# --------------------------------------------------------------------------------------------------------------
# What a scene is


@dataclass(frozen=True)
class SceneObject:
    """One object: its kind, colour and size names, its grid cell (row, col) and a small jitter (dx, dy).

    Row 0 is the top row and col 0 the left column. The offset is a fraction of the image width, at most
    `MAX_JITTER` either way, so that objects of one cell are not all pixel-aligned.
    """

    kind: str
    colour: str
    size: str
    cell: tuple[int, int]
    offset: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Scene:
    """A background name, the objects (in distinct cells) and which texture variant of the background to draw."""

    objects: tuple[SceneObject, ...]
    background: str
    variant: int = 0


# --------------------------------------------------------------------------------------------------------------
# Geometry, as fractions of the image side. Cells are thirds of the image, but object centres sit a little inward
# (0.19 rather than 1/6) so that a big object in a corner cell is not cut by the border.

CELL_CENTRES = (0.19, 0.5, 0.81)
SIZE_FRACTION = {"small": 0.17, "medium": 0.25, "big": 0.34}  # width of the object's bounding box
MAX_JITTER = 0.015
# Two objects in neighbouring cells (centres 0.31 apart) must not touch: their half-widths plus both jitters
# plus a gap must fit in that distance. This allows small+big and medium+medium but not medium+big.
_GAP = 0.01
N_VARIANTS = 8  # texture variants per background (star fields, waves, grass blades)

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (250, 135, 0),
    "yellow": (250, 215, 30),
    "green": (35, 160, 50),
    "blue": (35, 85, 225),
    "purple": (135, 55, 185),
    "pink": (250, 125, 195),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (248, 248, 248),
    "grey": (130, 130, 130),
}


def objects_fit_together(a: SceneObject, b: SceneObject) -> bool:
    """False when `a` and `b` sit in neighbouring cells and are too big to stay apart."""
    (ra, ca), (rb, cb) = a.cell, b.cell
    spacing = CELL_CENTRES[1] - CELL_CENTRES[0]
    if max(abs(ra - rb), abs(ca - cb)) != 1:
        return (ra, ca) != (rb, cb)
    half = (SIZE_FRACTION[a.size] + SIZE_FRACTION[b.size]) / 2
    return half + 2 * MAX_JITTER + _GAP <= spacing


def relations_between(a: SceneObject, b: SceneObject) -> tuple[str, ...]:
    """The relations "a <relation> b" that a caption may state, from the two cells.

    Only the dominant direction counts: a cell two rows up and one column left is "above", not "left of"; an
    exact diagonal is both. "next_to" is for horizontal neighbours only.
    """
    (ra, ca), (rb, cb) = a.cell, b.cell
    dr, dc = rb - ra, cb - ca  # > 0: b is below / to the right of a
    found = []
    if abs(dc) >= abs(dr) and dc != 0:
        found.append("left_of" if dc > 0 else "right_of")
    if abs(dr) >= abs(dc) and dr != 0:
        found.append("above" if dr > 0 else "below")
    if dr == 0 and abs(dc) == 1:
        found.append("next_to")
    return tuple(found)


# --------------------------------------------------------------------------------------------------------------
# Which colours can be seen on which background. A blue fish on the sea or a white star in the snow would be
# invisible, so the sampler never makes them. A colour is refused when it lies within `_MIN_CONTRAST` (RGB
# distance) of one of the background's main colours.

_BACKGROUND_MAIN_COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "white": ((250, 250, 250),),
    "black": ((15, 15, 15),),
    "grey": ((128, 128, 128),),
    "day_sky": ((85, 155, 230), (185, 220, 250)),
    "sunset": ((70, 45, 115), (225, 90, 95), (255, 175, 80)),
    "night": ((10, 14, 40), (30, 38, 85)),
    "grass": ((75, 155, 60), (50, 120, 45)),
    "sea": ((30, 95, 165), (70, 140, 200)),
    "sand": ((232, 205, 145), (210, 180, 120)),
    "snow": ((200, 212, 232), (240, 244, 252), (255, 255, 255)),
}
_MIN_CONTRAST = 90.0


def colour_fits_background(colour: str, background: str) -> bool:
    """True when an object of this colour stands out clearly against this background."""
    rgb = COLOUR_RGB[colour]
    return all(math.dist(rgb, main) >= _MIN_CONTRAST for main in _BACKGROUND_MAIN_COLOURS[background])


@cache
def _pairs_for(background: str, split: str) -> tuple[tuple[str, str], ...]:
    pairs = {"train": TRAIN_PAIRS, "held_out": tuple(sorted(HELD_OUT_PAIRS)), "all": ALL_PAIRS}[split]
    return tuple((kind, colour) for kind, colour in pairs if colour_fits_background(colour, background))


# --------------------------------------------------------------------------------------------------------------
# Sampling


def sample_scene(
    rng: random.Random,
    *,
    train: bool = True,
    held_out_only: bool = False,
    object_weights: tuple[float, ...] = (0.5, 0.3, 0.2),
) -> Scene:
    """A random scene with 1 to len(object_weights) objects (weights give the odds of each count).

    With `train=True` no object has a held-out (kind, colour) pair; with `held_out_only=True` every object has
    one (for evaluation); with both False any pair may appear. Objects get distinct cells and sizes that keep
    neighbours apart, and colours that stand out against the background.
    """
    split = "held_out" if held_out_only else ("train" if train else "all")
    n_objects = rng.choices(range(1, len(object_weights) + 1), weights=object_weights)[0]
    background = rng.choice(BACKGROUNDS)
    pairs = _pairs_for(background, split)
    cells = rng.sample(CELLS, n_objects)
    objects: list[SceneObject] = []
    for cell in cells:
        kind, colour = rng.choice(pairs)
        offset = (rng.uniform(-MAX_JITTER, MAX_JITTER), rng.uniform(-MAX_JITTER, MAX_JITTER))
        # Draw sizes until this object stays clear of those already placed; small always fits.
        for size in [rng.choice(SIZES) for _ in range(4)] + ["small"]:
            obj = SceneObject(kind, colour, size, cell, offset)
            if all(objects_fit_together(obj, other) for other in objects):
                break
        objects.append(obj)
    return Scene(tuple(objects), background, rng.randrange(N_VARIANTS))


def check_scene(scene: Scene) -> None:
    """Raise InputError when a scene names an unknown attribute or puts two objects in conflict."""
    if scene.background not in BACKGROUNDS:
        raise InputError(f"Background {scene.background!r} is unknown; expected one of {', '.join(BACKGROUNDS)}.")
    if not 1 <= len(scene.objects) <= 9:
        raise InputError(f"A scene has {len(scene.objects)} objects; expected between 1 and 9.")
    for obj in scene.objects:
        if obj.kind not in KINDS:
            raise InputError(f"Object kind {obj.kind!r} is unknown; expected one of {', '.join(KINDS)}.")
        if obj.colour not in COLOURS:
            raise InputError(f"Colour {obj.colour!r} is unknown; expected one of {', '.join(COLOURS)}.")
        if obj.size not in SIZES:
            raise InputError(f"Size {obj.size!r} is unknown; expected one of {', '.join(SIZES)}.")
        if tuple(obj.cell) not in CELLS:
            raise InputError(f"Cell {obj.cell!r} is not on the 3x3 grid; expected (row, col) with values 0 to 2.")
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1 :]:
            if not objects_fit_together(a, b):
                raise InputError(
                    f"Objects in cells {a.cell} and {b.cell} overlap; expected distinct cells or smaller sizes."
                )


# --------------------------------------------------------------------------------------------------------------
# Specs: what a prompt asks for. A caption rarely states everything about its scene ("a red circle" says nothing
# of size, place or background); a `SceneSpec` keeps exactly what was stated, None for the rest, so that an
# evaluator checks a generated image only for what its prompt asked.


@dataclass(frozen=True)
class ObjectSpec:
    """An object a prompt asks for: kind and colour always, size and cell only when the prompt states them."""

    kind: str
    colour: str
    size: str | None = None
    cell: tuple[int, int] | None = None


@dataclass(frozen=True)
class RelationSpec:
    """ "objects[subject] <relation> objects[object]", e.g. (0, "above", 1) for "a sun above a house"."""

    subject: int
    relation: str
    object: int


@dataclass(frozen=True)
class SceneSpec:
    """The objects a prompt names (in the order it names them), its background if stated, and its relations."""

    objects: tuple[ObjectSpec, ...]
    background: str | None = None
    relations: tuple[RelationSpec, ...] = ()


def scene_matches_spec(scene: Scene, spec: SceneSpec) -> bool:
    """True when the scene's objects can be paired one to one with the spec's, each having every attribute its
    spec states, and the spec's relations hold between the paired objects. Order does not matter."""
    if len(scene.objects) != len(spec.objects):
        return False
    if spec.background is not None and spec.background != scene.background:
        return False
    return _pair_objects(scene.objects, spec, [])


def _object_matches(obj: SceneObject, want: ObjectSpec) -> bool:
    return (
        (obj.kind, obj.colour) == (want.kind, want.colour)
        and want.size in (None, obj.size)
        and (want.cell is None or tuple(want.cell) == tuple(obj.cell))
    )


def _pair_objects(objects: tuple[SceneObject, ...], spec: SceneSpec, chosen: list[int]) -> bool:
    # Backtracking: give spec object number len(chosen) each unused scene object that fits, then check relations.
    if len(chosen) == len(spec.objects):
        paired = [objects[j] for j in chosen]
        return all(r.relation in relations_between(paired[r.subject], paired[r.object]) for r in spec.relations)
    want = spec.objects[len(chosen)]
    for j, obj in enumerate(objects):
        if j not in chosen and _object_matches(obj, want) and _pair_objects(objects, spec, [*chosen, j]):
            return True
    return False


def scene_from_spec(spec: SceneSpec, rng: random.Random, *, tries: int = 2000) -> Scene:
    """A random scene that has everything the spec states; what it leaves open is drawn at random.

    The objects keep the spec's order. An unstated background is one on which every colour stands out, when
    there is one. Raises InputError when the spec cannot be met (two objects in one cell, impossible relations).
    """
    _check_spec(spec)
    colours = [o.colour for o in spec.objects]
    backgrounds = [b for b in BACKGROUNDS if all(colour_fits_background(c, b) for c in colours)] or list(BACKGROUNDS)
    claimed = [tuple(o.cell) for o in spec.objects if o.cell is not None]
    free_cells = [c for c in CELLS if c not in claimed]
    for _ in range(tries):
        if len(set(claimed)) != len(claimed) or len(spec.objects) > len(CELLS):
            break
        picked = iter(rng.sample(free_cells, len(spec.objects) - len(claimed)))
        objects = []
        for want in spec.objects:
            cell = tuple(want.cell) if want.cell is not None else next(picked)
            offset = (rng.uniform(-MAX_JITTER, MAX_JITTER), rng.uniform(-MAX_JITTER, MAX_JITTER))
            objects.append(SceneObject(want.kind, want.colour, want.size or rng.choice(SIZES), cell, offset))
        scene = Scene(tuple(objects), spec.background or rng.choice(backgrounds), rng.randrange(N_VARIANTS))
        fits = all(objects_fit_together(a, b) for i, a in enumerate(objects) for b in objects[i + 1 :])
        if fits and scene_matches_spec(scene, spec):
            return scene
    raise InputError("The prompt spec cannot be drawn: its objects need distinct cells, room and consistent relations.")


def _check_spec(spec: SceneSpec) -> None:
    if not spec.objects:
        raise InputError("A prompt spec has no objects; expected at least one object with a kind and a colour.")
    for o in spec.objects:
        if o.kind not in KINDS:
            raise InputError(f"Object kind {o.kind!r} is unknown; expected one of {', '.join(KINDS)}.")
        if o.colour not in COLOURS:
            raise InputError(f"Colour {o.colour!r} is unknown; expected one of {', '.join(COLOURS)}.")
        if o.size is not None and o.size not in SIZES:
            raise InputError(f"Size {o.size!r} is unknown; expected one of {', '.join(SIZES)} or None.")
        if o.cell is not None and tuple(o.cell) not in CELLS:
            raise InputError(f"Cell {o.cell!r} is not on the 3x3 grid; expected (row, col) with values 0 to 2.")
    if spec.background is not None and spec.background not in BACKGROUNDS:
        raise InputError(f"Background {spec.background!r} is unknown; expected one of {', '.join(BACKGROUNDS)}.")
    for r in spec.relations:
        if r.relation not in RELATIONS:
            raise InputError(f"Relation {r.relation!r} is unknown; expected one of {', '.join(RELATIONS)}.")
        if not (0 <= r.subject < len(spec.objects) and 0 <= r.object < len(spec.objects)) or r.subject == r.object:
            raise InputError(f"Relation {r} names objects that are not two distinct entries of the spec.")


# --------------------------------------------------------------------------------------------------------------
# Pictograms. Each kind is a list of parts drawn in order, in a unit box [-1, 1]^2 (y points down) that is then
# scaled to the object's size. A part is ("poly", points, shade), ("ellipse", (cx, cy, rx, ry), shade) or
# ("rect", (x0, y0, x1, y1), shade). The shade says which colour fills it:
#   body   the object's colour          dark   a darker tone (roof, mast)
#   light  a paler tone (sails, windows) accent a tone that contrasts with the body (eyes, door, flower heart)
#   trunk / wheel                        fixed colours, the same for every object


def _star_points(n: int = 5, outer: float = 1.0, inner: float = 0.42, dy: float = 0.1) -> list[tuple[float, float]]:
    points = []
    for i in range(2 * n):
        r = outer if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / n
        points.append((r * math.cos(angle), r * math.sin(angle) + dy))
    return points


def _heart_points(n: int = 48) -> list[tuple[float, float]]:
    # The classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t, scaled to the unit box.
    points = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x / 16.5, -(y + 2.5) / 14.5))
    return points


def _crescent_points(n: int = 24, thickness: float = 0.8, tilt: float = -0.35) -> list[tuple[float, float]]:
    # Left half of a circle, closed by a half-ellipse of width (1 - thickness): the shape of a waxing moon seen
    # from the other side. Shifted to be centred, then tilted a little.
    outer = [(-math.sqrt(max(0.0, 1 - y * y)), y) for y in np.linspace(-1, 1, n)]
    inner = [(-(1 - thickness) * math.sqrt(max(0.0, 1 - y * y)), y) for y in np.linspace(1, -1, n)]
    cos, sin = math.cos(tilt), math.sin(tilt)
    return [((x + 0.5) * cos - y * sin + 0.05, (x + 0.5) * sin + y * cos) for x, y in outer + inner]


def _sun_rays(n: int = 8, r0: float = 0.7, r1: float = 1.0, half_width: float = 0.17) -> list:
    rays = []
    for i in range(n):
        a = 2 * math.pi * i / n
        base_l = (r0 * math.cos(a - half_width), r0 * math.sin(a - half_width))
        base_r = (r0 * math.cos(a + half_width), r0 * math.sin(a + half_width))
        tip = (r1 * math.cos(a), r1 * math.sin(a))
        rays.append(("poly", [base_l, tip, base_r], "body"))
    return rays


def _petals(n: int = 5, distance: float = 0.56, radius: float = 0.42) -> list:
    petals = []
    for i in range(n):
        a = -math.pi / 2 + 2 * math.pi * i / n
        petals.append(("ellipse", (distance * math.cos(a), distance * math.sin(a) + 0.04, radius, radius), "body"))
    return petals


PICTOGRAMS: dict[str, list] = {
    "circle": [("ellipse", (0, 0, 1, 1), "body")],
    "square": [("rect", (-0.85, -0.85, 0.85, 0.85), "body")],
    "triangle": [("poly", [(0, -0.92), (1, 0.82), (-1, 0.82)], "body")],
    "star": [("poly", _star_points(), "body")],
    "heart": [("poly", _heart_points(), "body")],
    "house": [
        ("rect", (-0.72, -0.12, 0.72, 0.95), "body"),
        ("poly", [(-0.98, -0.05), (0, -0.95), (0.98, -0.05)], "dark"),
        ("rect", (-0.5, 0.4, -0.12, 0.95), "accent"),  # door
        ("rect", (0.15, 0.15, 0.5, 0.5), "accent"),  # window
    ],
    "tree": [
        ("rect", (-0.15, 0.25, 0.15, 1.0), "trunk"),
        ("ellipse", (0, -0.4, 0.58, 0.58), "body"),
        ("ellipse", (-0.42, 0.02, 0.45, 0.42), "body"),
        ("ellipse", (0.42, 0.02, 0.45, 0.42), "body"),
    ],
    "sun": [("ellipse", (0, 0, 0.55, 0.55), "body"), *_sun_rays()],
    "moon": [("poly", _crescent_points(), "body")],
    "flower": [*_petals(), ("ellipse", (0, 0.04, 0.3, 0.3), "accent")],
    "fish": [
        ("poly", [(0.35, 0.0), (1.0, -0.55), (0.9, 0.0), (1.0, 0.55)], "body"),  # tail
        ("ellipse", (-0.25, 0.0, 0.72, 0.5), "body"),
        ("ellipse", (-0.6, -0.1, 0.1, 0.1), "accent"),  # eye
    ],
    "boat": [
        ("rect", (-0.04, -0.95, 0.04, 0.4), "dark"),  # mast
        ("poly", [(0.1, -0.9), (0.1, 0.3), (0.78, 0.3)], "light"),  # sails
        ("poly", [(-0.1, -0.65), (-0.1, 0.3), (-0.62, 0.3)], "light"),
        ("poly", [(-1.0, 0.38), (1.0, 0.38), (0.68, 0.88), (-0.68, 0.88)], "body"),  # hull
    ],
    "car": [
        ("poly", [(-0.58, -0.08), (-0.36, -0.58), (0.38, -0.58), (0.62, -0.08)], "body"),  # cabin
        ("poly", [(-0.44, -0.12), (-0.29, -0.47), (-0.04, -0.47), (-0.04, -0.12)], "light"),  # windows
        ("poly", [(0.06, -0.12), (0.06, -0.47), (0.31, -0.47), (0.48, -0.12)], "light"),
        ("rect", (-1.0, -0.12, 1.0, 0.42), "body"),
        ("ellipse", (-0.55, 0.45, 0.26, 0.26), "wheel"),
        ("ellipse", (0.55, 0.45, 0.26, 0.26), "wheel"),
    ],
    "cloud": [
        ("ellipse", (-0.5, 0.15, 0.42, 0.38), "body"),
        ("ellipse", (0.0, -0.15, 0.55, 0.52), "body"),
        ("ellipse", (0.5, 0.12, 0.45, 0.4), "body"),
        ("rect", (-0.5, 0.12, 0.5, 0.53), "body"),
    ],
}

_FIXED_SHADES = {"trunk": (105, 62, 28), "wheel": (35, 35, 40)}


def _shades(rgb: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    r, g, b = rgb
    dark = (int(r * 0.55), int(g * 0.55), int(b * 0.55))
    light = (r + (255 - r) * 3 // 5, g + (255 - g) * 3 // 5, b + (255 - b) * 3 // 5)
    if rgb == COLOUR_RGB["black"]:
        dark = (70, 70, 70)  # "darker than black" would vanish
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    accent = (40, 30, 25) if luminance > 110 else (235, 235, 225)
    return {"body": rgb, "dark": dark, "light": light, "accent": accent, **_FIXED_SHADES}


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int) -> None:
    """Draw one object on a canvas of `side` pixels."""
    cx = (CELL_CENTRES[obj.cell[1]] + obj.offset[0]) * side
    cy = (CELL_CENTRES[obj.cell[0]] + obj.offset[1]) * side
    s = SIZE_FRACTION[obj.size] * side / 2  # pixels per unit of the pictogram's box
    shades = _shades(COLOUR_RGB[obj.colour])
    for shape, geometry, shade in PICTOGRAMS[obj.kind]:
        fill = shades[shade]
        if shape == "poly":
            draw.polygon([(cx + x * s, cy + y * s) for x, y in geometry], fill=fill)
        elif shape == "ellipse":
            ex, ey, rx, ry = geometry
            draw.ellipse((cx + (ex - rx) * s, cy + (ey - ry) * s, cx + (ex + rx) * s, cy + (ey + ry) * s), fill=fill)
        else:
            x0, y0, x1, y1 = geometry
            draw.rectangle((cx + x0 * s, cy + y0 * s, cx + x1 * s, cy + y1 * s), fill=fill)


# --------------------------------------------------------------------------------------------------------------
# Backgrounds, drawn with numpy at the supersampled size and cached: 10 backgrounds x 8 variants at most.


def _vertical_gradient(side: int, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """(side, side, 3) float image whose rows blend linearly between colour stops (position 0 = top, 1 = bottom)."""
    t = np.linspace(0.0, 1.0, side)
    positions = [p for p, _ in stops]
    column = np.stack([np.interp(t, positions, [c[ch] for _, c in stops]) for ch in range(3)], axis=-1)  # (side, 3)
    return np.broadcast_to(column[:, None, :], (side, side, 3)).copy()


def _dots(img: np.ndarray, rng: np.random.Generator, count: int, colour, radius: tuple[int, int]) -> None:
    side = img.shape[0]
    for _ in range(count):
        y, x = rng.integers(0, side, size=2)
        r = int(rng.integers(radius[0], radius[1] + 1))
        img[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = colour


@lru_cache(maxsize=128)
def _background(name: str, variant: int, side: int) -> Image.Image:
    rng = np.random.default_rng(1000 * BACKGROUNDS.index(name) + variant)
    u = side / 256  # texture details are designed for a 256-pixel canvas (128 supersampled)
    if name in ("white", "black", "grey"):
        img = np.full((side, side, 3), _BACKGROUND_MAIN_COLOURS[name][0], dtype=np.float64)
    elif name == "day_sky":
        img = _vertical_gradient(side, [(0, (85, 155, 230)), (1, (185, 220, 250))])
    elif name == "sunset":
        img = _vertical_gradient(side, [(0, (70, 45, 115)), (0.55, (225, 90, 95)), (1, (255, 175, 80))])
    elif name == "night":
        img = _vertical_gradient(side, [(0, (10, 14, 40)), (1, (30, 38, 85))])
        _dots(img, rng, 45, (255, 255, 235), (max(1, round(1 * u)), max(1, round(2 * u))))
    elif name == "grass":
        img = np.full((side, side, 3), (75, 155, 60), dtype=np.float64)
        for _ in range(int(260 * u * u)):  # short dark and light blades
            x, y = rng.integers(0, side, size=2)
            h, w = int(rng.integers(4, 10) * u) + 1, max(1, round(u))
            img[y : y + h, x : x + w] = (50, 120, 45) if rng.random() < 0.6 else (110, 185, 80)
    elif name == "sea":
        img = _vertical_gradient(side, [(0, (70, 140, 200)), (1, (30, 95, 165))])
        for _ in range(int(40 * u * u)):  # little wave crests: short pale arcs
            x, y = rng.integers(0, side, size=2)
            w = int(rng.integers(10, 22) * u)
            xs = np.arange(x, min(side, x + w))
            ys = (y - (np.sin(np.linspace(0, math.pi, len(xs))) * 3 * u)).astype(int).clip(0, side - 1)
            img[ys, xs] = (150, 200, 235)
            img[(ys + 1).clip(0, side - 1), xs] = (150, 200, 235)
    elif name == "sand":
        img = np.full((side, side, 3), (232, 205, 145), dtype=np.float64)
        _dots(img, rng, int(300 * u * u), (210, 180, 120), (0, max(0, round(u))))
        _dots(img, rng, int(120 * u * u), (245, 225, 175), (0, max(0, round(u))))
    elif name == "snow":
        img = _vertical_gradient(side, [(0, (200, 212, 232)), (1, (240, 244, 252))])
        _dots(img, rng, int(90 * u * u), (255, 255, 255), (max(1, round(u)), max(1, round(2 * u))))  # flakes
    else:
        raise InputError(f"Background {name!r} is unknown; expected one of {', '.join(BACKGROUNDS)}.")
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------------------
# Rendering


def render(scene: Scene, size: int = 128) -> np.ndarray:
    """The scene's pixels as a (size, size, 3) uint8 array; the same scene always gives the same pixels."""
    if not isinstance(size, int) or size < 16:
        raise InputError(f"Render size {size!r} is too small or not an integer; expected an integer of at least 16.")
    side = 2 * size  # supersampled canvas
    canvas = _background(scene.background, scene.variant % N_VARIANTS, side).copy()
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        _draw_object(draw, obj, side)
    return np.asarray(canvas.reduce(2))  # 2x2 box average: the anti-aliasing step
