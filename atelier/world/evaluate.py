"""Scoring the embedded model: does the image show what the prompt asked for?

An attribute classifier (encoders.AttributeClassifier), trained on rendered scenes whose contents are known,
reads a generated image back into a scene: per grid cell an object kind (or nothing), a colour and a size, plus
the background. A prompt's spec (captions.random_prompt) lists what it stated; each stated attribute is one point:

    per object: kind present, its colour, its size (if stated), its cell (if stated); the background (if stated);
    each spatial relation (if stated).

Adherence is the fraction of points scored. Image quality is a Fréchet distance (Heusel et al. 2017) between
generated and rendered images, computed on the classifier's pooled features instead of Inception's, reported
next to the same distance between two independent sets of rendered images (the floor it can reach).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from atelier.world.encoders import AttributeClassifier
from atelier.world.scene import Scene, SceneObject, SceneSpec, relations_between
from atelier.world.vocab import BACKGROUNDS, COLOURS, KINDS, SIZES

CELLS = [(r, c) for r in range(3) for c in range(3)]


def new_classifier() -> AttributeClassifier:
    return AttributeClassifier(len(KINDS), len(COLOURS), len(SIZES), len(BACKGROUNDS))


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


def classifier_loss(out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    kind, colour, size, bg = labels[:, :9], labels[:, 9:18], labels[:, 18:27], labels[:, 27]
    loss = F.cross_entropy(out["kind"].flatten(0, 1), kind.flatten())
    loss = loss + F.cross_entropy(out["colour"].flatten(0, 1), colour.flatten(), ignore_index=-1)
    loss = loss + F.cross_entropy(out["size"].flatten(0, 1), size.flatten(), ignore_index=-1)
    return loss + F.cross_entropy(out["background"], bg)


@dataclasses.dataclass
class Reading:
    """What the classifier sees in one image."""

    objects: list[SceneObject]  # one per occupied cell, offset 0
    background: str


@torch.no_grad()
def read_images(classifier: AttributeClassifier, images: torch.Tensor, batch: int = 256) -> list[Reading]:
    """Images (N, 3, 128, 128) in [-1, 1] -> what is in each."""
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
                for i in range(9) if kind[b, i] > 0
            ]
            readings.append(Reading(objects, BACKGROUNDS[bg[b]]))
    return readings


def classifier_accuracy(readings: Sequence[Reading], scenes: Sequence[Scene]) -> dict[str, float]:
    """Per-attribute accuracy of the readings against the true scenes."""
    hits = {"kind": 0, "colour": 0, "size": 0, "background": 0}
    counts = {"kind": 0, "colour": 0, "size": 0, "background": 0}
    for reading, scene in zip(readings, scenes, strict=True):
        truth = {o.cell: o for o in scene.objects}
        seen = {o.cell: o for o in reading.objects}
        for cell in CELLS:
            counts["kind"] += 1
            hits["kind"] += (truth[cell].kind if cell in truth else None) == (seen[cell].kind if cell in seen else None)
            if cell in truth:
                counts["colour"] += 1
                counts["size"] += 1
                hits["colour"] += cell in seen and seen[cell].colour == truth[cell].colour
                hits["size"] += cell in seen and seen[cell].size == truth[cell].size
        counts["background"] += 1
        hits["background"] += reading.background == scene.background
    return {k: hits[k] / max(1, counts[k]) for k in hits}


# --------------------------------------------------------------------------------------------------------------
# Scoring a reading against what a prompt asked for
# --------------------------------------------------------------------------------------------------------------


def _object_points(want, got: SceneObject) -> tuple[int, int]:
    """(points scored, points possible) for one requested object matched to one seen object."""
    possible, scored = 2, 1 + (got.colour == want.colour)  # kind (matched on kind), colour
    if want.size is not None:
        possible += 1
        scored += got.size == want.size
    if want.cell is not None:
        possible += 1
        scored += tuple(got.cell) == tuple(want.cell)
    return scored, possible


def score(reading: Reading, spec: SceneSpec) -> tuple[int, int]:
    """(points scored, points possible) for one generated image and the spec of its prompt.

    Each requested object is paired with a distinct seen object of its kind, choosing the pairing that scores
    most (a missing object scores 0 of its points); then the background and the relations are checked.
    """
    best: tuple[int, list[SceneObject | None]] = (-1, [])

    def assign(i: int, used: set[int], chosen: list[SceneObject | None], total: int) -> None:
        nonlocal best
        if i == len(spec.objects):
            if total > best[0]:
                best = (total, list(chosen))
            return
        want = spec.objects[i]
        options = [j for j, o in enumerate(reading.objects) if j not in used and o.kind == want.kind]
        for j in options:
            got = reading.objects[j]
            assign(i + 1, used | {j}, [*chosen, got], total + _object_points(want, got)[0])
        assign(i + 1, used, [*chosen, None], total)

    assign(0, set(), [], 0)
    scored, possible = 0, 0
    for want, got in zip(spec.objects, best[1], strict=True):
        s, p = _object_points(want, got) if got is not None else (0, _object_points(want, want)[1])
        scored, possible = scored + s, possible + p
    if spec.background is not None:
        possible += 1
        scored += reading.background == spec.background
    for rel in spec.relations:
        possible += 1
        a, b = best[1][rel.subject], best[1][rel.object]
        scored += a is not None and b is not None and rel.relation in relations_between(a, b)
    return scored, possible


def adherence(readings: Sequence[Reading], specs: Sequence[SceneSpec]) -> float:
    scored = possible = 0
    for reading, spec in zip(readings, specs, strict=True):
        s, p = score(reading, spec)
        scored, possible = scored + s, possible + p
    return scored / max(1, possible)


# --------------------------------------------------------------------------------------------------------------
# Fréchet distance on classifier features
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def features(classifier: AttributeClassifier, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    device = next(classifier.parameters()).device
    out = [classifier.backbone(c.to(device).float()).mean(dim=(2, 3)).double().cpu() for c in images.split(batch)]
    return torch.cat(out).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the FID formula on any features."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # (S_a S_b)^1/2 via the symmetric form S_a^1/2 S_b S_a^1/2, whose square root has the same trace.
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ s_b @ root_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt)


def _render_labelled_chunk(seed: int, start: int, count: int, size: int) -> tuple[np.ndarray, np.ndarray, list]:
    from atelier.world.scene import render, sample_scene

    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty((count, 28), np.int64)
    scenes = []
    for j in range(count):
        scene = sample_scene(random.Random(seed * 1_000_003 + start + j), train=False)  # all pairs, held-out too
        images[j], labels[j] = render(scene, size), scene_labels(scene)
        scenes.append(scene)
    return images, labels, scenes


def render_labelled(seed: int, count: int, size: int = 128, workers: int = 1, start: int = 0):
    """`count` random scenes (every kind-colour pair, held-out ones included: the classifier must know them all)
    as uint8 images (N, size, size, 3), their labels (N, 28) and the scenes."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    step = max(1, min(4096, -(-count // max(1, workers))))
    jobs = [(seed, s, min(step, start + count - s), size) for s in range(start, start + count, step)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            parts = list(pool.map(_render_labelled_chunk, *zip(*jobs, strict=True)))
    else:
        parts = [_render_labelled_chunk(*job) for job in jobs]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            [s for p in parts for s in p[2]])


# --------------------------------------------------------------------------------------------------------------
# Prompt sets
# --------------------------------------------------------------------------------------------------------------


def prompt_pairs(n: int, seed: int, held_out: bool = False) -> list[tuple[str, str, SceneSpec]]:
    """n (English, French, spec) triples: the same scene said the same way in both languages."""
    from atelier.world.captions import describe
    from atelier.world.scene import sample_scene

    out = []
    for k in range(n):
        rng = random.Random(seed * 1_000_003 + k)
        scene = sample_scene(rng, train=not held_out, held_out_only=held_out)
        wording = rng.randrange(2**31)
        en, spec = describe(scene, "en", random.Random(wording))
        fr, spec_fr = describe(scene, "fr", random.Random(wording))
        assert spec == spec_fr, "captions.describe must make the same choices in both languages"
        out.append((en, fr, spec))
    return out

