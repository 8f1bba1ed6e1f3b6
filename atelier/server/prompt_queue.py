"""The prompt queue and its worker: one thread that takes the scheduler's batches and hands them to a worker.

    POST /prompt ──► PromptQueue.put ──► Scheduler.submit (parts, per owner) ──► worker thread: Scheduler.take
                          │                                                         │
                          └── status broadcast (with each person's           Worker.run(batch): the graph
                              positions and expected waits)                  Executor for a prompt alone, or one
                                                                             sampling call for merged txt2img parts
                                                                             (batch_worker.py); then PNGs, history
                                                                             and WebSocket messages per prompt

Every prompt goes through the scheduler (scheduler.py). Without classroom mode everybody is one owner,
`LOCAL_OWNER`, and the scheduler's order is the queue's numbers: today's FIFO. In classroom mode each learner is an
owner: turns round-robin, a cap per learner, big txt2img jobs cut into one-image parts (merging.py), and parts of
several learners with the same settings share one sampling call. Each prompt keeps its own PromptListener, so its
messages go only to its own client, whichever batch its images were made in.

What a node sends while it runs reaches the editor like this (see executor.py for the listener calls):
  ctx.progress(v, n)  -> "progress" {value, max, prompt_id, node} and "progress_state"
  ctx.preview(image)  -> a binary preview frame (image: a PIL image, or encoded JPEG/PNG bytes), at most 512 px,
                         only when the prompt asked for previews (see `wants_previews`)
  ctx.send_image(png) -> the same binary frame with the whole image, always (SaveImageWebsocket)
  NodeOutput(ui=...)  -> "executed" {node, display_node, output: ui, prompt_id}, and the history's outputs
A node that raises ends its prompt with "execution_error"; the worker then moves on to the next prompt.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from atelier.errors import AtelierError
from atelier.graph.executor import ExecutionListener, Executor, normalize_prompt
from atelier.server.files import encode_png
from atelier.server.hub import Hub
from atelier.server.merging import Txt2Img, runs_merged, txt2img, whole
from atelier.server.runners import Runners
from atelier.server.scheduler import LOCAL_OWNER, Batch, Part, Position, Scheduler, Worker
from atelier.server.store import PromptRecord, PromptStore, now_ms

log = logging.getLogger("atelier.server")

PREVIEW_MAX_SIDE = 512  # previews are shrunk to this size before they are sent (they are only a glimpse)

# extra_data.preview_method, ComfyUI's LatentPreviewMethod: whether the client wants live previews of the sampler's
# x0 estimate, and drawn how. Atelier draws a preview one way only, the latent -> RGB linear map (kit.py), so
# every method but "none" gets that ("taesd" included: the tiny VAE is not in Atelier). "default", or no
# preview_method at all, means the server's --preview-method, "none" unless told otherwise, as in ComfyUI: an API
# client that only wants its image does not receive 20 JPEGs first. The node editor sends its own setting
# (Comfy.Execution.PreviewMethod, which settings.py serves as "auto") and the lab asks for "auto" itself.
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")


def wants_previews(extra_data: dict | None, server_default: str) -> bool:
    """Whether a prompt's sampler previews are sent: its extra_data.preview_method, else the server's default."""
    asked = (extra_data or {}).get("preview_method")
    if isinstance(asked, str) and asked.lower() in PREVIEW_METHODS:
        return asked.lower() != "none"
    if asked not in (None, "default"):
        log.warning("Unknown preview_method %r; using the server's default, %r.", asked, server_default)
    return server_default != "none"


def encode_preview(image: Any) -> tuple[bytes, str] | None:
    """(bytes, mime type) for a preview: a PIL image becomes a JPEG; JPEG/PNG bytes pass through; else None."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if data.startswith(b"\x89PNG"):
            return data, "image/png"
        if data.startswith(b"\xff\xd8"):
            return data, "image/jpeg"
        return None
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
        img.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "image/jpeg"
    return None


# An absolute path (POSIX or Windows) of at least two components; its last component is kept.
_ABSOLUTE_PATH = re.compile(r"""(?<![\w.~-])(?:[A-Za-z]:[\\/]|/)(?:[^\s'"<>|:;,()\\/]+[\\/])+([^\s'"<>|:;,()\\/]*)""")


def without_paths(text: str) -> str:
    """`text` with each absolute path cut to its last name: "No such file: '/home/ana/atelier-data/models/x.ckpt'"
    -> "No such file: '.../x.ckpt'". Where the server keeps its files is no business of a client's."""
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(1), text)


def error_for_client(error: dict) -> dict:
    """An execution_error payload as a client may see it: no traceback (it is in the server log), no paths."""
    inputs = error.get("current_inputs") or {}
    return {
        **error,
        "exception_message": without_paths(str(error.get("exception_message", ""))),
        "traceback": [],
        "current_inputs": {
            name: [without_paths(v) if isinstance(v, str) else v for v in values] for name, values in inputs.items()
        },
    }


class PromptListener(ExecutionListener):
    """Turns executor events into ComfyUI WebSocket messages for one prompt, and keeps its history messages."""

    def __init__(self, hub: Hub, rec: PromptRecord, store: PromptStore, previews: bool = True) -> None:
        self.hub = hub
        self.rec = rec
        self.store = store
        self.sid = rec.client_id
        self.previews = previews  # whether sampler previews are sent (wants_previews)
        self.states: dict[str, dict] = {}  # node id -> its progress_state entry

    def _send(self, event: str, data: dict, keep: bool = False) -> None:
        data = {**data, "prompt_id": self.rec.prompt_id}
        if keep:  # ComfyUI's history keeps the start, cached and end messages
            self.rec.messages.append([event, data])
        self.hub.send(event, data, self.sid)

    def _progress_state(self, node_id: str, value: float, total: float, state: str) -> None:
        self.states[node_id] = {
            "value": value,
            "max": total,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.rec.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        self._send("progress_state", {"nodes": dict(self.states)})

    def _finish_running(self) -> None:
        for node_id, entry in self.states.items():
            if entry["state"] == "running":
                self.states[node_id] = {**entry, "state": "finished", "value": entry["max"]}

    def execution_start(self) -> None:
        self._send("execution_start", {"timestamp": now_ms()}, keep=True)

    def execution_cached(self, node_ids: list[str]) -> None:
        self._send("execution_cached", {"nodes": list(node_ids), "timestamp": now_ms()}, keep=True)

    def executing(self, node_id: str) -> None:
        self._finish_running()
        self._send("executing", {"node": node_id, "display_node": node_id})
        self._progress_state(node_id, 0, 1, "running")

    def progress(self, node_id: str, value: float, total: float) -> None:
        self._send("progress", {"value": value, "max": total, "node": node_id})
        self._progress_state(node_id, value, total, "running")

    def preview(self, node_id: str, image: Any) -> None:
        if not self.previews:
            return
        try:
            encoded = encode_preview(image() if callable(image) else image)
        except Exception:  # a preview is a courtesy: never let it fail the node
            log.exception("Could not encode a preview image from node %s.", node_id)
            return
        if encoded is None:
            log.warning("Node %s sent a preview of type %s; expected a PIL image.", node_id, type(image).__name__)
            return
        self.hub.send_preview(encoded[0], encoded[1], self._image_metadata(node_id), self.sid)

    def image(self, node_id: str, data: bytes, mime: str) -> None:
        """A whole image a node sends through the socket (SaveImageWebsocket): the preview frame, full size,
        whatever the preview method, as ComfyUI sends it."""
        self.hub.send_preview(data, mime, self._image_metadata(node_id), self.sid)

    def _image_metadata(self, node_id: str) -> dict:
        return {
            "node_id": node_id,
            "prompt_id": self.rec.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def will_write(self, node_id: str, ref: dict) -> None:
        self.store.record_output(self.rec.prompt_id, node_id, ref)  # before the file appears: see files.write_new

    def executed(self, node_id: str, ui: dict) -> None:
        self.rec.outputs[node_id] = ui
        self._send("executed", {"node": node_id, "display_node": node_id, "output": ui})

    def execution_success(self) -> None:
        self._finish_running()
        self._send("execution_success", {"timestamp": now_ms()}, keep=True)

    def execution_error(self, error: dict) -> None:
        # The traceback stays in the server log; the client (and history, which any client reads) gets the sentence.
        log.error(
            "Prompt %s failed in node %s (%s): %s\n%s",
            self.rec.prompt_id,
            error.get("node_id"),
            error.get("node_type"),
            error.get("exception_message"),
            "".join(error.get("traceback") or []),
        )
        shown = error_for_client(error)
        self.rec.error = shown
        self._send("execution_error", {**shown, "timestamp": now_ms()}, keep=True)

    def execution_interrupted(self, info: dict) -> None:
        self._send("execution_interrupted", {**info, "timestamp": now_ms()}, keep=True)

    def retry(self, reason: str) -> None:
        """Its batch lost its worker and runs again on another one (Atelier's own message; ComfyUI has none)."""
        self._send("atelier_retry", {"reason": reason, "message_key": "worker_retry", "timestamp": now_ms()})


def owner_of_record(rec: PromptRecord) -> str:
    """The scheduler's owner of a prompt: its learner, or LOCAL_OWNER for the local user and the instructor (whose
    records have owner None): one owner, who waits in queue-number order as before."""
    return rec.owner or LOCAL_OWNER


def whole_parts(prompt_id: str, prompt: dict) -> list[Part]:
    """A prompt as one part that runs alone (a server without the merged worker: stub nodes in tests)."""
    return [whole(prompt_id, prompt)]


class GraphWorker:
    """A worker for batches of one part that runs alone: `run_graph(prompt id)` (the graph executor's run)."""

    batch_images = 1
    slots = 1

    def __init__(self, run_graph: Callable[[str], Any]) -> None:
        self.run_graph = run_graph

    def run(self, batch: Batch) -> Sequence[Any]:
        (part,) = batch.parts
        return [self.run_graph(part.job_id)]


def wait_entry(position: Position, running_batches: int) -> dict:
    """A waiting prompt's place as a client reads it: `position` 1 is the next batch to start after the running
    ones; `starts_in` / `done_in` are seconds (None until a first batch was timed)."""
    rounded = lambda s: None if s is None else round(s, 1)  # noqa: E731
    return {
        "position": max(1, position.batches_ahead - running_batches + 1),
        "starts_in": rounded(position.starts_in),
        "done_in": rounded(position.done_in),
    }


class PromptQueue:
    """Pending prompts, the running ones, and the worker thread that runs the scheduler's batches.

    The scheduler (a plain FIFO one when none is given, everybody `LOCAL_OWNER`) picks the batches; `owner_of`
    names a prompt's owner, `parts_of` cuts it into parts (merging.parts when a merged worker is there, else one
    part). `worker` runs each batch: a `GraphWorker` by default; create_app puts a batch_worker.LocalWorker there,
    or a cluster.ClusterWorker (Ray), whose `slots` batches run at once, one per worker process.

    Several batches in flight: the dispatcher thread takes the scheduler's next batch whenever fewer than
    `worker.slots` run, and runs each on a runner thread (`Runners`: kept and reused). The scheduler's order is
    the order batches *start* in (turns, caps and merging are unchanged); a split prompt's parts may then finish
    out of order, so a prompt ends when all its parts are in (`_parts_in`), its images listed in its own order.
    """

    def __init__(
        self,
        executor: Executor,
        store: PromptStore,
        hub: Hub,
        scheduler: Scheduler | None = None,
        owner_of: Callable[[PromptRecord], str] = owner_of_record,
        parts_of: Callable[[str, dict], list[Part]] = whole_parts,
        preview_method: str = "none",
    ) -> None:
        self.executor = executor
        self.preview_method = preview_method  # the server's --preview-method, for prompts that do not say
        self.store = store
        self.hub = hub
        if scheduler is None:  # one owner: the queue numbers decide, as in ComfyUI
            scheduler, owner_of = Scheduler(), lambda rec: LOCAL_OWNER
        self.scheduler = scheduler
        self.owner_of = owner_of
        self.parts_of = parts_of
        self.worker: Worker = GraphWorker(self.run_graph)
        self.pending: list[PromptRecord] = []  # not started, by queue number
        self.active: dict[str, PromptRecord] = {}  # started and not finished (a split prompt spans batches)
        self._listeners: dict[str, PromptListener] = {}
        self._images: dict[str, list[dict]] = {}  # prompt id -> file refs its merged parts saved so far
        self._stopped: set[str] = set()  # running prompts a person stopped while their batch was running
        self._parts_in: dict[str, int] = {}  # prompt id -> its merged parts delivered so far
        self._running: dict[int, Batch] = {}  # batch number -> the batches the worker runs now
        self._busy = 0  # batches taken and still on the worker (at most worker.slots)
        self._delivering = 0  # merged batches off the worker whose images are being saved and sent
        # A merged batch gives its slot back once sampled and decoded: the next batch samples while its PNGs are
        # compressed and written (the GPU waited ~35% of each cycle for that, H200 SD1.5 run 3).
        self.overlap_delivery = True
        self._runners = Runners("atelier-batch")
        self.device = "cpu"  # where the in-process worker runs (create_app says), for the instructor's page
        self._images_done = 0  # images the in-process worker made
        self._models_used: set[str] = set()  # checkpoints its txt2img batches sampled with (the node cache holds them)
        self.merged_stop = threading.Event()  # asks the merged worker's sampling call to stop (batching.py)
        # Which batches the worker answers with one PartImage per part (the merged worker's), and how a merged
        # batch of nobody else's images is stopped (False: it cannot be; its prompts' images are dropped at its end).
        self.merged_if: Callable[[Batch], bool] = runs_merged
        self.stop_merged: Callable[[Batch], bool] = self._stop_merged_here
        self._cond = threading.Condition(threading.RLock())
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._number = store.next_number()
        self.on_finished: Callable[[PromptRecord], None] | None = None  # for tests and logging
        self.on_batch: Callable[[Batch], None] | None = None  # for tests and benchmarks: each batch taken
        for rec in store.recover():  # prompts that were waiting when the server stopped: all come back, uncapped
            self.pending.append(rec)
            scheduler.submit(owner_of(rec), rec.prompt_id, self.parts_of(rec.prompt_id, rec.prompt), rec.number, False)

    # ---- the queue, used by the HTTP handlers ----

    def next_number(self, front: bool = False) -> int:
        with self._cond:
            number = self._number
            self._number += 1
        return -number if front else number

    def put(self, rec: PromptRecord) -> None:
        """Queue a prompt. The owner's cap may refuse it first (scheduler.QueueFull), before it is stored."""
        parts = self.parts_of(rec.prompt_id, rec.prompt)
        with self._cond:  # (a re-entrant lock: status() takes it again). Held throughout, so that the worker
            # never takes a part whose record is not stored and pending yet.
            self.scheduler.submit(self.owner_of(rec), rec.prompt_id, parts, rec.number)
            try:
                self.store.add(rec)
            except BaseException:
                self.scheduler.cancel(rec.prompt_id)
                raise
            self.pending.append(rec)
            self.pending.sort(key=lambda r: (r.number, r.created_at))
            self.broadcast_status()  # posted before the worker wakes, so editors see "queued" before "started"
            self._cond.notify_all()

    def remaining(self) -> int:
        with self._cond:
            return len(self.pending) + len(self.active)

    def status(self) -> dict:
        """The `status` message body: {"exec_info": {"queue_remaining": N}}."""
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def waits(self) -> dict[str, dict]:
        """Every waiting prompt's place (`wait_entry`): position, seconds until it starts and until it is done."""
        with self._cond:
            running = len(self.scheduler.running())
            return {job_id: wait_entry(p, running) for job_id, p in self.scheduler.positions().items()}

    def waits_of(self, owner: str | None, waits: dict[str, dict] | None = None) -> dict:
        """What one person waits for, for their status messages: their prompts' places and the earliest start.
        owner None: everybody's (the local user and the instructor)."""
        waits = self.waits() if waits is None else waits
        with self._cond:
            records = {r.prompt_id: r for r in [*self.pending, *self.active.values()]}
        mine = {
            job_id: entry
            for job_id, entry in waits.items()
            if job_id in records and (owner is None or records[job_id].owner == owner)
        }
        first = min(mine.values(), key=lambda e: e["position"], default=None)
        return {
            "prompts": mine,
            "position": None if first is None else first["position"],
            "starts_in": None if first is None else first["starts_in"],
        }

    def broadcast_status(self) -> None:
        """`status` to every socket; each one's body also says where its person's prompts wait (atelier_wait)."""
        waits = self.waits()
        queue_remaining = self.remaining()
        with self._cond:
            records = [*self.pending, *self.active.values()]

        def body(owner: str | None, sees_all: bool) -> dict:
            remaining = queue_remaining if sees_all else sum(r.owner == owner for r in records)
            wait = self.waits_of(None if sees_all else owner, waits)
            status: dict = {"exec_info": {"queue_remaining": remaining}}
            if wait["prompts"]:  # where this person's prompts wait (left out when none does)
                status["atelier_wait"] = wait
            return {"status": status}

        self.hub.send_each("status", body)

    def snapshot(self) -> tuple[list[PromptRecord], list[PromptRecord]]:
        """(running, pending) as lists, for /queue and /jobs."""
        with self._cond:
            return list(self.active.values()), list(self.pending)

    def cancel(self, prompt_ids: list[str]) -> list[str]:
        """Remove pending prompts; returns the ids that were removed."""
        wanted = set(prompt_ids)
        with self._cond:
            removed = [r.prompt_id for r in self.pending if r.prompt_id in wanted]
            self.pending = [r for r in self.pending if r.prompt_id not in wanted]
            for prompt_id in removed:
                self.scheduler.cancel(prompt_id)
        if removed:
            self.store.mark_cancelled(removed)
            self.broadcast_status()
        return removed

    def clear(self) -> list[str]:
        with self._cond:
            ids = [r.prompt_id for r in self.pending]
        return self.cancel(ids)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt `prompt_id` (every running one when None). True when something was asked to stop.

        A prompt alone stops in the executor. In a merged batch shared with others the batch goes on and the
        prompt's images are dropped when it ends; a split prompt between batches ends at once, interrupted.
        """
        with self._cond:
            if prompt_id is not None and prompt_id not in self.active:
                return False
            if not self.active:
                return False
            targets = list(self.active) if prompt_id is None else [prompt_id]
            for target in targets:  # its parts still waiting will not run
                self.scheduler.cancel(target)
            between = set(targets)  # stopped between two of their batches: they end now
            for batch in self._running.values():
                in_batch = {p.job_id for p in batch.parts}
                if not in_batch & set(targets):
                    continue
                between -= in_batch
                if not self.merged_if(batch):
                    self.executor.interrupt()  # a prompt alone: the executor stops it
                elif not (in_batch <= set(targets) and self.stop_merged(batch)):  # shared, or cannot be stopped
                    self._stopped.update(in_batch & set(targets))
        for target in [t for t in targets if t in between]:
            self._end(target, "interrupted")
        return True

    # ---- what the instructor's page reads ----

    def waiting(self) -> list[dict]:
        """Who waits for what, in the order the prompts will start: prompt id, owner (None: local user or
        instructor), images asked, place (`wait_entry`), and whether it has started (a split prompt)."""
        waits = self.waits()
        with self._cond:
            records = {r.prompt_id: r for r in [*self.pending, *self.active.values()]}
            jobs = self.scheduler.waiting_jobs()
        return [
            {
                "prompt_id": job.job_id,
                "owner": records[job.job_id].owner,
                "images": job.images,
                "started": job.job_id in self.active,
                **waits.get(job.job_id, {}),
            }
            for job in jobs
            if job.job_id in records
        ]

    @property
    def paused(self) -> bool:
        return self.scheduler.paused

    def workers(self) -> list[dict]:
        """Who runs the batches: each worker's device, models loaded, busy or idle, and images done. The Ray
        actors (RayPool.describe) when there are; else this process's worker, described the same way."""
        describe = getattr(self.worker, "describe", None)
        if describe is not None:
            return describe()
        with self._cond:
            busy, done, models = bool(self._running), self._images_done, sorted(self._models_used)
        return [{"worker": 0, "device": self.device, "pid": os.getpid(), "loaded": models, "loading": None,
                 "busy": busy, "images_done": done}]  # fmt: skip

    @property
    def can_add_worker(self) -> bool:
        """Whether workers can be added while the server runs (a Ray pool); the in-process worker is one."""
        return hasattr(self.worker, "add_worker")

    def add_worker(self) -> None:
        """Start one more worker (Ray) and wake the queue, so that waiting batches start on it."""
        self.worker.add_worker()
        with self._cond:
            self._cond.notify_all()

    def wants_preview(self, prompt_id: str) -> bool:
        """Whether a running prompt's client asked for live sampler previews."""
        listener = self._listeners.get(prompt_id)
        return listener is not None and listener.previews

    def cancel_owner(self, owner: str) -> list[str]:
        """A learner removed from the class: their waiting prompts are cancelled and their running ones stopped;
        returns the ids of both."""
        with self._cond:
            waiting = [r.prompt_id for r in self.pending if r.owner == owner]
            running = [r.prompt_id for r in self.active.values() if r.owner == owner]
        removed = self.cancel(waiting)
        for prompt_id in running:
            self.interrupt(prompt_id)
        return removed + running

    # ---- the worker ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="atelier-prompt-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop after the running batch (which is interrupted) and wait for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.executor.interrupt()
        self.merged_stop.set()
        end = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        self._runners.join(max(0.0, end - time.monotonic()))

    def pause(self) -> None:
        """Start no more batches (the running one finishes)."""
        self.scheduler.pause()
        self.broadcast_status()

    def resume(self) -> None:
        with self._cond:
            self.scheduler.resume()
            self._cond.notify_all()
        self.broadcast_status()

    def _take(self) -> Batch | None:
        """The next batch, its prompts marked running, once fewer than `worker.slots` batches run; None when the
        queue stops. Waits while nothing can start."""
        with self._cond:
            while not self._stopping:
                free = self._busy < self.worker.slots and self._delivering <= self.worker.slots
                if free and (batch := self.scheduler.take(self.worker.batch_images)):
                    break
                self._cond.wait(0.5)  # (a resume from elsewhere is seen within half a second)
            else:
                return None
            self._running[batch.number] = batch
            self._busy += 1
            if self.worker.slots == 1:
                self.merged_stop.clear()
            for part in batch.parts:
                if part.job_id not in self.active:
                    self._start(part.job_id, listen=self.merged_if(batch))
            return batch

    def _start(self, prompt_id: str, listen: bool) -> None:
        """A prompt's first part starts: pending -> active. listen: the queue sends its start (merged batches;
        the executor sends its own)."""
        rec = next(r for r in self.pending if r.prompt_id == prompt_id)
        self.pending.remove(rec)
        self.active[prompt_id] = rec
        rec.state = "running"
        rec.started_at = now_ms()
        self.store.mark_running(prompt_id, rec.started_at)
        listener = self._listeners[prompt_id] = PromptListener(
            self.hub, rec, self.store, wants_previews(rec.extra_data, self.preview_method)
        )
        if listen:
            listener.execution_start()
            listener.execution_cached([])

    def _work(self) -> None:
        """The dispatcher: each batch taken runs on a runner thread (one at a time with one slot)."""
        while (batch := self._take()) is not None:
            if self.on_batch is not None:
                self.on_batch(batch)
            self._runners.submit(self._run, batch)

    def _run(self, batch: Batch) -> None:
        """Run one batch on the worker, then save and report its results. Its slot is free once delivered, or, for
        a merged batch (`overlap_delivery`), as soon as the worker returns: at most `slots` deliveries then run
        beside the next batches (a split prompt's parts may be delivered side by side: `_parts_in` counts them)."""
        delivering = False
        try:
            merged = self.merged_if(batch)
            if merged:
                for prompt_id in dict.fromkeys(p.job_id for p in batch.parts):
                    rec, listener = self.active.get(prompt_id), self._listeners.get(prompt_id)
                    if rec is not None and listener is not None:  # (not ended by another batch meanwhile)
                        found = txt2img(rec.prompt)
                        listener.executing(found.sampler_node if found else "")
            started = time.monotonic()
            try:
                results: Sequence[Any] = self.worker.run(batch)
            except Exception as error:  # every part of the batch gets the error
                if not _is_interruption(error):
                    log.exception("Batch %d failed in its worker.", batch.number)
                results = [error] * len(batch.parts)
            finally:
                with self._cond:
                    self.scheduler.finish(batch)
                    self._running.pop(batch.number, None)
            with self._cond:  # what the instructor's page shows of the in-process worker
                self._images_done += sum(part.images for part, result in zip(batch.parts, results, strict=True)
                                         if getattr(result, "status", "success") == "success"
                                         and not isinstance(result, BaseException))  # fmt: skip
                rec = self.active.get(batch.parts[0].job_id)
                found = txt2img(rec.prompt) if rec is not None else None
                if found is not None:
                    self._models_used.add(found.checkpoint)
            if merged:
                prompts = len({p.job_id for p in batch.parts})
                seconds = time.monotonic() - started
                log.info("Batch %d: %d images of %d prompts in one sampling call (%.1f s)", batch.number,
                         batch.images, prompts, seconds)  # fmt: skip
            if merged and self.overlap_delivery:
                with self._cond:
                    self._busy -= 1
                    self._delivering += 1
                    delivering = True
                    self._cond.notify_all()
            try:
                if merged:
                    self._deliver_merged(batch, results)
                else:
                    self._deliver_alone(batch.parts[0].job_id, results[0])
            except Exception:  # a bug in Atelier must not stop the queue
                log.exception("Batch %d could not be delivered.", batch.number)
                for prompt_id in {p.job_id for p in batch.parts} & set(self.active):
                    self._end(prompt_id, "error", _bug())
            self.broadcast_status()
        finally:
            with self._cond:
                if delivering:
                    self._delivering -= 1
                else:
                    self._busy -= 1
                self._cond.notify_all()

    def _stop_merged_here(self, batch: Batch) -> bool:
        """Stop the in-process worker's sampling call (batching.py looks at the event between steps)."""
        self.merged_stop.set()
        return True

    @property
    def _batch(self) -> Batch | None:
        """The batch running now (the first one, when several run)."""
        with self._cond:
            return next(iter(self._running.values()), None)

    def running_batches(self) -> list[Batch]:
        with self._cond:
            return list(self._running.values())

    def run_graph(self, prompt_id: str) -> Any:
        """Run a prompt alone with the graph executor (GraphWorker's job): the executor's result."""
        rec, listener = self.active[prompt_id], self._listeners[prompt_id]
        return self.executor.execute(rec.prompt, rec.outputs_to_execute, listener, rec.extra_data)

    def _deliver_alone(self, prompt_id: str, result: Any) -> None:
        if isinstance(result, BaseException):
            log.error("Prompt %s failed outside any node.", prompt_id, exc_info=result)
            self._end(prompt_id, "error", _bug())
            return
        rec = self.active[prompt_id]
        rec.outputs = {node_id: ui for node_id, ui in result.ui.items()}
        self._end(prompt_id, result.status, None, listened=True)

    def _deliver_merged(self, batch: Batch, results: Sequence[Any]) -> None:
        """Save each part's image as its prompt's SaveImage / PreviewImage would, and end the prompts done.
        The PNGs are compressed side by side first (zlib lets go of the GIL), then written in the parts' order."""
        pngs = list(_PNG_ENCODERS.map(self._png, batch.parts, results))
        for part, result, png in zip(batch.parts, results, pngs, strict=True):
            prompt_id = part.job_id
            if prompt_id not in self.active:  # ended already (an error in an earlier part of this batch)
                continue
            if prompt_id in self._stopped:
                self._stopped.discard(prompt_id)
                self._end(prompt_id, "interrupted")
                continue
            if isinstance(result, BaseException):
                self._end(prompt_id, "interrupted" if _is_interruption(result) else "error", result)
                continue
            rec, listener = self.active[prompt_id], self._listeners[prompt_id]
            found = txt2img(rec.prompt)
            ref = self._save(rec, found, png, listener)
            with self._cond:  # parts of one prompt in two batches may end at once, on two workers
                refs = self._images.setdefault(prompt_id, [])
                refs.append({**ref, "_index": part.payload.index})
                self._parts_in[prompt_id] = done = self._parts_in.get(prompt_id, 0) + 1
            if done == part.payload.of:  # all its parts are in: its images in the prompt's order
                ordered = sorted(refs, key=lambda r: r["_index"])
                images = [{k: v for k, v in r.items() if k != "_index"} for r in ordered]
                rec.outputs = {found.output: {"images": images}}
                listener.executed(found.output, {"images": images})
                self._end(prompt_id, "success")

    def _png(self, part: Part, result: Any) -> bytes | None:
        """The PNG its SaveImage (or PreviewImage) node writes alone, with the same text chunks (the prompt as the
        executor hands it to the node, then extra_pnginfo's entries); None for a part that has no image."""
        rec = self.active.get(part.job_id)
        if rec is None or isinstance(result, BaseException):
            return None
        text = {"prompt": json.dumps(normalize_prompt(rec.prompt, self.executor.registry))}
        for key, value in ((rec.extra_data or {}).get("extra_pnginfo") or {}).items():
            text[key] = json.dumps(value)
        return encode_png(result.image, text)

    def _save(self, rec: PromptRecord, found: Txt2Img, png: bytes, listener: PromptListener) -> dict:
        """Write the PNG where its output node would: same folder and name counter."""
        files = self._files(rec, found)
        kind = "output" if found.filename_prefix is not None else "temp"
        prefix = found.filename_prefix if found.filename_prefix is not None else "ComfyUI"
        return files.write(png, prefix, "png", kind, claim=lambda ref: listener.will_write(found.output, ref))

    def _files(self, rec: PromptRecord, found: Txt2Img) -> Any:
        """The OutputFiles its output node writes with (the node class's environment)."""
        return self.executor.registry.require(rec.prompt[found.output]["class_type"]).env.files

    def _end(
        self, prompt_id: str, status: str, error: BaseException | dict | None = None, listened: bool = False
    ) -> None:
        """A running prompt is over: its last messages (unless the executor sent them: listened), its record."""
        with self._cond:
            rec = self.active.pop(prompt_id, None)
            listener = self._listeners.pop(prompt_id, None)
            refs = self._images.pop(prompt_id, [])
            self._parts_in.pop(prompt_id, None)
            self._stopped.discard(prompt_id)
            self.scheduler.cancel(prompt_id)  # parts still waiting (an error or a stop mid-way)
        if rec is None or listener is None:
            return
        if status != "success" and refs:  # a prompt that fails shows no outputs: leave none of its files behind
            files = self._files(rec, txt2img(rec.prompt))
            for ref in refs:
                files.path(ref).unlink(missing_ok=True)
        if not listened:
            found = txt2img(rec.prompt)
            node = found.sampler_node if found else None
            if status == "success":
                listener.execution_success()
            elif status == "interrupted":
                listener.execution_interrupted({"node_id": node, "node_type": "KSampler", "executed": []})
            else:
                info = error if isinstance(error, dict) else _error_info(error, node)
                listener.execution_error(info)
        rec.state = status
        rec.ended_at = now_ms()
        self.store.finish(rec)
        self.hub.send("executing", {"node": None, "prompt_id": rec.prompt_id}, rec.client_id)
        if self.on_finished is not None:
            self.on_finished(rec)

    # ---- what the merged worker reports while it samples ----

    def on_member_step(
        self, row: int, value: int, total: int, preview: Callable[[], Any], batch: Batch | None = None
    ) -> None:
        """Step `value` of `total` of the batch's part at `row`: progress and the preview to its own prompt's
        client (once per prompt: a split prompt's other rows in the same batch stay quiet). batch: which one
        (None: the one running, for the in-process worker, which runs one at a time)."""
        batch = batch or self._batch
        if batch is None:
            return
        part = batch.parts[row]
        if any(p.job_id == part.job_id for p in batch.parts[:row]):
            return
        listener = self._listeners.get(part.job_id)
        found = None if listener is None else txt2img(listener.rec.prompt)
        if listener is None or found is None:
            return
        listener.progress(found.sampler_node, value, total)
        if listener.previews and (image := preview()) is not None:  # drawn only for a prompt that wants it
            listener.preview(found.sampler_node, image)


    def on_retry(self, batch: Batch, reason: str) -> None:
        """A worker was lost mid-batch and the batch runs again on another one: each of its prompts' clients
        reads it (`atelier_retry`; the lab's sentence is server.worker_retry in web/lab/i18n)."""
        for prompt_id in dict.fromkeys(p.job_id for p in batch.parts):
            listener = self._listeners.get(prompt_id)
            if listener is not None:
                listener.retry(reason)


# Compresses a merged batch's PNGs side by side (a 512x512 PNG takes ~30 ms of zlib, a batch of 8 a quarter of a
# second one after the other, while the GPU waits for the next batch).
_PNG_ENCODERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="atelier-png")


def _is_interruption(error: BaseException) -> bool:
    """The executor's or the pipeline's Interrupted (a person stopped it), not a failure."""
    return type(error).__name__ == "Interrupted"


def _bug() -> dict:
    return {
        "exception_message": "The prompt failed outside any node (a bug in Atelier); the server log has the details.",
        "exception_type": "InternalError",
        "node_id": None,
        "traceback": [],
    }


def _error_info(error: BaseException | None, node: str | None) -> dict:
    """An execution_error body for an error of the merged worker: a user's sentence, or a bug's notice."""
    if not isinstance(error, AtelierError):
        return _bug()
    translated = {"message_key": error.key, "params": error.params} if error.key else {}  # the lab's server.<key>
    return {
        **translated,
        "exception_message": str(error),
        "exception_type": type(error).__name__,
        "node_id": node,
        "node_type": "KSampler",
        "traceback": [],
        "current_inputs": {},
        "current_outputs": {},
    }
