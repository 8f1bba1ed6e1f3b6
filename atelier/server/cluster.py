"""`atelier serve --ray [ADDRESS] --workers N`: the prompt queue's worker when its batches run on Ray actors.

    PromptQueue ── up to `slots` batches at once ──► ClusterWorker.run(batch)
                                                       │ txt2img (a merge key): the batch, each part with its
                                                       │ prompt, to RayPool.run ──► an actor's ActorWorker:
                                                       │ the merged txt2img worker on the actor's own models
                                                       │ (PartImage per part: pixels and names, no file)
                                                       └ any other graph: this process's graph executor, as today

What stays on the server: the scheduler (turns, caps, merging), the files, the history, the WebSockets. A worker
sends back one `PartImage` per part (a PIL image, pickled: its pixels) and the events of the run (a step, its
preview, "loading" a model); the prompt queue saves the PNGs exactly as it does for its in-process worker, so the
files are byte for byte the same whichever worker made them, given the same torch thread count: a CPU worker
samples on one thread, and a matrix product split over 2 threads adds in another order (other last bits), so
compare with an in-process server on one thread (OMP_NUM_THREADS=1; tests/server/test_classroom_ray.py).

Graphs that are not txt2img (node-editor graphs, img2img...) still run in this process, one at a time: their
nodes read and write files (LoadImage, SaveImage), which live here.

Where Ray runs:
- `--ray` alone: a local Ray instance; one worker per GPU, or `--workers N` CPU workers (1 CPU and 1 torch
  thread each: N workers on N cores run N batches side by side).
- `--ray auto` (a cluster this machine joined with `ray start`) or `--ray ray://HOST:10001`: an existing
  cluster. Each of its machines needs Atelier installed (the same version) and the models in the same data
  folder path as the server's.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atelier.errors import AtelierError, InputError
from atelier.server.batch_worker import MergedTxt2ImgWorker, Models, PartImage, executor_loader
from atelier.server.merging import ImageOf, txt2img
from atelier.server.scheduler import Batch

if TYPE_CHECKING:
    from atelier.graph.registry import NodeRegistry
    from atelier.server.ray_workers import RayPool

RAY_MISSING = (
    "Ray n'est pas installé : installez-le avec pip install 'atelier[cluster]' pour utiliser --ray. / "
    "Ray is not installed: install it with pip install 'atelier[cluster]' to use --ray."
)


@dataclasses.dataclass(frozen=True)
class PromptImage(ImageOf):
    """A part's payload as it travels to an actor: image `index` of `of` of a prompt, with the prompt itself
    (the actor has no queue to look it up in) and whether its client wants live previews."""

    prompt: dict
    previews: bool


def with_prompts(batch: Batch, prompt_of: Callable[[str], dict], previews_of: Callable[[str], bool]) -> Batch:
    """The batch as an actor needs it: each part's payload a PromptImage (same number, parts and owners)."""
    def travelling(part: Any) -> Any:
        image = part.payload
        payload = PromptImage(image.prompt_id, image.index, image.of, prompt_of(part.job_id), previews_of(part.job_id))
        return dataclasses.replace(part, payload=payload)

    parts = tuple(travelling(part) for part in batch.parts)
    return dataclasses.replace(batch, parts=parts)


def checkpoint_of(batch: Batch) -> str | None:
    """The checkpoint a txt2img batch samples with (RayPool's placement: to a worker that has it loaded)."""
    found = txt2img(batch.parts[0].payload.prompt)
    return None if found is None else found.checkpoint


# ---- inside each actor ----


class ActorWorker:
    """What runs in each Ray actor: the merged txt2img worker (batch_worker.py) on the actor's own copy of the
    models, loaded once through its own graph executor's node cache and reused.

    `emit` streams events back to the server: ("loading", checkpoint) before a first load; ("step", row, step,
    steps, preview) once per prompt of the batch and per step, preview a PIL image for a client that wants one
    (else None).
    """

    def __init__(self, emit: Callable[[Any], None], make_registry: Callable[[], NodeRegistry],
                 batch_images: int) -> None:  # fmt: skip
        from atelier.graph.executor import Executor  # torch: inside the actor only

        self.emit, self.batch_images = emit, batch_images
        self._load = executor_loader(Executor(make_registry()))
        self._loaded: dict[str, Models] = {}
        self._batch: Batch | None = None
        self._models: Models | None = None
        self.merged = MergedTxt2ImgWorker(self._models_of, self._prompt_of, batch_images, self._on_step)

    def loaded(self) -> set[str]:
        return set(self._loaded)

    def run(self, batch: Batch) -> Sequence[PartImage]:
        self._batch = batch
        return self.merged.run(batch)

    def _models_of(self, name: str) -> Models:
        if name not in self._loaded:
            self.emit(("loading", name))
            self._loaded[name] = self._load(name)
        self._models = self._loaded[name]
        return self._models

    def _prompt_of(self, prompt_id: str) -> dict:
        assert self._batch is not None
        return next(p.payload.prompt for p in self._batch.parts if p.payload.prompt_id == prompt_id)

    def _on_step(self, rows: Sequence[int], step: Any) -> None:
        from atelier.graph.kit import preview_map, step_preview

        assert self._batch is not None and self._models is not None
        parts = self._batch.parts
        to_rgb = None
        for j, row in enumerate(rows):
            payload = parts[row].payload
            if any(p.payload.prompt_id == payload.prompt_id for p in parts[:row]):
                continue  # a split prompt reports once per step, as the in-process worker does
            preview = None
            if payload.previews:
                to_rgb = to_rgb if to_rgb is not None else preview_map(self._models.model)
                if to_rgb is not None:
                    preview = step_preview(to_rgb, step.denoised[j : j + 1])  # (1, 4, h, w) -> a PIL image
            self.emit(("step", row, step.index + 1, step.total, preview))


def actor_worker(emit: Callable[[Any], None], make_registry: Callable[[], NodeRegistry],
                 batch_images: int) -> ActorWorker:  # fmt: skip
    """RayPool's make_worker (with functools.partial for the last two): picklable, built in each actor."""
    return ActorWorker(emit, make_registry, batch_images)


# ---- on the server ----


class ClusterWorker:
    """The prompt queue's worker with Ray: txt2img batches on the pool's actors, `slots` of them at once; any
    other graph through `run_graph` in this process (one at a time: one executor)."""

    def __init__(self, pool: RayPool, run_graph: Callable[[str], Any]) -> None:
        self.pool, self.run_graph = pool, run_graph
        self._here = threading.Lock()
        self.prompt_of: Callable[[str], dict] = lambda prompt_id: {}
        self.previews_of: Callable[[str], bool] = lambda prompt_id: False

    @property
    def batch_images(self) -> int:
        return self.pool.batch_images

    @property
    def slots(self) -> int:
        return self.pool.slots

    @staticmethod
    def remote(batch: Batch) -> bool:
        """Whether a batch runs on an actor (and is answered with PartImages): any txt2img with a merge key,
        a lone one-image prompt too (its image is the same: batching.py)."""
        return batch.merge_key is not None

    def run(self, batch: Batch) -> Sequence[Any]:
        if not self.remote(batch):
            (part,) = batch.parts
            with self._here:
                return [self.run_graph(part.job_id)]
        return self.pool.run(with_prompts(batch, self.prompt_of, self.previews_of))

    def describe(self) -> list[dict]:
        return self.pool.describe()

    def add_worker(self) -> None:
        """One more actor (a GPU of a machine that joined the cluster with `ray start --address=...`, or another
        CPU worker): the queue's next turn sees one more slot and sends it waiting work."""
        self.pool.add_worker()

    def close(self) -> None:
        self.pool.shutdown()


def start_pool(
    make_worker: Callable[[Callable[[Any], None]], Any],
    address: str | None,
    workers: int | None,
    on_event: Callable[[Batch, Any], None],
    on_retry: Callable[[Batch, str], None],
) -> RayPool:
    """A RayPool on a local Ray instance (address None) or on the cluster at `address` ("auto", "ray://...").

    Locally the actors import Atelier from where this server does (PYTHONPATH), and Ray is told of at least as
    many CPUs as workers were asked for (more workers than cores share them: slower, not stuck)."""
    try:
        import ray
    except ImportError:
        raise AtelierError(RAY_MISSING, "ray_missing") from None
    if workers is not None and workers < 1:
        raise InputError(f"--workers expects a number of workers of at least 1, got {workers}.")
    from atelier.server.ray_workers import RayPool

    source = str(Path(__file__).resolve().parents[2])  # the folder that holds the atelier package
    runtime_env = {"env_vars": {"PYTHONPATH": source, "OMP_NUM_THREADS": "1"}}
    if address is None and not ray.is_initialized():
        cpus = max(os.cpu_count() or 1, workers or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env=runtime_env)  # fmt: skip
    return RayPool(make_worker, workers=workers, address=address, model_of=checkpoint_of, on_event=on_event,
                   on_retry=on_retry)  # fmt: skip
