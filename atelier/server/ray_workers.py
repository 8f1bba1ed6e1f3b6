"""Workers on a Ray cluster: one actor per device, behind the scheduler's narrow `Worker` interface.

A school outgrows one GPU. Rather than a home-made cluster, Atelier runs its workers as Ray actors (Moritz et al.,
"Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018): long-lived processes, one per GPU (or a
chosen number of CPU workers), each holding the models it has loaded, on this machine or on any machine of a
cluster. The server keeps everything else: the scheduler, the files, the history and the WebSockets.

    prompt queue: up to `slots` batches in flight ──► RayPool.run(batch), one thread each: a free actor,
                                                      preferably one with the batch's model loaded
          ▲                                               │ actor.run(batch): a stream of events, then results
          │ results (the server writes files, history)    ▼
          └──────────────────────────────────── events -> on_event (previews, progress); a worker lost
                                                 mid-batch: the batch once more, elsewhere (on_retry)

- What runs inside an actor is a *local worker*, built there by `make_worker(emit)` (a picklable function): the
  same kind of worker the server runs in-process. `emit(event)` streams an event back while the batch runs
  (a preview, a step); `run(batch)` returns one result per part; `loaded()` names the models it holds.
- The stream is a Ray streaming generator: events arrive as they happen, the results last, once. A batch whose
  actor dies (process killed, node lost) is run once more on another actor (Ray restarts the dead one, which loads
  its models again); `on_retry` tells the server so that learners read "re-running on another worker". A batch
  that loses its worker twice gets `WorkerLost` as the result of every part. Results are only ever delivered by
  the attempt that finished, so no learner receives an image twice.
- Placement keeps models warm: a batch goes to a free actor that has its model loaded, else to the free actor with
  the fewest models loaded (it loads it and says so through `emit`).
- `add_worker()` while the server runs: the new actor takes waiting work at once (`slots` grows by one).
- `serve(scheduler, deliver, stop)` is the same loop without a server (the tests of this module use it).

Ray is an optional extra (`pip install atelier[cluster]`); only server/cluster.py imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from atelier.errors import AtelierError, InputError
from atelier.server.runners import Runners
from atelier.server.scheduler import Batch, Scheduler

log = logging.getLogger("atelier.server")

Emit = Callable[[Any], None]


class LocalWorker(Protocol):
    """What runs inside an actor: the scheduler's `Worker` plus the names of the models it holds."""

    batch_images: int

    def run(self, batch: Batch) -> Sequence[Any]: ...

    def loaded(self) -> set[str]: ...


class WorkerLost(AtelierError):
    """A batch whose worker was lost twice: its parts fail with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The worker running this image was lost twice ({reason}); the image was not made.",
            "worker_lost",
            reason=reason,
        )


# What the actor's stream carries: (kind, value). "event": something emit() sent; "result": the batch's results;
# "error": the local worker raised (the batch's own fault, not the worker's: it is not re-run).
# "seconds": how long the local worker's run took inside the actor (sent just before the result).
_EVENT, _RESULT, _ERROR, _SECONDS = "event", "result", "error", "seconds"
_DONE = object()


class _Lost(Exception):
    """The actor went away during a batch (process killed, node lost); `kind` says how it showed."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Actor:
    """The body of each Ray actor: builds its local worker once, then runs the batches it is sent."""

    def __init__(self, make_worker: Callable[[Emit], LocalWorker], device: str, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self._events: queue.Queue = queue.Queue()
        self.worker = make_worker(self._events.put)
        self._runner = Runners("atelier-actor")  # one kept thread: CUDA's per-thread caches stay warm (runners.py)

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": self.device, "batch_images": self.worker.batch_images,
                "loaded": sorted(self.worker.loaded())}

    def run(self, batch: Batch):
        """A generator: the events emitted while the batch runs (in a thread of the actor), then its results."""
        outcome: list[tuple[str, Any]] = []

        def work() -> None:
            started = time.monotonic()
            try:
                results = list(self.worker.run(batch))
                outcome.extend([(_SECONDS, time.monotonic() - started), (_RESULT, results)])
            except Exception as error:
                outcome.extend([(_SECONDS, time.monotonic() - started), (_ERROR, error)])
            self._events.put(_DONE)

        self._runner.submit(work)
        while (event := self._events.get()) is not _DONE:
            yield _EVENT, event
        seconds, result = outcome  # one by one, not `yield from`: Ray's generators are driven by send(),
        yield seconds  # which a list's iterator lacks
        yield result


@dataclasses.dataclass
class _Slot:
    """One actor as the pool sees it."""

    number: int
    actor: Any  # the Ray actor handle
    batch_images: int
    loaded: set[str] = dataclasses.field(default_factory=set)
    busy: bool = False
    loading: str | None = None  # the model it is loading now (it said so with a ("loading", name) event)
    images_done: int = 0
    device: str = "cpu"
    pid: int | None = None


class RayPool:
    """Ray actors fed by the scheduler. `serve` is the loop; `describe` is what the instructor page shows.

    make_worker(emit) -> LocalWorker: built inside each actor (picklable: a module-level function or a partial).
    model_of(batch): the model a batch needs (None: any worker). on_event(batch, event): what an actor emitted.
    on_retry(batch, reason): a batch is run again on another worker after its worker was lost.
    runtime_env: Ray's, for the actors (e.g. {"env_vars": {"PYTHONPATH": ...}}: where they import Atelier from).
    """

    def __init__(
        self,
        make_worker: Callable[[Emit], LocalWorker],
        workers: int | None = None,
        address: str | None = None,
        model_of: Callable[[Batch], str | None] = lambda batch: None,
        on_event: Callable[[Batch, Any], None] = lambda batch, event: None,
        on_retry: Callable[[Batch, str], None] = lambda batch, reason: None,
        cpus_per_worker: int = 1,
        runtime_env: dict | None = None,
    ) -> None:
        import ray

        self._ray = ray
        if not ray.is_initialized():
            if address is None:  # a local instance: this machine's CPUs and GPUs
                ray.init(address="local", include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
            else:  # an existing cluster: "auto" or "ray://host:10001"
                ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self._gpu = gpus > 0 and workers is None
        count = workers if workers is not None else max(gpus, 1)
        if count < 1:
            raise InputError(f"--workers must be at least 1, got {count}.")
        self.make_worker, self.model_of, self.on_event, self.on_retry = make_worker, model_of, on_event, on_retry
        self.cpus_per_worker = cpus_per_worker
        self._lock = threading.Condition()
        self._slots: list[_Slot] = []
        self._closed = False
        for _ in range(count):
            self.add_worker()

    # ---- workers ----

    def add_worker(self) -> _Slot:
        """Start one more actor (a GPU each when the cluster has GPUs, else `cpus_per_worker` CPUs)."""
        resources = {"num_gpus": 1, "num_cpus": 1} if self._gpu else {"num_cpus": self.cpus_per_worker}
        remote = self._ray.remote(max_restarts=-1, max_task_retries=0, **resources)(_Actor)
        device = "cuda" if self._gpu else "cpu"
        actor = remote.remote(self.make_worker, device, None if self._gpu else self.cpus_per_worker)
        info = self._ray.get(actor.info.remote())
        with self._lock:
            slot = _Slot(len(self._slots), actor, info["batch_images"], set(info["loaded"]), device=device,
                         pid=info["pid"])
            self._slots.append(slot)
            self._lock.notify_all()
        log.info("Ray worker %d started (pid %d, %s).", slot.number, slot.pid, device)
        return slot

    @property
    def batch_images(self) -> int:
        with self._lock:
            return min(slot.batch_images for slot in self._slots)

    @property
    def slots(self) -> int:
        """How many batches may run at once: one per actor (the prompt queue keeps that many in flight)."""
        with self._lock:
            return len(self._slots)

    def describe(self) -> list[dict]:
        """Each worker: device, models loaded (and the one it is loading), busy or idle, images done (the
        instructor page's table)."""
        with self._lock:
            return [{"worker": s.number, "device": s.device, "pid": s.pid, "loaded": sorted(s.loaded),
                     "loading": s.loading, "busy": s.busy, "images_done": s.images_done} for s in self._slots]

    def pids(self) -> list[int | None]:
        return [slot.pid for slot in self._slots]

    # ---- one batch ----

    def run(self, batch: Batch) -> Sequence[Any]:
        """Run `batch` on a free actor and return one result per part (the scheduler's `Worker.run`), blocking.

        The caller keeps at most `slots` batches in flight, so a free actor is there (or about to be: the one a
        lost batch leaves is restarted by Ray). A batch whose worker is lost is run once more, on another actor
        when one is free; lost twice, every part gets `WorkerLost`.
        """
        lost_on: int | None = None
        reason = ""
        for attempt in (1, 2):
            slot = self._claim(batch, avoid=lost_on)
            started = time.monotonic()
            try:
                results, inside = self._attempt(slot, batch)
            except BaseException as error:
                if not isinstance(error, _Lost):  # a bug, not a loss: the actor is free again, the caller hears it
                    self._release(slot, images=0)
                    raise
                lost = error
                reason = f"worker {slot.number} lost: {lost.kind}"
                log.warning("Batch %d: %s (attempt %d).", batch.number, reason, attempt)
                self._release(slot, images=0)
                if attempt == 1:
                    self.on_retry(batch, reason)
                lost_on = slot.number
                continue
            self._release(slot, images=batch.images)
            around = time.monotonic() - started - inside  # what Ray adds: pickling, the stream, the refresh
            log.info("Ray batch %d on worker %d: %d images, %.2f s in the actor, %.3f s around it", batch.number,
                     slot.number, batch.images, inside, around)  # fmt: skip
            return results
        return [WorkerLost(reason)] * len(batch.parts)

    def _claim(self, batch: Batch, avoid: int | None) -> _Slot:
        """Wait for a free actor and mark it busy: one with the batch's model loaded, else the one with the
        fewest models (another than `avoid`, the one the batch was lost on, when there is a choice)."""
        model = self.model_of(batch)
        with self._lock:
            self._lock.wait_for(lambda: self._closed or any(not s.busy for s in self._slots))
            if self._closed:
                raise WorkerLost("the server is stopping")
            free = [s for s in self._slots if not s.busy]
            candidates = [s for s in free if s.number != avoid] or free
            warm = [s for s in candidates if model is not None and model in s.loaded]
            slot = (warm or sorted(candidates, key=lambda s: len(s.loaded)))[0]
            slot.busy = True
            return slot

    def _release(self, slot: _Slot, images: int) -> None:
        self._refresh(slot)
        with self._lock:
            slot.busy, slot.loading = False, None
            slot.images_done += images
            self._lock.notify_all()

    def _attempt(self, slot: _Slot, batch: Batch) -> tuple[Sequence[Any], float]:
        """The actor's stream: events to `on_event` as they come, then the results and the seconds the local
        worker took; `_Lost` if the actor went away."""
        ray = self._ray
        results: Sequence[Any] | None = None
        inside = 0.0
        try:
            for ref in slot.actor.run.options(num_returns="streaming").remote(batch):
                kind, value = ray.get(ref)
                if kind == _EVENT:
                    if isinstance(value, tuple) and value[:1] == ("loading",):  # ("loading", model name)
                        slot.loading = value[1]
                    self.on_event(batch, value)
                elif kind == _SECONDS:
                    inside = value
                elif kind == _RESULT:
                    results = value
                else:  # the local worker raised: every part gets the error, as scheduler.serve does
                    results = [value] * len(batch.parts)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as lost:
            raise _Lost(type(lost).__name__) from lost
        if results is None:
            raise _Lost("its stream ended before its results")
        return results, inside

    # ---- the loop ----

    def serve(self, scheduler: Scheduler, deliver: Callable[[Batch, Sequence[Any]], None],
              stop: threading.Event, poll: float = 0.2) -> None:
        """Until `stop` is set: whenever fewer batches run than there are actors, take the scheduler's next batch
        and run it in a thread of its own (`run`), then `scheduler.finish` and `deliver` it."""
        in_flight = [0]

        def one(batch: Batch) -> None:
            try:
                results = self.run(batch)
            finally:
                scheduler.finish(batch)
                with self._lock:
                    in_flight[0] -= 1
                    self._lock.notify_all()
            deliver(batch, results)

        while not stop.is_set():
            with self._lock:
                if not self._lock.wait_for(lambda: in_flight[0] < len(self._slots), poll):
                    continue
            batch = scheduler.wait_take(poll, self.batch_images)
            if batch is None:
                continue
            with self._lock:
                in_flight[0] += 1
            threading.Thread(target=one, args=(batch,), daemon=True, name=f"ray-batch-{batch.number}").start()

    def _refresh(self, slot: _Slot) -> None:
        """What the actor holds now (after a restart: nothing yet). After a loss this waits for Ray to restart the
        actor (the slot stays busy meanwhile: a batch sent to a restarting actor would fail as lost)."""
        try:
            info = self._ray.get(slot.actor.info.remote(), timeout=120)
        except Exception:
            slot.loaded = set()
            return
        slot.loaded, slot.pid = set(info["loaded"]), info["pid"]

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for slot in self._slots:
            self._ray.kill(slot.actor)
        self._slots.clear()
