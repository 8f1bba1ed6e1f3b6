"""Scenes of the second world: groups of objects on a 3x3 grid, in a place, at a time of day, in some weather.

A scene holds one to three *groups*, each one to four objects of one kind, colour and size ("three yellow
stars"), every object in a cell of its own and in a pose of its own (pictograms.py). A kind appears in one group
at most, so "two cats" is a fact about the picture: it has exactly two cats. The place is a plain backdrop
(white, black, grey) or one of eight places drawn by time of day (day, sunset, night with moon and stars) and
weather (clear, rain, falling snow).

Geometry, colours and the spacing rule are the first world's (atelier/world/scene.py), so are supersampling and
the objects' jitter; what a caption states is kept in a `SceneSpec` of groups, with None for what it leaves open.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw

from atelier.errors import InputError
from atelier.world.scene import (
    CELL_CENTRES,
    COLOUR_RGB,
    MAX_JITTER,
    SIZE_FRACTION,
    RelationSpec,
    _background,
    _dots,
    _vertical_gradient,
)
from atelier.world.scene import (
    N_VARIANTS as FIRST_WORLD_VARIANTS,
)
from atelier.world.scene import relations_between as first_world_relations
from atelier.world.v2.pictograms import Pose, posed_polygons, random_pose, shades
from atelier.world.v2.splits import pairs
from atelier.world.v2.vocab import (
    BACKGROUNDS,
    CELLS,
    COLOURS,
    KINDS,
    MAX_COUNT,
    PLAIN_BACKGROUNDS,
    RELATIONS,
    SELF_COLOURED_KINDS,
    SIZES,
    TIMES,
    WEATHERS,
)

# --------------------------------------------------------------------------------------------------------------
# What a scene is


@dataclass(frozen=True)
class SceneObject:
    """One object: kind, colour (None for a self-coloured kind), size, cell (row, col), jitter and pose."""

    kind: str
    colour: str | None
    size: str
    cell: tuple[int, int]
    offset: tuple[float, float] = (0.0, 0.0)
    pose: Pose = Pose()


@dataclass(frozen=True)
class Scene:
    """Objects in distinct cells, a place, and for places other than plain backdrops a time and a weather."""

    objects: tuple[SceneObject, ...]
    background: str
    time: str | None = None
    weather: str | None = None
    variant: int = 0


def groups_of(scene: Scene) -> dict[str, tuple[SceneObject, ...]]:
    """Kind -> the scene's objects of that kind, kinds in the order they first appear."""
    out: dict[str, list[SceneObject]] = {}
    for obj in scene.objects:
        out.setdefault(obj.kind, []).append(obj)
    return {kind: tuple(objs) for kind, objs in out.items()}


_GAP = 0.01  # as in the first world: neighbours keep this much space between their boxes


def objects_fit_together(a: SceneObject, b: SceneObject) -> bool:
    """False when `a` and `b` share a cell, or sit in neighbouring cells and are too big to stay apart."""
    (ra, ca), (rb, cb) = a.cell, b.cell
    if max(abs(ra - rb), abs(ca - cb)) != 1:
        return (ra, ca) != (rb, cb)
    half = (SIZE_FRACTION[a.size] + SIZE_FRACTION[b.size]) / 2
    return half + 2 * MAX_JITTER + _GAP <= CELL_CENTRES[1] - CELL_CENTRES[0]


def relations_between(a: SceneObject, b: SceneObject) -> tuple[str, ...]:
    """The relations "a <relation> b" that hold, from the two cells: the first world's (left_of, right_of, above,
    below, next_to), then near (any of the 8 neighbouring cells) and far_from (two rows or columns apart)."""
    found = list(first_world_relations(a, b))
    distance = max(abs(a.cell[0] - b.cell[0]), abs(a.cell[1] - b.cell[1]))  # Chebyshev distance on the grid
    if distance == 1:
        found.append("near")
    elif distance == 2:
        found.append("far_from")
    return tuple(found)


# --------------------------------------------------------------------------------------------------------------
# Backdrops: the place, lit by the time of day, under the weather. Drawn with numpy at the supersampled size.

_SKY_STOPS = {
    "day": [(0, (85, 155, 230)), (1, (185, 220, 250))],
    "sunset": [(0, (70, 45, 115)), (0.55, (225, 90, 95)), (1, (255, 175, 80))],
    "night": [(0, (10, 14, 40)), (1, (30, 38, 85))],
}
_GROUND_LIGHT = {"day": (1.0, 1.0, 1.0), "sunset": (1.0, 0.8, 0.65), "night": (0.3, 0.33, 0.5)}
_FIRST_WORLD_GROUND = {"grass": "grass", "sea": "sea", "sand": "sand", "snow": "snow"}
HORIZON = {"forest": 0.3, "city": 0.3, "beach": 0.32, "sky": 1.0}  # share of the height that is sky


def _forest(side: int, rng: np.random.Generator) -> np.ndarray:
    u = side / 256
    img = np.full((side, side, 3), (40, 95, 45), dtype=np.float64)
    ys = np.arange(side)[:, None]
    for _ in range(14):  # trunks
        x, w = int(rng.integers(0, side)), int(rng.integers(5, 10) * u)
        img[int(0.3 * side) :, x : x + w] = (90, 60, 35)
    for _ in range(int(22 * u * u) + 22):  # crowns along the tree line
        x, y, r = int(rng.integers(0, side)), int(rng.uniform(0.28, 0.5) * side), int(rng.integers(14, 26) * u)
        xs = np.arange(side)[None, :]
        img[(xs - x) ** 2 + (ys - y) ** 2 <= r * r] = (30, 80, 38) if rng.random() < 0.5 else (55, 120, 55)
    img[int(0.88 * side) :] = (75, 95, 45)  # forest floor
    return img


def _city(side: int, rng: np.random.Generator, time: str) -> np.ndarray:
    u = side / 256
    img = np.full((side, side, 3), (150, 150, 155), dtype=np.float64)
    x = 0
    while x < side:  # buildings of random width and height, with windows
        w, top = int(rng.integers(28, 52) * u), int(rng.uniform(0.28, 0.55) * side)
        wall = ((170, 160, 150), (120, 110, 110), (185, 150, 120), (140, 145, 160))[int(rng.integers(4))]
        img[top:, x : x + w] = wall
        lit = (250, 220, 110) if time == "night" else (95, 120, 150)
        for wy in range(top + int(6 * u), int(0.8 * side), int(14 * u)):
            for wx in range(x + int(5 * u), x + w - int(8 * u), int(12 * u)):
                if rng.random() < 0.7:
                    img[wy : wy + int(6 * u), wx : wx + int(5 * u)] = lit
        x += w + int(rng.integers(0, 6) * u)
    img[int(0.82 * side) :] = (70, 70, 75)  # street
    for x in range(0, side, int(32 * u)):
        img[int(0.9 * side) : int(0.9 * side) + max(1, int(3 * u)), x : x + int(16 * u)] = (235, 235, 225)
    return img


def _beach(side: int, rng: np.random.Generator) -> np.ndarray:
    img = np.asarray(_background("sand", 0, side), dtype=np.float64).copy()
    sea = np.asarray(_background("sea", int(rng.integers(FIRST_WORLD_VARIANTS)), side), dtype=np.float64)
    img[: int(0.56 * side)] = sea[: int(0.56 * side)]
    img[int(0.53 * side) : int(0.57 * side)] = (240, 245, 250)  # surf
    return img


# 3 plain backdrops + 8 places x 3 times x 3 weathers x N_VARIANTS textures: all stay cached (about 57 MB at the
# supersampled 256 pixels); a miss costs 5-14 ms, a render from the cache about 1 ms.
N_VARIANTS = 4
_BACKDROPS = 3 + 8 * 3 * 3 * N_VARIANTS


@lru_cache(maxsize=_BACKDROPS + 8)
def _backdrop(place: str, time: str | None, weather: str | None, variant: int, side: int) -> Image.Image:
    if place in PLAIN_BACKGROUNDS:
        return _background(place, 0, side)
    rng = np.random.default_rng([BACKGROUNDS.index(place), TIMES.index(time), WEATHERS.index(weather), variant])
    u = side / 256
    sky = _vertical_gradient(side, _SKY_STOPS[time])
    if weather == "rain":
        sky = 0.45 * sky + 0.55 * np.array((40, 44, 58) if time == "night" else (120, 126, 140))
    elif weather == "snowfall":
        sky = 0.5 * sky + 0.5 * np.array((50, 55, 70) if time == "night" else (195, 200, 210))
    if place == "sky":
        ground = sky
    elif place in _FIRST_WORLD_GROUND:
        ground = np.asarray(_background(place, variant, side), dtype=np.float64)
    elif place == "forest":
        ground = _forest(side, rng)
    elif place == "city":
        ground = _city(side, rng, time)
    else:
        ground = _beach(side, rng)
    if place != "sky":
        light = np.array(_GROUND_LIGHT[time]) * (0.85 if weather == "rain" else 1.0)
        ground = ground * light
        if weather == "snowfall":  # an overcast grey veil, on which the white flakes show even over snow
            ground = 0.75 * ground + 0.25 * np.array((190, 195, 205)) * light
        if place == "city" and time == "night":  # lit windows stay bright
            lit = np.all(np.abs(ground - np.array((250, 220, 110)) * light) < 1, axis=-1)
            ground[lit] = (250, 220, 110)
    horizon = int(HORIZON.get(place, 0.0) * side)
    img = ground.copy()
    img[:horizon] = sky[:horizon]
    if time == "night" and horizon:  # stars, and a small full moon in a top corner
        sky_part = img[:horizon]
        _dots(sky_part, rng, int(45 * HORIZON[place]) + 8, (255, 255, 235), (max(1, round(u)), max(1, round(2 * u))))
        mx, my, r = (0.08 if variant % 2 else 0.92) * side, 0.07 * side, 0.035 * side
        ys, xs = np.mgrid[:side, :side]
        img[((xs - mx) ** 2 + (ys - my) ** 2 <= r * r) & (ys < horizon)] = (245, 240, 205)
    if weather == "rain":  # slanted streaks
        for _ in range(int(110 * u * u)):
            x, y, n = int(rng.integers(0, side)), int(rng.integers(0, side)), int(rng.integers(6, 12) * u)
            steps = np.arange(n)
            img[(y + steps).clip(0, side - 1), (x - steps // 3).clip(0, side - 1)] = (175, 190, 215)
    elif weather == "snowfall":
        _dots(img, rng, int(130 * u * u), (255, 255, 255), (max(1, round(u)), max(1, round(2 * u))))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------------------
# Which colours stand out on which backdrop: a colour is refused where more than 10% of the backdrop (in 8x8
# blocks of a 64-pixel render) lies within `_MIN_CONTRAST` of it in RGB. So no white star in the snow, no blue
# fish on the sea, no black cat at night.

_MIN_CONTRAST = 80.0


@cache
def colours_for(place: str, time: str | None, weather: str | None) -> tuple[str, ...]:
    """The colours an object may have on this backdrop."""
    small = np.asarray(_backdrop.__wrapped__(place, time, weather, 0, 64), dtype=np.float64)  # not kept in the cache
    blocks = small.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3)).reshape(-1, 3)  # (64, 3) block means
    fits = []
    for colour in COLOURS:
        near = np.linalg.norm(blocks - np.array(COLOUR_RGB[colour]), axis=1) < _MIN_CONTRAST
        if near.mean() <= 0.1:
            fits.append(colour)
    return tuple(fits)


# --------------------------------------------------------------------------------------------------------------
# Sampling

P_TIME = {"day": 0.6, "sunset": 0.2, "night": 0.2}
P_WEATHER = {"clear": 0.6, "rain": 0.2, "snowfall": 0.2}
GROUP_WEIGHTS = (0.5, 0.32, 0.18)  # one, two or three groups
COUNT_WEIGHTS = (0.6, 0.18, 0.12, 0.1)  # one to four objects in a group
MAX_OBJECTS = 6


def _sample_backdrop(rng: random.Random) -> tuple[str, str | None, str | None]:
    place = rng.choice(BACKGROUNDS)
    if place in PLAIN_BACKGROUNDS:
        return place, None, None
    time = rng.choices(TIMES, weights=[P_TIME[t] for t in TIMES])[0]
    weather = rng.choices(WEATHERS, weights=[P_WEATHER[w] for w in WEATHERS])[0]
    return place, time, weather


def _place_group(
    rng: random.Random, kind: str, colour: str | None, count: int, placed: list[SceneObject], sizes: list[str]
) -> list[SceneObject] | None:
    """`count` objects of one kind, colour and size in free cells, clear of those placed; None if none fit."""
    for size in sizes:
        free = [c for c in CELLS if all(o.cell != c for o in placed)]
        rng.shuffle(free)
        group: list[SceneObject] = []
        for cell in free:
            offset = (rng.uniform(-MAX_JITTER, MAX_JITTER), rng.uniform(-MAX_JITTER, MAX_JITTER))
            obj = SceneObject(kind, colour, size, cell, offset, random_pose(kind, rng))
            if all(objects_fit_together(obj, other) for other in placed + group):
                group.append(obj)
                if len(group) == count:
                    return group
    return None


@cache
def _colours_by_kind(
    split: str, place: str, time: str | None, weather: str | None
) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
    """(kind, its colours) for the pairs of the split whose colour stands out on this backdrop, kinds in order.

    The sampler picks a kind first, then one of its colours, so that every kind is as common as the others (the
    rainbow's one pair would otherwise be ten times rarer than a coloured kind's eleven).
    """
    allowed = colours_for(place, time, weather)
    by_kind: dict[str, list[str | None]] = {}
    for kind, colour in pairs(split):
        if colour is None or colour in allowed:
            by_kind.setdefault(kind, []).append(colour)
    return tuple((kind, tuple(colours)) for kind, colours in by_kind.items())


def sample_scene(rng: random.Random, *, train: bool = True, held_out_only: bool = False) -> Scene:
    """A random scene: 1-3 groups of distinct kinds, 1-4 objects each (at most 6 in all), on a random backdrop.

    `train=True` keeps held-out (kind, colour) pairs out; `held_out_only=True` gives every coloured group one;
    both False allow any pair. Groups share a colour and a size; every object has its own cell and pose.
    """
    split = "held_out" if held_out_only else ("train" if train else "all")
    place, time, weather = _sample_backdrop(rng)
    choices = _colours_by_kind(split, place, time, weather)
    n_groups = rng.choices(range(1, len(GROUP_WEIGHTS) + 1), weights=GROUP_WEIGHTS)[0]
    objects: list[SceneObject] = []
    kinds: set[str] = set()
    for _ in range(n_groups):
        options = [(k, colours) for k, colours in choices if k not in kinds]
        if not options:
            break
        kind, colours = rng.choice(options)
        colour = rng.choice(colours)
        count = rng.choices(range(1, MAX_COUNT + 1), weights=COUNT_WEIGHTS)[0]
        count = max(1, min(count, MAX_OBJECTS - len(objects)))
        group = _place_group(rng, kind, colour, count, objects, [rng.choice(SIZES) for _ in range(3)] + ["small"])
        if group is None:
            break
        objects += group
        kinds.add(kind)
    return Scene(tuple(objects), place, time, weather, rng.randrange(N_VARIANTS))


def check_scene(scene: Scene) -> None:
    """Raise InputError when a scene names an unknown attribute, splits a kind or puts two objects in conflict."""
    if scene.background not in BACKGROUNDS:
        raise InputError(f"Background {scene.background!r} is unknown; expected one of {', '.join(BACKGROUNDS)}.")
    plain = scene.background in PLAIN_BACKGROUNDS
    if plain != (scene.time is None) or plain != (scene.weather is None):
        raise InputError(
            f"Background {scene.background!r} with time {scene.time!r} and weather {scene.weather!r}: plain "
            "backdrops have neither, every other place has both."
        )
    if not plain and (scene.time not in TIMES or scene.weather not in WEATHERS):
        raise InputError(
            f"Time {scene.time!r} or weather {scene.weather!r} is unknown; expected {TIMES} and {WEATHERS}."
        )
    for obj in scene.objects:
        if obj.kind not in KINDS:
            raise InputError(f"Object kind {obj.kind!r} is unknown; expected one of {', '.join(KINDS)}.")
        if (obj.colour is None) != (obj.kind in SELF_COLOURED_KINDS) or (obj.colour and obj.colour not in COLOURS):
            raise InputError(f"Colour {obj.colour!r} does not fit a {obj.kind}; expected one of {', '.join(COLOURS)}.")
        if obj.size not in SIZES or tuple(obj.cell) not in CELLS:
            raise InputError(f"Size {obj.size!r} or cell {obj.cell!r} is not one of the world's.")
    for kind, objs in groups_of(scene).items():
        if len({(o.colour, o.size) for o in objs}) != 1 or len(objs) > MAX_COUNT:
            raise InputError(f"The {kind} objects differ in colour or size, or are more than {MAX_COUNT}.")
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1 :]:
            if not objects_fit_together(a, b):
                raise InputError(f"Objects in cells {a.cell} and {b.cell} overlap; expected distinct cells or room.")


# --------------------------------------------------------------------------------------------------------------
# Specs: what a prompt states about each group


@dataclass(frozen=True)
class GroupSpec:
    """A group a prompt names: its kind always; its count (None: "some", two or more), colour, size, and a cell for
    a single object, each only when the prompt states it."""

    kind: str
    count: int | None = 1
    colour: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None


@dataclass(frozen=True)
class SceneSpec:
    """The groups a prompt names (in its order), the place, time and weather it states, and its relations.

    A relation (`RelationSpec` of the first world) links two groups of one object each, by their index.
    """

    groups: tuple[GroupSpec, ...]
    background: str | None = None
    time: str | None = None
    weather: str | None = None
    relations: tuple[RelationSpec, ...] = ()


def group_matches(objects: tuple[SceneObject, ...], want: GroupSpec) -> bool:
    """True when these objects (all a scene has of `want.kind`) show what the group spec states."""
    if want.count is None:
        if len(objects) < 2:
            return False
    elif len(objects) != want.count:
        return False
    return all(
        o.kind == want.kind
        and want.colour in (None, o.colour)
        and want.size in (None, o.size)
        and (want.cell is None or tuple(want.cell) == tuple(o.cell))
        for o in objects
    )


def scene_matches_spec(scene: Scene, spec: SceneSpec) -> bool:
    """True when the scene has exactly the spec's kinds, each group as stated, and the stated backdrop and relations."""
    groups = groups_of(scene)
    if set(groups) != {g.kind for g in spec.groups} or len(spec.groups) != len(groups):
        return False
    if any(
        want is not None and want != got
        for want, got in ((spec.background, scene.background), (spec.time, scene.time), (spec.weather, scene.weather))
    ):
        return False
    if not all(group_matches(groups[g.kind], g) for g in spec.groups):
        return False
    for r in spec.relations:
        (a,), (b,) = groups[spec.groups[r.subject].kind], groups[spec.groups[r.object].kind]
        if r.relation not in relations_between(a, b):
            return False
    return True


def check_spec(spec: SceneSpec) -> None:
    """Raise InputError when a spec names an unknown attribute, a kind twice or an impossible relation."""
    if not spec.groups:
        raise InputError("A prompt spec has no objects; expected at least one object of a known kind.")
    kinds = [g.kind for g in spec.groups]
    if len(set(kinds)) != len(kinds):
        raise InputError(f"A prompt spec names kinds {kinds}; expected each kind in one group only.")
    for g in spec.groups:
        if g.kind not in KINDS:
            raise InputError(f"Object kind {g.kind!r} is unknown; expected one of {', '.join(KINDS)}.")
        if g.count is not None and not 1 <= g.count <= MAX_COUNT:
            raise InputError(f"Count {g.count!r} of {g.kind} is out of range; expected 1 to {MAX_COUNT} or None.")
        if g.colour is not None and (g.colour not in COLOURS or g.kind in SELF_COLOURED_KINDS):
            raise InputError(f"Colour {g.colour!r} cannot be asked of a {g.kind}.")
        if g.size is not None and g.size not in SIZES:
            raise InputError(f"Size {g.size!r} is unknown; expected one of {', '.join(SIZES)} or None.")
        if g.cell is not None and (tuple(g.cell) not in CELLS or g.count != 1):
            raise InputError(f"Cell {g.cell!r} is asked of {g.count} {g.kind}; a cell holds one object.")
    for value, known, what in (
        (spec.background, BACKGROUNDS, "Background"),
        (spec.time, TIMES, "Time"),
        (spec.weather, WEATHERS, "Weather"),
    ):
        if value is not None and value not in known:
            raise InputError(f"{what} {value!r} is unknown; expected one of {', '.join(known)} or None.")
    for r in spec.relations:
        if r.relation not in RELATIONS:
            raise InputError(f"Relation {r.relation!r} is unknown; expected one of {', '.join(RELATIONS)}.")
        n = len(spec.groups)
        if not (0 <= r.subject < n and 0 <= r.object < n) or r.subject == r.object:
            raise InputError(f"Relation {r} names groups that are not two distinct entries of the spec.")
        if spec.groups[r.subject].count != 1 or spec.groups[r.object].count != 1:
            raise InputError(f"Relation {r} links groups of several objects; expected two single objects.")


def scene_from_spec(spec: SceneSpec, rng: random.Random, *, tries: int = 500) -> Scene:
    """A random scene that has everything the spec states; what it leaves open is drawn at random.

    An unstated colour is one that stands out on the backdrop (a stated one is drawn even where it does not);
    "some" is two or three. Raises InputError when the spec cannot be met (no room, impossible relations, a time
    or weather asked of a plain backdrop).
    """
    check_spec(spec)
    for _ in range(tries):
        place, time, weather = _sample_backdrop(rng)
        place = spec.background or place
        if place in PLAIN_BACKGROUNDS:
            time = weather = None
        else:
            time = spec.time or time or "day"
            weather = spec.weather or weather or "clear"
        allowed = colours_for(place, time, weather)
        objects: list[SceneObject] = []
        for g in spec.groups:
            colour = None if g.kind in SELF_COLOURED_KINDS else (g.colour or rng.choice(allowed or COLOURS))
            count = g.count or rng.choice((2, 3))
            if g.cell is not None:
                offset = (rng.uniform(-MAX_JITTER, MAX_JITTER), rng.uniform(-MAX_JITTER, MAX_JITTER))
                size = g.size or rng.choice(SIZES)
                group = [SceneObject(g.kind, colour, size, tuple(g.cell), offset, random_pose(g.kind, rng))]
            else:
                sizes = [g.size] if g.size else [rng.choice(SIZES), "small"]
                group = _place_group(rng, g.kind, colour, count, objects, sizes)
            if group is None:
                break
            objects += group
        else:
            scene = Scene(tuple(objects), place, time, weather, rng.randrange(N_VARIANTS))
            fits = all(objects_fit_together(a, b) for i, a in enumerate(objects) for b in objects[i + 1 :])
            if fits and scene_matches_spec(scene, spec):
                return scene
    raise InputError("The prompt spec cannot be drawn: its objects need distinct cells, room and consistent relations.")


# --------------------------------------------------------------------------------------------------------------
# Rendering


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int) -> None:
    cx = (CELL_CENTRES[obj.cell[1]] + obj.offset[0]) * side
    cy = (CELL_CENTRES[obj.cell[0]] + obj.offset[1]) * side
    s = SIZE_FRACTION[obj.size] * side / 2  # pixels per unit of the pictogram's box
    fills = shades(COLOUR_RGB[obj.colour] if obj.colour else None)
    for points, shade in posed_polygons(obj.kind, obj.pose):
        draw.polygon((points * s + (cx, cy)).ravel().tolist(), fill=fills[shade])  # flat x0, y0, x1, y1, ...


def render(scene: Scene, size: int = 128) -> np.ndarray:
    """The scene's pixels as a (size, size, 3) uint8 array; the same scene always gives the same pixels."""
    if not isinstance(size, int) or size < 16:
        raise InputError(f"Render size {size!r} is too small or not an integer; expected an integer of at least 16.")
    side = 2 * size  # supersampled canvas, averaged 2x2 at the end (the first world's anti-aliasing)
    canvas = _backdrop(scene.background, scene.time, scene.weather, scene.variant % N_VARIANTS, side).copy()
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        _draw_object(draw, obj, side)
    return np.asarray(canvas.reduce(2))
