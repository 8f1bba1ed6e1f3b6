"""Scoring the embedded model: does the image show what the prompt asked for?

An attribute classifier (encoders.AttributeClassifier), trained on rendered scenes whose contents are known,
reads a generated image back into a scene: per grid cell an object kind (or nothing), a colour and a size, plus
the background. A prompt's spec (captions.random_prompt) lists what it stated; each stated attribute is one point:

    per object: kind present, its colour, its size (if stated), its cell (if stated); the background (if stated);
    each spatial relation (if stated).

Adherence is the fraction of points scored. The functions that render, label and read scenes take `world` ("v1",
the default and the shipped model's, or "v2"); the second world's labels and points are atelier/world/v2/points.py's.

Image quality is a Fréchet distance (Heusel et al. 2017) between
generated and rendered images, computed on the classifier's pooled features instead of Inception's, reported
next to the same distance between two independent sets of rendered images (the floor it can reach). How saturated
and hard an image looks is two numbers of its pixels alone: the colourfulness M of Hasler and Süsstrunk (2003) and
the RMS contrast of its luma.

Per image, two yes-or-no figures: does it draw every kind its prompt names (`kinds_drawn`: all its kind points
scored), and does it show a kind the prompt does not name (`unnamed_kind_seen`: something unrelated).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from atelier.errors import InputError
from atelier.imaging import signed_to_uint8, uint8_to_signed
from atelier.world.encoders import AttributeClassifier
from atelier.world.scene import Scene, SceneObject, SceneSpec, relations_between
from atelier.world.vocab import BACKGROUNDS, COLOURS, KINDS, SIZES
from atelier.world.worlds import get_world

CELLS = [(r, c) for r in range(3) for c in range(3)]


def new_classifier(world: str = "v1") -> AttributeClassifier:
    """The judge of `world`: the first world's reads kind, colour, size and background; the second world's also
    the time of day and the weather (33 kinds, 11 colours, 3 sizes, 11 places, 3 times, 3 weathers)."""
    if world == "v1":
        return AttributeClassifier(len(KINDS), len(COLOURS), len(SIZES), len(BACKGROUNDS))
    from atelier.world.v2.vocab import TIMES, WEATHERS

    w = get_world(world)
    return AttributeClassifier(
        len(w.kinds), len(w.colours), len(w.sizes), len(w.backgrounds), n_times=len(TIMES), n_weathers=len(WEATHERS)
    )


# --------------------------------------------------------------------------------------------------------------
# Labels: a scene as the classifier's targets
# --------------------------------------------------------------------------------------------------------------


def scene_labels(scene: Scene) -> np.ndarray:
    """(28,) int64: kind+1 per cell (0 = empty) x9, colour per cell x9, size per cell x9 (-1 where empty), bg."""
    kind = np.zeros(9, np.int64)
    colour = np.full(9, -1, np.int64)
    size = np.full(9, -1, np.int64)
    for obj in scene.objects:
        i = obj.cell[0] * 3 + obj.cell[1]
        kind[i] = KINDS.index(obj.kind) + 1
        colour[i] = COLOURS.index(obj.colour)
        size[i] = SIZES.index(obj.size)
    return np.concatenate([kind, colour, size, [BACKGROUNDS.index(scene.background)]])


def _ignoring_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the targets that are not -1; 0 (not NaN) for a batch where every one is -1."""
    total = F.cross_entropy(logits, target, ignore_index=-1, reduction="sum")
    return total / (target >= 0).sum().clamp(min=1)


def classifier_loss(out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The sum of the heads' cross-entropies; labels (B, 28) as `scene_labels` makes, or (B, 30) with the second
    world's time and weather (-1 on plain backdrops: not counted)."""
    kind, colour, size, bg = labels[:, :9], labels[:, 9:18], labels[:, 18:27], labels[:, 27]
    loss = F.cross_entropy(out["kind"].flatten(0, 1), kind.flatten())
    loss = loss + F.cross_entropy(out["colour"].flatten(0, 1), colour.flatten(), ignore_index=-1)
    loss = loss + F.cross_entropy(out["size"].flatten(0, 1), size.flatten(), ignore_index=-1)
    loss = loss + F.cross_entropy(out["background"], bg)
    if labels.shape[1] > 28:
        loss = loss + _ignoring_cross_entropy(out["time"], labels[:, 28])
        loss = loss + _ignoring_cross_entropy(out["weather"], labels[:, 29])
    return loss


@dataclasses.dataclass
class Reading:
    """What the classifier sees in one image."""

    objects: list[SceneObject]  # one per occupied cell, offset 0
    background: str


@torch.no_grad()
def read_images(classifier: AttributeClassifier, images: torch.Tensor, batch: int = 256, world: str = "v1") -> list:
    """Images (N, 3, 128, 128) in [-1, 1] -> what is in each: a `Reading` for the first world, a second-world
    `Scene` for "v2" (its colour None for a self-coloured kind, its time and weather None on a plain backdrop)."""
    if world != "v1":
        return _read_second_world(classifier, images, batch)
    device = next(classifier.parameters()).device
    readings = []
    for chunk in images.split(batch):
        out = classifier(chunk.to(device).float())
        kind = out["kind"].argmax(-1).cpu()  # (B, 9)
        colour = out["colour"].argmax(-1).cpu()
        size = out["size"].argmax(-1).cpu()
        bg = out["background"].argmax(-1).cpu()
        for b in range(len(chunk)):
            objects = [
                SceneObject(KINDS[kind[b, i] - 1], COLOURS[colour[b, i]], SIZES[size[b, i]], CELLS[i])
                for i in range(9)
                if kind[b, i] > 0
            ]
            readings.append(Reading(objects, BACKGROUNDS[bg[b]]))
    return readings


def _read_second_world(classifier: AttributeClassifier, images: torch.Tensor, batch: int) -> list:
    from atelier.world.v2.points import scene_from_labels
    from atelier.world.v2.vocab import BACKGROUNDS as PLACES
    from atelier.world.v2.vocab import KINDS as KINDS_V2
    from atelier.world.v2.vocab import PLAIN_BACKGROUNDS, SELF_COLOURED_KINDS

    self_coloured = torch.tensor([False] + [k in SELF_COLOURED_KINDS for k in KINDS_V2])  # by kind label, 0 = empty
    plain = torch.tensor([p in PLAIN_BACKGROUNDS for p in PLACES])
    device = next(classifier.parameters()).device
    readings = []
    for chunk in images.split(batch):
        out = {k: v.argmax(-1).cpu() for k, v in classifier(chunk.to(device).float()).items()}
        colour = torch.where(self_coloured[out["kind"]], -1, out["colour"])  # (B, 9)
        no_sky = plain[out["background"]][:, None]  # (B, 1)
        time = torch.where(no_sky, -1, out["time"][:, None])
        weather = torch.where(no_sky, -1, out["weather"][:, None])
        labels = torch.cat([out["kind"], colour, out["size"], out["background"][:, None], time, weather], dim=1)
        readings += [scene_from_labels(row) for row in labels.numpy()]  # (B, 30) -> B scenes
    return readings


def classifier_accuracy(readings: Sequence, scenes: Sequence) -> dict[str, float]:
    """Per-attribute accuracy of the readings against the true scenes. For the second world's scenes also time and
    weather (where the scene has them) and count: the share of the kinds drawn whose number of objects is read
    right; a colour is counted only where the object has one (not the rainbow)."""
    second = bool(scenes) and hasattr(scenes[0], "weather")
    names = ("kind", "colour", "size", "background") + (("time", "weather", "count") if second else ())
    hits, counts = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    for reading, scene in zip(readings, scenes, strict=True):
        truth = {o.cell: o for o in scene.objects}
        seen = {o.cell: o for o in reading.objects}
        for cell in CELLS:
            counts["kind"] += 1
            hits["kind"] += (truth[cell].kind if cell in truth else None) == (seen[cell].kind if cell in seen else None)
            if cell in truth:
                if truth[cell].colour is not None:
                    counts["colour"] += 1
                    hits["colour"] += cell in seen and seen[cell].colour == truth[cell].colour
                counts["size"] += 1
                hits["size"] += cell in seen and seen[cell].size == truth[cell].size
        counts["background"] += 1
        hits["background"] += reading.background == scene.background
        if second:
            for name in ("time", "weather"):
                if getattr(scene, name) is not None:
                    counts[name] += 1
                    hits[name] += getattr(reading, name) == getattr(scene, name)
            for kind in {o.kind for o in scene.objects}:
                counts["count"] += 1
                hits["count"] += sum(o.kind == kind for o in reading.objects) == sum(
                    o.kind == kind for o in scene.objects
                )
    return {k: hits[k] / max(1, counts[k]) for k in hits}


def kind_confusions(readings: Sequence, scenes: Sequence, top: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent misreadings of a drawn object's kind in its cell: (true kind, kind read or "empty", times)."""
    from collections import Counter

    wrong: Counter[tuple[str, str]] = Counter()
    for reading, scene in zip(readings, scenes, strict=True):
        seen = {tuple(o.cell): o.kind for o in reading.objects}
        for o in scene.objects:
            got = seen.get(tuple(o.cell), "empty")
            if got != o.kind:
                wrong[(o.kind, got)] += 1
    return [(a, b, n) for (a, b), n in wrong.most_common(top)]


def object_kind_accuracy(readings: Sequence[Reading], scenes: Sequence[Scene]) -> float:
    """Share of the drawn objects whose kind is read right in their cell (empty cells left out)."""
    hits = total = 0
    for reading, scene in zip(readings, scenes, strict=True):
        seen = {o.cell: o.kind for o in reading.objects}
        hits += sum(seen.get(o.cell) == o.kind for o in scene.objects)
        total += len(scene.objects)
    return hits / max(1, total)


@torch.no_grad()
def vae_round_trip(vae: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> encoded (posterior mean), decoded and rounded to 8 bits, as a generated PNG
    is; on the CPU. Read by the judge, these are the best a generated image can score, whatever the UNet does."""
    param = next(vae.parameters())
    out = []
    for chunk in images.split(batch):
        z = vae.encode(chunk.to(param.device, param.dtype)).mean
        out.append(vae.decode(z).float().cpu())
    return uint8_to_signed(signed_to_uint8(torch.cat(out)))  # clamped to [-1, 1], then on the 8-bit grid


# --------------------------------------------------------------------------------------------------------------
# Scoring a reading against what a prompt asked for
# --------------------------------------------------------------------------------------------------------------

POINTS = ("kind", "colour", "size", "cell", "background", "relation")  # the kinds of points a prompt can earn


def _pairings(reading: Reading, spec: SceneSpec, chosen: tuple = ()) -> Iterator[tuple[SceneObject | None, ...]]:
    """Every way to give each requested object a distinct seen object of its kind, or None (not found)."""
    if len(chosen) == len(spec.objects):
        yield chosen
        return
    want = spec.objects[len(chosen)]
    for got in reading.objects:
        if got.kind == want.kind and all(got is not c for c in chosen):
            yield from _pairings(reading, spec, (*chosen, got))
    yield from _pairings(reading, spec, (*chosen, None))


def _points(reading: Reading, spec: SceneSpec, paired: tuple[SceneObject | None, ...]) -> dict[str, list[int]]:
    """{point kind: [scored, possible]} for one pairing of requested objects with seen ones."""
    points = {name: [0, 0] for name in POINTS}

    def check(name: str, ok: bool) -> None:
        points[name][0] += bool(ok)
        points[name][1] += 1

    for want, got in zip(spec.objects, paired, strict=True):
        check("kind", got is not None)
        check("colour", got is not None and got.colour == want.colour)
        if want.size is not None:
            check("size", got is not None and got.size == want.size)
        if want.cell is not None:
            check("cell", got is not None and tuple(got.cell) == tuple(want.cell))
    if spec.background is not None:
        check("background", reading.background == spec.background)
    for rel in spec.relations:
        a, b = paired[rel.subject], paired[rel.object]
        check("relation", a is not None and b is not None and rel.relation in relations_between(a, b))
    return points


def score_points(reading: Reading, spec: SceneSpec) -> dict[str, tuple[int, int]]:
    """{point kind: (scored, possible)} for one generated image and the spec of its prompt.

    Each requested object is paired with a distinct seen object of its kind, choosing the pairing that scores
    most in all (relations included); a missing object scores none of its points, and so do the relations that
    name it. Objects the prompt did not ask for cost nothing.
    """
    best = max(
        (_points(reading, spec, p) for p in _pairings(reading, spec)), key=lambda pts: sum(s for s, _ in pts.values())
    )
    return {name: (s, p) for name, (s, p) in best.items()}


def points_of(world: str = "v1") -> tuple[tuple[str, ...], Callable[..., dict[str, tuple[int, int]]]]:
    """`world`'s kinds of points and its `score_points(reading, spec)`: this module's for the first world,
    atelier/world/v2/points.py's (with count, time and weather) for the second."""
    if world == "v1":
        return POINTS, score_points
    from atelier.world.v2 import points

    return points.POINTS, points.score_points


def score(reading: Reading, spec: SceneSpec, world: str = "v1") -> tuple[int, int]:
    """(points scored, points possible) for one generated image and the spec of its prompt."""
    points = points_of(world)[1](reading, spec).values()
    return sum(s for s, _ in points), sum(p for _, p in points)


def adherence(readings: Sequence[Reading], specs: Sequence[SceneSpec], world: str = "v1") -> float:
    """The fraction of all stated attributes that the images show (points scored / points possible)."""
    scored = possible = 0
    for reading, spec in zip(readings, specs, strict=True):
        s, p = score(reading, spec, world)
        scored, possible = scored + s, possible + p
    return scored / max(1, possible)


def adherence_by_point(
    readings: Sequence[Reading], specs: Sequence[SceneSpec], world: str = "v1"
) -> dict[str, float | None]:
    """Adherence per kind of point (first world: kind, colour, size, cell, background, relation); None where none
    was asked."""
    names, score_fn = points_of(world)
    totals = {name: [0, 0] for name in names}
    for reading, spec in zip(readings, specs, strict=True):
        for name, (s, p) in score_fn(reading, spec).items():
            totals[name][0] += s
            totals[name][1] += p
    return {name: (s / p if p else None) for name, (s, p) in totals.items()}


def named_kinds(spec) -> set[str]:
    """The kinds a prompt's spec names: its objects' (first world) or its groups' (second)."""
    return {part.kind for part in (spec.groups if hasattr(spec, "groups") else spec.objects)}


def kinds_drawn(readings: Sequence, specs: Sequence, world: str = "v1") -> list[bool]:
    """Per image: does it draw every kind its prompt names? True when all its kind points are scored: in the first
    world each named object is found (two circles asked, two seen), in the second each named group has at least one
    object of its kind (its count is a point apart)."""
    score_fn = points_of(world)[1]
    out = []
    for reading, spec in zip(readings, specs, strict=True):
        scored, possible = score_fn(reading, spec)["kind"]
        out.append(scored == possible)
    return out


def unnamed_kind_seen(readings: Sequence, specs: Sequence) -> list[bool]:
    """Per image: does it show a kind its prompt does not name? (a dog for "a cat": something unrelated drawn)."""
    return [bool({o.kind for o in r.objects} - named_kinds(spec)) for r, spec in zip(readings, specs, strict=True)]


# --------------------------------------------------------------------------------------------------------------
# Colour and contrast: numbers of the pixels alone, no judge
# --------------------------------------------------------------------------------------------------------------


def colourfulness(images: np.ndarray) -> np.ndarray:
    """The colourfulness M of each uint8 image (N, H, W, 3), Hasler and Süsstrunk 2003 ("Measuring colourfulness
    in natural images"), on 0-255 values: (N,) float64.

        rg = R - G,   yb = (R + G) / 2 - B                       two opponent colour axes, per pixel
        M  = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)

    0 for any grey image. Their readers' scale: 15 slightly, 33 moderately, 45 averagely, 59 quite, 82 highly and
    109 extremely colourful. A uniform pure red image scores 0.3 * sqrt(255^2 + 127.5^2) = 85.5.
    """
    rgb = np.asarray(images, np.float64)  # (N, H, W, 3)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, (r + g) / 2 - b  # (N, H, W) each
    spread = np.sqrt(rg.std(axis=(1, 2)) ** 2 + yb.std(axis=(1, 2)) ** 2)
    offset = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return spread + 0.3 * offset


def rms_contrast(images: np.ndarray) -> np.ndarray:
    """The RMS contrast of each uint8 image (N, H, W, 3): the standard deviation of its luma (Rec. 601 weights) on
    a 0-1 scale, (N,) float64. 0 for a uniform image, 0.5 for one half black and half white."""
    luma = np.asarray(images, np.float64) @ np.array([0.299, 0.587, 0.114]) / 255  # (N, H, W)
    return luma.std(axis=(1, 2))


# --------------------------------------------------------------------------------------------------------------
# Fréchet distance on classifier features
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def features(classifier: AttributeClassifier, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] -> (N, C) float64: the classifier backbone's feature map, averaged."""
    device = next(classifier.parameters()).device
    out = [classifier.backbone(c.to(device).float()).mean(dim=(2, 3)).double().cpu() for c in images.split(batch)]
    return torch.cat(out).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the FID formula on any features (N, D) and (M, D)."""
    if len(a) < 2 or len(b) < 2 or a.shape[1:] != b.shape[1:]:
        raise InputError(
            f"A Fréchet distance needs two sets of at least 2 feature vectors of one size, got {a.shape} and {b.shape}."
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # (S_a S_b)^1/2 via the symmetric form S_a^1/2 S_b S_a^1/2, whose square root has the same trace.
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ s_b @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt)


def _render_labelled_chunk(
    seed: int, start: int, count: int, size: int, train: bool, world: str = "v1"
) -> tuple[np.ndarray, np.ndarray, list]:
    w = get_world(world)
    if world == "v1":
        labeller, width = scene_labels, 28
    else:
        from atelier.world.v2.points import LABEL_WIDTH
        from atelier.world.v2.points import scene_labels as labeller

        width = LABEL_WIDTH
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty((count, width), np.int64)
    scenes = []
    for j in range(count):
        scene = w.sample_scene(random.Random(seed * 1_000_003 + start + j), train=train)
        images[j], labels[j] = w.render(scene, size), labeller(scene)
        scenes.append(scene)
    return images, labels, scenes


def render_labelled(
    seed: int,
    count: int,
    size: int = 128,
    workers: int = 1,
    start: int = 0,
    train: bool = False,
    world: str = "v1",
) -> tuple[np.ndarray, np.ndarray, list[Scene]]:
    """`count` random scenes of `world` as uint8 images (N, size, size, 3), their labels (N, 28), or (N, 30) for
    the second world (atelier/world/v2/points.py), and the scenes.

    By default every kind-colour pair may appear, held-out ones included (the classifier must know them all);
    `train=True` draws only training pairs, as the English eval prompts do (the reference set of the Fréchet
    distance).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    step = max(1, min(4096, -(-count // max(1, workers))))
    jobs = [(seed, s, min(step, start + count - s), size, train, world) for s in range(start, start + count, step)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            parts = list(pool.map(_render_labelled_chunk, *zip(*jobs, strict=True)))
    else:
        parts = [_render_labelled_chunk(*job) for job in jobs]
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        [s for p in parts for s in p[2]],
    )


# --------------------------------------------------------------------------------------------------------------
# Prompt sets
# --------------------------------------------------------------------------------------------------------------


def prompt_pairs(
    n: int, seed: int, held_out: bool = False, world: str = "v1", *, unknown_word: bool = False
) -> list[tuple[str, str, SceneSpec]]:
    """n (English, French, spec) triples of `world`: the same scene said the same way in both languages.

    With `unknown_word=True` (second world only) each prompt carries one word that no training caption holds
    (v2.vocab.DISTRACTOR_WORDS["held_out"]: "un chat astronaute"), which states nothing; scene k is the one the
    same `seed` gives without it, so both sets name the same kinds (the rest of the wording differs).
    """
    if unknown_word and world == "v1":
        raise InputError("The first world (v1) has no unknown-word prompts; expected world 'v2' for unknown_word.")
    w = get_world(world)
    extra = {"distractors": "held_out", "p_distractor": 1.0} if unknown_word else {}
    out = []
    for k in range(n):
        rng = random.Random(seed * 1_000_003 + k)
        scene = w.sample_scene(rng, train=not held_out, held_out_only=held_out)
        wording = rng.randrange(2**31)
        en, spec = w.describe(scene, "en", random.Random(wording), **extra)
        fr, spec_fr = w.describe(scene, "fr", random.Random(wording), **extra)
        assert spec == spec_fr, "describe must make the same choices in both languages"
        out.append((en, fr, spec))
    return out
