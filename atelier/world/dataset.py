"""Batches of (image, caption) pairs from the world, rendered on the fly or pre-rendered to disk for GPU training.

Every item is a pure function of (seed, index): item i uses its own `random.Random(seed * 2**32 + i)` to draw a
scene, a language and a caption. So a batch, a shard or a whole pre-rendered dataset is the same whatever the
number of worker processes, and any item can be rebuilt alone.

  render_batch     n items, one caption each, with the spec of what each caption states (evaluation, tests)
  render_dataset   n items with several captions each, in memory, on several processes (training)
  prerender        n items written to disk as shards, on several processes

On disk (`prerender`), a dataset is a folder of shards:
    manifest.json            seed, size, count, shard names
    shard-00000.npy          uint8 (N, H, W, 3) images, loadable with np.load(..., mmap_mode="r")
    shard-00000.json         {"captions": [...], "langs": [...], "specs": [...], "scenes": [...]}
Scenes are stored as well as captions so that training can write fresh captions for the same pictures.

Every function takes `world` ("v1", the default and the shipped model's, or "v2": atelier/world/worlds.py); for
"v1" the items are exactly those this module made before there was a second world.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from atelier.errors import InputError
from atelier.world.scene import Scene, SceneSpec
from atelier.world.worlds import WORLD_NAMES, get_world

if TYPE_CHECKING:
    from atelier.world.v2.scene import Scene as SecondWorldScene


def item_rng(seed: int, index: int) -> random.Random:
    """The random stream of item `index` of the dataset `seed`: independent of every other item."""
    return random.Random(seed * 2**32 + index)


def render_item(seed: int, index: int, size: int = 128, lang_mix: float = 0.5, train: bool = True, world: str = "v1"):
    """One item: (image (size, size, 3) uint8, caption, language, spec, scene)."""
    w = get_world(world)
    rng = item_rng(seed, index)
    scene = w.sample_scene(rng, train=train)
    lang = "fr" if rng.random() < lang_mix else "en"
    text, spec = w.describe(scene, lang, rng)
    return w.render(scene, size), text, lang, spec, scene


def render_batch(
    seed: int,
    n: int,
    size: int = 128,
    lang_mix: float = 0.5,
    *,
    start: int = 0,
    train: bool = True,
    world: str = "v1",
) -> tuple[np.ndarray, list[str], list[SceneSpec]]:
    """Items start .. start+n-1 of dataset `seed`: images uint8 (n, size, size, 3), captions and their specs.

    `lang_mix` is the fraction of French captions (0: all English, 1: all French). With `train=True` no held-out
    (kind, colour) pair appears.
    """
    _check_args(seed, n, lang_mix)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions, specs = [], []
    for j in range(n):
        images[j], text, _, spec, _ = render_item(seed, start + j, size, lang_mix, train, world)
        captions.append(text)
        specs.append(spec)
    return images, captions, specs


def _check_args(seed: int, n: int, lang_mix: float) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"Dataset seed {seed!r} is not a non-negative integer.")
    if not isinstance(n, int) or n < 0:
        raise InputError(f"Item count {n!r} is not a non-negative integer.")
    if not 0.0 <= lang_mix <= 1.0:
        raise InputError(f"Language mix {lang_mix!r} is outside [0, 1]; it is the fraction of French captions.")


# --------------------------------------------------------------------------------------------------------------
# In-memory datasets with several captions per image, for training


def _render_chunk(
    seed: int, start: int, count: int, size: int, captions_per_image: int, lang_mix: float, train: bool, world: str
):
    w = get_world(world)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    n_french = round(captions_per_image * lang_mix)
    langs = ["fr"] * n_french + ["en"] * (captions_per_image - n_french)
    captions = []
    for j in range(count):
        rng = item_rng(seed, start + j)
        scene = w.sample_scene(rng, train=train)  # drawn first, as in render_item: same picture for the same index
        images[j] = w.render(scene, size)
        captions.append([w.describe(scene, lang, rng)[0] for lang in langs])
    return images, captions


def render_dataset(
    seed: int,
    start: int,
    count: int,
    size: int = 128,
    captions_per_image: int = 4,
    workers: int = 1,
    *,
    lang_mix: float = 0.5,
    train: bool = True,
    chunk: int = 2048,
    world: str = "v1",
) -> tuple[np.ndarray, list[list[str]]]:
    """Items start .. start+count-1 as uint8 images (count, size, size, 3) and `captions_per_image` captions each.

    The captions of one image are independent wordings of its scene, round(captions_per_image * lang_mix) of them
    in French and the rest in English, so a trainer can pick one at random each time it shows the image. The
    images are those of `render_batch` for the same indices, whatever the number of worker processes.
    """
    _check_args(seed, count, lang_mix)
    get_world(world)  # an unknown world fails here, not in a worker
    if captions_per_image < 1 or workers < 1:
        raise InputError(f"Captions per image ({captions_per_image}) and workers ({workers}) must both be at least 1.")
    jobs = [
        (seed, s, min(chunk, start + count - s), size, captions_per_image, lang_mix, train, world)
        for s in range(start, start + count, chunk)
    ]
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    captions: list[list[str]] = []
    if not jobs:
        return images, captions
    pool = ProcessPoolExecutor(workers, mp_context=get_context(_start_method())) if workers > 1 else None
    try:
        results = (pool.map if pool else map)(_render_chunk, *zip(*jobs, strict=True))
        for (_, first, *_), (chunk_images, chunk_captions) in zip(jobs, results, strict=True):
            images[first - start : first - start + len(chunk_images)] = chunk_images
            captions += chunk_captions
    finally:
        if pool:
            pool.shutdown()
    return images, captions


def _start_method() -> str:
    # "fork" where the system has it: workers start at once and need no importable __main__. They only use
    # numpy and PIL, so torch threads in the parent do not matter. Elsewhere (macOS, Windows), "spawn".
    return "fork" if "fork" in get_all_start_methods() else "spawn"


# --------------------------------------------------------------------------------------------------------------
# Serialisation of scenes and specs (JSON: tuples become lists)


def scene_to_dict(scene: Scene) -> dict:
    return dataclasses.asdict(scene)


def scene_from_dict(data: dict, world: str = "v1") -> Scene | SecondWorldScene:
    return get_world(world).scene_from_dict(data)


# --------------------------------------------------------------------------------------------------------------
# Pre-rendering to shards with several processes


def _write_shard(
    out_dir: str, shard: int, seed: int, start: int, count: int, size: int, lang_mix: float, train: bool, world: str
) -> str:
    """Render items start .. start+count-1 into shard-NNNNN.npy/.json; runs in a worker process."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    meta: dict[str, list] = {"captions": [], "langs": [], "specs": [], "scenes": []}
    for j in range(count):
        images[j], text, lang, spec, scene = render_item(seed, start + j, size, lang_mix, train, world)
        meta["captions"].append(text)
        meta["langs"].append(lang)
        meta["specs"].append(dataclasses.asdict(spec))
        meta["scenes"].append(scene_to_dict(scene))
    name = f"shard-{shard:05d}"
    np.save(Path(out_dir) / f"{name}.npy", images)
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(meta, ensure_ascii=False))
    return name


def prerender(
    out_dir: str | Path,
    n: int,
    workers: int = 1,
    *,
    seed: int = 0,
    size: int = 128,
    lang_mix: float = 0.5,
    shard_size: int = 10_000,
    train: bool = True,
    world: str = "v1",
) -> Path:
    """Render items 0 .. n-1 of dataset `seed` into shards under `out_dir`, with `workers` processes.

    Returns the path of manifest.json. The files are identical for any number of workers.
    """
    _check_args(seed, n, lang_mix)
    get_world(world)
    if workers < 1 or shard_size < 1:
        raise InputError(f"Workers ({workers}) and shard size ({shard_size}) must both be at least 1.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(out), k, seed, start, min(shard_size, n - start), size, lang_mix, train, world)
        for k, start in enumerate(range(0, n, shard_size))
    ]
    if workers == 1:
        names = [_write_shard(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(_start_method())) as pool:
            names = list(pool.map(_write_shard, *zip(*jobs, strict=True)))
    manifest = {"seed": seed, "count": n, "size": size, "lang_mix": lang_mix, "train": train, "shards": names}
    if world != "v1":  # a first-world manifest stays as it was; readers take a missing "world" for "v1"
        manifest["world"] = world
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def iter_shards(out_dir: str | Path) -> Iterator[tuple[np.ndarray, list[str], list[Scene]]]:
    """Yield (images memory-mapped uint8 (N, H, W, 3), captions, scenes) for each shard of a pre-rendered dataset."""
    out = Path(out_dir)
    if not (out / "manifest.json").is_file():
        raise InputError(f"Folder {str(out)!r} has no manifest.json; expected a dataset written by prerender().")
    manifest = json.loads((out / "manifest.json").read_text())
    for name in manifest["shards"]:
        meta = json.loads((out / f"{name}.json").read_text())
        images = np.load(out / f"{name}.npy", mmap_mode="r")
        yield images, meta["captions"], [scene_from_dict(d, manifest.get("world", "v1")) for d in meta["scenes"]]


# --------------------------------------------------------------------------------------------------------------
# A contact sheet, to look at the world


def sample_grid(seed: int = 0, rows: int = 8, cols: int = 8, size: int = 128, lang_mix: float = 0.5, world: str = "v1"):
    """A (rows*size, cols*size, 3) uint8 contact sheet of the first rows*cols items, and their captions."""
    images, captions, _ = render_batch(seed, rows * cols, size, lang_mix, world=world)
    grid = images.reshape(rows, cols, size, size, 3).transpose(0, 2, 1, 3, 4).reshape(rows * size, cols * size, 3)
    return grid, captions


def save_samples(
    png_path: str | Path, seed: int = 0, rows: int = 8, cols: int = 8, size: int = 128, world: str = "v1"
) -> None:
    """Write the contact sheet to `png_path` (with a thin numbered margin) and the captions next to it as .txt."""
    grid, captions = sample_grid(seed, rows, cols, size, world=world)
    image = Image.fromarray(grid)
    draw = ImageDraw.Draw(image)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        draw.text((c * size + 2, r * size + 1), str(k), fill=(255, 0, 255))
    image.save(png_path)
    lines = [f"{k:3d}  {text}" for k, text in enumerate(captions)]
    Path(png_path).with_suffix(".txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the procedural world: a contact sheet or a dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("samples", help="write a contact sheet PNG and its captions")
    s.add_argument("png")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--world", choices=WORLD_NAMES, default="v1")
    p = sub.add_parser("prerender", help="write a dataset of shards")
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--world", choices=WORLD_NAMES, default="v1")
    args = parser.parse_args(argv)
    if args.command == "samples":
        save_samples(args.png, args.seed, world=args.world)
    else:
        print(prerender(args.out_dir, args.n, args.workers, seed=args.seed, size=args.size, world=args.world))


if __name__ == "__main__":
    main()
