"""Judging images of the second world: the classifier's labels of a scene, and the points a reading scores.

The first world's judge (atelier/world/evaluate.py) reads, per cell of the 3x3 grid, an object kind (or nothing),
a colour and a size, plus the background. A second-world judge reads the same per cell, with 33 kinds, and three
labels per image: the place, the time of day and the weather. Since every object has a cell of its own, a count
is read by counting cells: "three yellow stars" scores its count point when exactly three cells hold a star.

    scene_labels(scene) -> (30,) int64      the training targets of such a classifier
    scene_from_labels(labels) -> Scene      what a classifier's (arg-max) labels say, as a scene
    score_points(reading, spec)             {point: (scored, possible)} for one image and its prompt's spec

Points, one each when the spec states them: per group its kind (at least one seen), its count (exactly that many,
or two or more for "some"), its colour and size (every object of the kind seen has it) and its cell; the place,
time and weather; each relation (between the objects of two single groups).
"""

from __future__ import annotations

import numpy as np

from atelier.errors import InputError
from atelier.world.v2.scene import Scene, SceneObject, SceneSpec, groups_of, relations_between
from atelier.world.v2.vocab import BACKGROUNDS, CELLS, COLOURS, KINDS, SIZES, TIMES, WEATHERS

LABEL_WIDTH = 3 * 9 + 3
POINTS = ("kind", "count", "colour", "size", "cell", "background", "time", "weather", "relation")


def scene_labels(scene: Scene) -> np.ndarray:
    """(30,) int64: kind + 1 per cell (0 empty) x9, colour per cell x9 and size per cell x9 (-1 where empty; colour
    -1 for a self-coloured kind too), then place, time and weather (time and weather -1 on plain backdrops)."""
    kind = np.zeros(9, np.int64)
    colour = np.full(9, -1, np.int64)
    size = np.full(9, -1, np.int64)
    for obj in scene.objects:
        i = obj.cell[0] * 3 + obj.cell[1]
        kind[i] = KINDS.index(obj.kind) + 1
        colour[i] = COLOURS.index(obj.colour) if obj.colour is not None else -1
        size[i] = SIZES.index(obj.size)
    time = TIMES.index(scene.time) if scene.time is not None else -1
    weather = WEATHERS.index(scene.weather) if scene.weather is not None else -1
    return np.concatenate([kind, colour, size, [BACKGROUNDS.index(scene.background), time, weather]])


def scene_from_labels(labels: np.ndarray) -> Scene:
    """The scene that labels describe (offsets 0, first pose): a classifier's reading of an image."""
    labels = np.asarray(labels)
    if labels.shape != (LABEL_WIDTH,):
        raise InputError(f"Labels of shape {labels.shape} given; expected ({LABEL_WIDTH},) as scene_labels makes.")
    kind, colour, size = labels[:9], labels[9:18], labels[18:27]
    objects = tuple(
        SceneObject(KINDS[kind[i] - 1], COLOURS[colour[i]] if colour[i] >= 0 else None, SIZES[size[i]], CELLS[i])
        for i in range(9)
        if kind[i] > 0
    )
    time = TIMES[labels[28]] if labels[28] >= 0 else None
    weather = WEATHERS[labels[29]] if labels[29] >= 0 else None
    return Scene(objects, BACKGROUNDS[labels[27]], time, weather)


def score_points(reading: Scene, spec: SceneSpec) -> dict[str, tuple[int, int]]:
    """{point: (scored, possible)} for one image, read as a scene, against the spec of its prompt.

    Objects the prompt did not ask for cost nothing.
    """
    points = {name: [0, 0] for name in POINTS}

    def check(name: str, ok: bool) -> None:
        points[name][0] += bool(ok)
        points[name][1] += 1

    seen = groups_of(reading)
    for want in spec.groups:
        got = seen.get(want.kind, ())
        check("kind", len(got) > 0)
        check("count", len(got) >= 2 if want.count is None else len(got) == want.count)
        if want.colour is not None:
            check("colour", len(got) > 0 and all(o.colour == want.colour for o in got))
        if want.size is not None:
            check("size", len(got) > 0 and all(o.size == want.size for o in got))
        if want.cell is not None:
            check("cell", any(tuple(o.cell) == tuple(want.cell) for o in got))
    for name, value in (("background", spec.background), ("time", spec.time), ("weather", spec.weather)):
        if value is not None:
            check(name, getattr(reading, name) == value)
    for rel in spec.relations:
        a, b = seen.get(spec.groups[rel.subject].kind, ()), seen.get(spec.groups[rel.object].kind, ())
        check("relation", len(a) == 1 and len(b) == 1 and rel.relation in relations_between(a[0], b[0]))
    return {name: (s, p) for name, (s, p) in points.items()}
