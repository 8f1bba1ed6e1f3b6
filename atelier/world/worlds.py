"""The worlds a model can be trained and evaluated on, by name: "v1" (the shipped model's) and "v2" (grown).

A `World` bundles what the dataset tools, training and evaluation need from one world: its vocabulary sizes,
how to sample, draw and caption a scene, and how to store a scene as JSON. Code that takes a `--world` option
looks the world up here once and then calls its functions; everything defaults to "v1", so the shipped model,
its packing and `atelier eval` see exactly the first world.

    v1   atelier/world/{vocab,scene,captions,splits}.py   14 kinds, one object per kind-colour pair, 10 backdrops
    v2   atelier/world/v2/                                33 kinds, counts 1-4, 11 places x time x weather
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from atelier.errors import InputError


@dataclass(frozen=True)
class World:
    """One world's vocabulary (names in label order) and its scene functions."""

    name: str
    kinds: tuple[str, ...]
    colours: tuple[str, ...]
    sizes: tuple[str, ...]
    backgrounds: tuple[str, ...]
    sample_scene: Callable[..., Any]  # (rng, *, train=True, held_out_only=False) -> Scene
    render: Callable[..., Any]  # (scene, size=128) -> uint8 (size, size, 3)
    describe: Callable[..., Any]  # (scene, lang, rng) -> (caption, spec)
    scene_from_dict: Callable[[dict], Any]  # the inverse of dataclasses.asdict(scene), after a JSON round trip


def _first_world() -> World:
    from atelier.world import captions, scene, vocab

    def from_dict(data: dict) -> scene.Scene:
        objects = tuple(
            scene.SceneObject(o["kind"], o["colour"], o["size"], tuple(o["cell"]), tuple(o["offset"]))
            for o in data["objects"]
        )
        return scene.Scene(objects, data["background"], data["variant"])

    return World(
        "v1",
        vocab.KINDS,
        vocab.COLOURS,
        vocab.SIZES,
        vocab.BACKGROUNDS,
        scene.sample_scene,
        scene.render,
        captions.describe,
        from_dict,
    )


def _second_world() -> World:
    from atelier.world.v2 import captions, scene, vocab
    from atelier.world.v2.pictograms import Pose

    def from_dict(data: dict) -> scene.Scene:
        objects = tuple(
            scene.SceneObject(
                o["kind"],
                o["colour"],
                o["size"],
                tuple(o["cell"]),
                tuple(o["offset"]),
                Pose(o["pose"]["drawing"], o["pose"]["mirror"], o["pose"]["tilt"], tuple(o["pose"]["stretch"])),
            )
            for o in data["objects"]
        )
        return scene.Scene(objects, data["background"], data["time"], data["weather"], data["variant"])

    return World(
        "v2",
        vocab.KINDS,
        vocab.COLOURS,
        vocab.SIZES,
        vocab.BACKGROUNDS,
        scene.sample_scene,
        scene.render,
        captions.describe,
        from_dict,
    )


_BUILDERS: dict[str, Callable[[], World]] = {"v1": _first_world, "v2": _second_world}
WORLD_NAMES: tuple[str, ...] = tuple(_BUILDERS)


@cache
def get_world(name: str = "v1") -> World:
    """The world called `name` ("v1" or "v2"), built once."""
    if name not in _BUILDERS:
        raise InputError(f"World {name!r} is unknown; expected one of {', '.join(WORLD_NAMES)}.")
    return _BUILDERS[name]()
