"""Whose image runs next: fair turns between learners, batches that share one sampling call, expected waits.

One GPU serves a room of 10-30 learners. A first-come-first-served queue lets one learner's 25-image grid hold
everybody else for minutes. The scheduler orders the work instead; it never runs any of it.

    submit(owner, job_id, parts) ─► waiting parts, per owner, in the owner's order
                                            │  take(): round-robin between owners; parts with the same
                                            ▼  merge key join the leader's batch, up to the worker's size
    worker.run(batch) ◄──────────────── Batch ──► finish(batch): durations feed the expected waits

- A job has an owner: a learner's id in classroom mode, `LOCAL_OWNER` for everybody otherwise. With one owner,
  `take` returns the jobs in their order (`order`, then arrival): exactly today's FIFO by queue number.
- A job is cut into parts, one image each when its graph allows (merging.py decides), so a 25-image job gets one
  image in per round like everybody else's single images. Round-robin between sources is Nagle's fair queueing
  ("On packet switches with infinite storage", 1987): an owner who asks for a lot waits for their own parts, not
  for everybody's.
- Each owner's waiting images are capped (`max_waiting_images`); past the cap, `submit` raises `QueueFull`, whose
  sentence exists in English and in French.
- Batches: the leader's part and every waiting part with the same merge key (same model, size, steps, sampler...;
  see merging.py) run as one sampling call, up to `batch_images`. Other owners join in round-robin order, one part
  per owner per round, and only with the next part they would have run anyway, so nobody's order changes.
- Expected wait: the batches ahead are planned exactly as `take` will pick them (if nobody else submits), and each
  is priced at the recent seconds per image (a moving average over the last `window` batches).
- Pause/resume: a paused scheduler hands out nothing; the running batch finishes.
- Workers: anything with `batch_images` and `run(batch) -> results` (the `Worker` protocol); `serve` is the loop
  that feeds one. A worker on another machine (Ray) only needs to receive a Batch and send back its results.

No torch, no aiohttp: every decision here is a plain function of the waiting parts, tested without a model.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from atelier.errors import AtelierError, InputError

log = logging.getLogger("atelier.server")

LOCAL_OWNER = "local"  # the one owner of every job when the server is not in classroom mode


# The cap's sentences: "more" when the owner's waiting images would pass the cap, "too_big" when one job does.
QUEUE_FULL_SENTENCES = {
    "en": {
        "more": "You already have {waiting} images waiting and the limit is {limit} per learner: wait for some "
        "to finish before asking for {asked} more.",
        "too_big": "This asks for {asked} images and the limit is {limit} waiting images per learner: ask for "
        "at most {limit} at a time.",
    },
    "fr": {
        "more": "Vous avez déjà {waiting} images en attente et la limite est de {limit} par personne : attendez "
        "que certaines soient terminées avant d'en demander {asked} de plus.",
        "too_big": "Cette demande compte {asked} images et la limite est de {limit} images en attente par "
        "personne : demandez-en au plus {limit} à la fois.",
    },
}


class QueueFull(AtelierError):
    """An owner asked for more images than may wait for them. `str()` is English; `text("fr")` is French."""

    def __init__(self, asked: int, waiting: int, limit: int) -> None:
        self.asked, self.waiting, self.limit = asked, waiting, limit
        self.reason = "too_big" if asked > limit else "more"  # which of QUEUE_FULL_SENTENCES
        # key: the lab's own copy of the sentence, server.queue_full_<reason> in web/lab/i18n/<lang>.json
        super().__init__(self.text("en"), f"queue_full_{self.reason}", asked=asked, waiting=waiting, limit=limit)

    def text(self, lang: str) -> str:
        """The sentence in `lang` ("en" or "fr"; anything else gets English)."""
        sentences = QUEUE_FULL_SENTENCES.get(lang, QUEUE_FULL_SENTENCES["en"])
        return sentences[self.reason].format(asked=self.asked, waiting=self.waiting, limit=self.limit)


@dataclasses.dataclass(frozen=True)
class Part:
    """One piece of a job that runs in one batch: usually one image (a member of a sampling call).

    merge_key: parts with equal keys may share one sampling call (None: always alone). cost: what the part weighs
    in the expected waits, in "images" (1.0 for one image; a part that cannot be split counts its images).
    pixels: the pixels of one of its images (width x height; 0: not known), for a scheduler's `batch_pixels`.
    payload: what the worker needs to run it (the scheduler never looks).
    """

    job_id: str
    index: int  # the part's position in its job
    images: int = 1
    merge_key: Hashable | None = None
    cost: float = 1.0
    pixels: int = 0
    payload: Any = None


@dataclasses.dataclass
class Job:
    job_id: str
    owner: str
    parts: tuple[Part, ...]
    order: float  # the owner's jobs run by (order, arrival): the queue number, negative for "front"
    arrival: int
    done: int = 0  # parts finished

    @property
    def images(self) -> int:
        return sum(p.images for p in self.parts)


@dataclasses.dataclass(frozen=True)
class Batch:
    """What a worker runs in one go: parts that share a merge key (or one part alone), in the order taken."""

    number: int
    parts: tuple[Part, ...]
    owners: tuple[str, ...]  # owners[i] owns parts[i]

    @property
    def merge_key(self) -> Hashable | None:
        return self.parts[0].merge_key

    @property
    def images(self) -> int:
        return sum(p.images for p in self.parts)

    @property
    def cost(self) -> float:
        return sum(p.cost for p in self.parts)


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a waiting job stands. The seconds are None until a first batch has been timed."""

    batches_ahead: int  # batches that will start before the job's first part (the running ones included)
    starts_in: float | None  # seconds until its first part starts
    done_in: float | None  # seconds until its last part is finished


class Worker(Protocol):
    """Runs batches: on this machine (the graph executor, a batched sampler) or on another one."""

    batch_images: int  # the most images it takes in one batch, chosen for its device
    slots: int  # how many batches it runs at once: 1 in this process, one per worker of a Ray pool

    def run(self, batch: Batch) -> Sequence[Any]:
        """One result per part of the batch, in the batch's order."""
        ...


# A part waiting for its turn, with what orders it inside its owner's queue.
_Entry = tuple[tuple[float, int, int], Part]  # ((job order, job arrival, part index), part)


def _plan_batch(
    waiting: dict[str, list[_Entry]], rotation: Sequence[str], batch_images: int, batch_pixels: int | None = None
) -> list[tuple[str, int]]:
    """The parts the next batch takes, as (owner, position in that owner's waiting list), in the order taken.

    The first owner of the rotation leads with their next part. If it has a merge key, rounds go over the owners
    in rotation order; each round every owner may add their next part not taken yet, if it has the same key and
    the batch still has room: at most `batch_images` images, and at most `batch_pixels` pixels when both it and
    the leader's image size are known (at least one image). Nobody's parts are taken out of their order.
    """
    leader = rotation[0]
    first = waiting[leader][0][1]
    if first.merge_key is None:
        return [(leader, 0)]
    if batch_pixels and first.pixels:
        batch_images = min(batch_images, max(1, batch_pixels // first.pixels))
    taken: list[tuple[str, int]] = []
    count = dict.fromkeys(rotation, 0)  # parts taken so far from each owner
    images, added = 0, True
    while added:
        added = False
        for owner in rotation:
            queue = waiting[owner]
            if count[owner] < len(queue):
                part = queue[count[owner]][1]
                if part.merge_key == first.merge_key and (not taken or images + part.images <= batch_images):
                    taken.append((owner, count[owner]))
                    count[owner] += 1
                    images += part.images
                    added = True
    return taken


def _apply(waiting: dict[str, list[_Entry]], rotation: list[str], taken: list[tuple[str, int]]) -> list[Part]:
    """Remove the taken parts; owners served move to the back of the rotation, in the order they were served."""
    parts = [waiting[owner][i][1] for owner, i in taken]
    for owner in {owner for owner, _ in taken}:
        positions = {i for o, i in taken if o == owner}
        waiting[owner] = [e for i, e in enumerate(waiting[owner]) if i not in positions]
    served = list(dict.fromkeys(owner for owner, _ in taken))
    rotation[:] = [o for o in rotation if o not in served] + served
    rotation[:] = [o for o in rotation if waiting.get(o)]
    for owner in [o for o, q in waiting.items() if not q]:
        del waiting[owner]
    return parts


class Scheduler:
    """The waiting parts of every owner, the batches handed out, and the recent durations. Thread-safe."""

    def __init__(
        self,
        batch_images: int = 1,
        max_waiting_images: int | None = None,
        window: int = 20,
        batch_pixels: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(batch_images, bool) or not isinstance(batch_images, int) or batch_images < 1:
            raise InputError(f"The batch size must be a whole number of at least 1, got {batch_images!r}.")
        if max_waiting_images is not None and (not isinstance(max_waiting_images, int) or max_waiting_images < 1):
            raise InputError(f"The per-learner cap must be a whole number of at least 1, got {max_waiting_images!r}.")
        if batch_pixels is not None and (
            isinstance(batch_pixels, bool) or not isinstance(batch_pixels, int) or batch_pixels < 1
        ):
            raise InputError(f"The batch's pixel budget must be a whole number of at least 1, got {batch_pixels!r}.")
        self.batch_images = batch_images
        self.batch_pixels = batch_pixels  # None: only batch_images limits a batch
        self.max_waiting_images = max_waiting_images
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._waiting: dict[str, list[_Entry]] = {}  # owner -> parts in the owner's order
        self._rotation: list[str] = []  # owners with waiting parts; the first one leads the next batch
        self._running: dict[int, tuple[Batch, float]] = {}  # batch number -> (batch, start time)
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)  # (cost, seconds) of finished batches
        self._arrivals = itertools.count()
        self._numbers = itertools.count(1)
        self._paused = False
        self._cond = threading.Condition(threading.RLock())

    # ---- submitting and cancelling ----

    def submit(
        self, owner: str, job_id: str, parts: Sequence[Part], order: float | None = None, capped: bool = True
    ) -> Job:
        """Queue a job's parts for `owner`; QueueFull when they would take the owner past the cap.

        capped=False skips the cap (jobs that were waiting when the server stopped are queued again, all of them).
        """
        if not parts:
            raise InputError(f"Job {job_id!r} has no parts to run; expected at least one.")
        with self._cond:
            if job_id in self.jobs:
                raise InputError(f"Job {job_id!r} is already queued; expected a new id.")
            asked = sum(p.images for p in parts)
            waiting = self.waiting_images(owner)
            if capped and self.max_waiting_images is not None and waiting + asked > self.max_waiting_images:
                raise QueueFull(asked, waiting, self.max_waiting_images)
            arrival = next(self._arrivals)
            job = Job(job_id, owner, tuple(parts), arrival if order is None else order, arrival)
            self.jobs[job_id] = job
            queue = self._waiting.setdefault(owner, [])
            for part in job.parts:
                bisect.insort(queue, ((job.order, job.arrival, part.index), part), key=lambda e: e[0])
            if owner not in self._rotation:
                self._rotation.append(owner)  # a newcomer waits for one round, like everybody
            self._cond.notify_all()
            return job

    def cancel(self, job_id: str) -> bool:
        """Drop a job's waiting parts (a running part finishes). True when the job was waiting or running."""
        with self._cond:
            job = self.jobs.pop(job_id, None)
            if job is None:
                return False
            queue = [e for e in self._waiting.get(job.owner, []) if e[1].job_id != job_id]
            self._set_waiting(job.owner, queue)
            return True

    def cancel_owner(self, owner: str) -> list[str]:
        """Drop every waiting job of an owner (a learner removed from the class); returns their ids."""
        with self._cond:
            ids = [j.job_id for j in self.jobs.values() if j.owner == owner and self._is_waiting(j)]
            for job_id in ids:
                self.cancel(job_id)
            return ids

    def _set_waiting(self, owner: str, queue: list[_Entry]) -> None:
        if queue:
            self._waiting[owner] = queue
        else:
            self._waiting.pop(owner, None)
            if owner in self._rotation:
                self._rotation.remove(owner)

    def _is_waiting(self, job: Job) -> bool:
        return any(e[1].job_id == job.job_id for e in self._waiting.get(job.owner, []))

    # ---- what waits ----

    def waiting_images(self, owner: str) -> int:
        with self._cond:
            return sum(part.images for _, part in self._waiting.get(owner, []))

    def waiting_jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs with parts still waiting, in the order their first waiting part will run."""
        with self._cond:
            order = [p.job_id for batch in self._plan() for p in batch.parts]
            ids = [j for j in dict.fromkeys(order) if owner is None or self.jobs[j].owner == owner]
            return [self.jobs[j] for j in ids]

    # ---- the worker's side ----

    def take(self, batch_images: int | None = None) -> Batch | None:
        """The next batch, now marked running; None when paused or when nothing waits."""
        with self._cond:
            if self._paused or not self._rotation:
                return None
            taken = _plan_batch(self._waiting, self._rotation, batch_images or self.batch_images, self.batch_pixels)
            owners = tuple(owner for owner, _ in taken)
            parts = _apply(self._waiting, self._rotation, taken)
            batch = Batch(next(self._numbers), tuple(parts), owners)
            self._running[batch.number] = (batch, self.clock())
            return batch

    def wait_take(self, timeout: float, batch_images: int | None = None) -> Batch | None:
        """`take`, waiting up to `timeout` seconds for work (or for a resume)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._paused and self._rotation, timeout)
            return self.take(batch_images)

    def finish(self, batch: Batch) -> list[Job]:
        """The batch is done (whatever its results): records its duration; returns the jobs it completed."""
        with self._cond:
            _, started = self._running.pop(batch.number)
            self._recent.append((batch.cost, self.clock() - started))
            completed = []
            for part in batch.parts:
                job = self.jobs.get(part.job_id)
                if job is None:  # cancelled while its part ran
                    continue
                job.done += 1
                if job.done == len(job.parts):
                    completed.append(self.jobs.pop(part.job_id))
            self._cond.notify_all()
            return completed

    def running(self) -> list[Batch]:
        with self._cond:
            return [batch for batch, _ in self._running.values()]

    # ---- pause ----

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Hand out no more batches; the running ones finish."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # ---- expected waits ----

    def seconds_per_image(self) -> float | None:
        """Recent seconds per unit of cost (one image), over the last `window` batches; None before any."""
        with self._cond:
            cost = sum(c for c, _ in self._recent)
            return sum(s for _, s in self._recent) / cost if cost > 0 else None

    def _plan(self) -> list[Batch]:
        """The batches `take` would hand out from now on if nobody submitted or cancelled anything."""
        waiting = {owner: list(queue) for owner, queue in self._waiting.items()}
        rotation = list(self._rotation)
        plan = []
        while rotation:
            taken = _plan_batch(waiting, rotation, self.batch_images, self.batch_pixels)
            owners = tuple(owner for owner, _ in taken)
            plan.append(Batch(0, tuple(_apply(waiting, rotation, taken)), owners))
        return plan

    def positions(self) -> dict[str, Position]:
        """Every waiting job's place: batches ahead and expected seconds, with one worker taking batches in turn.

        The running batches are priced at the recent rate minus the time they have run already (at least 0).
        """
        with self._cond:
            rate = self.seconds_per_image()
            now = self.clock()
            ahead = len(self._running)
            elapsed = (
                0.0
                if rate is None
                else sum(max(0.0, batch.cost * rate - (now - started)) for batch, started in self._running.values())
            )
            result: dict[str, Position] = {}
            first: dict[str, tuple[int, float]] = {}
            for batch in self._plan():
                start = elapsed
                elapsed += 0.0 if rate is None else batch.cost * rate
                for part in batch.parts:
                    first.setdefault(part.job_id, (ahead, start))
                    batches, starts = first[part.job_id]
                    result[part.job_id] = Position(
                        batches, None if rate is None else starts, None if rate is None else elapsed
                    )
                ahead += 1
            return result

    def position(self, job_id: str) -> Position | None:
        """The job's place in the queue, or None when none of its parts waits."""
        return self.positions().get(job_id)


def serve(
    scheduler: Scheduler,
    worker: Worker,
    deliver: Callable[[Batch, Sequence[Any]], None],
    stop: threading.Event,
    poll: float = 0.5,
) -> None:
    """Feed `worker` until `stop` is set: take a batch, run it, report it finished, hand its results to `deliver`.

    The worker may be a proxy for another machine; the scheduler only ever sees batches go out and come back. A
    worker that raises gives every part of the batch the exception as its result.
    """
    while not stop.is_set():
        batch = scheduler.wait_take(poll, worker.batch_images)
        if batch is None:
            continue
        try:
            results: Sequence[Any] = worker.run(batch)
        except Exception as error:  # a bug in a worker must not stop the queue: every part gets the error
            log.exception("Batch %d failed in its worker.", batch.number)
            results = [error] * len(batch.parts)
        finally:
            scheduler.finish(batch)
        deliver(batch, results)
