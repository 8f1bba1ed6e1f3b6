"""The prompt queue and its worker: one thread that runs queued prompts one at a time with the graph Executor.

    POST /prompt ──► PromptQueue.put ──► pending (sorted by number) ──► worker thread ──► Executor.execute
                          │                                                    │
                          └── status broadcast                 PromptListener: WebSocket messages to the
                                                               prompt's client + history messages

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
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from atelier.graph.executor import ExecutionListener, Executor
from atelier.server.hub import Hub
from atelier.server.merging import whole
from atelier.server.scheduler import LOCAL_OWNER, Batch, Scheduler
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
            encoded = encode_preview(image)
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


class PromptQueue:
    """Pending prompts in priority order, the running one, and the worker thread that runs them.

    With a `scheduler` (classroom mode), the scheduler picks which pending prompt runs next: round-robin between
    the owners `owner_of` names, each owner's cap on waiting images, pause (scheduler.py). Each prompt is one part
    there, run whole by the executor. Without one, the first pending prompt runs next, as always.
    """

    def __init__(
        self,
        executor: Executor,
        store: PromptStore,
        hub: Hub,
        scheduler: Scheduler | None = None,
        owner_of: Callable[[PromptRecord], str] = lambda rec: LOCAL_OWNER,
        preview_method: str = "none",
    ) -> None:
        self.executor = executor
        self.preview_method = preview_method  # the server's --preview-method, for prompts that do not say
        self.store = store
        self.hub = hub
        self.scheduler = scheduler
        self.owner_of = owner_of
        self.pending: list[PromptRecord] = []
        self.running: PromptRecord | None = None
        self._batch: Batch | None = None  # the scheduler's batch of the running prompt
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._number = store.next_number()
        self.on_finished: Callable[[PromptRecord], None] | None = None  # for tests and logging
        for rec in store.recover():  # prompts that were waiting when the server stopped
            self.pending.append(rec)
            if scheduler is not None:  # all of them come back, whatever the cap
                scheduler.submit(owner_of(rec), rec.prompt_id, [whole(rec.prompt_id, rec.prompt)], rec.number, False)

    # ---- the queue, used by the HTTP handlers ----

    def next_number(self, front: bool = False) -> int:
        with self._cond:
            number = self._number
            self._number += 1
        return -number if front else number

    def put(self, rec: PromptRecord) -> None:
        """Queue a prompt. In classroom mode the owner's cap may refuse it first (scheduler.QueueFull)."""
        if self.scheduler is not None:
            self.scheduler.submit(self.owner_of(rec), rec.prompt_id, [whole(rec.prompt_id, rec.prompt)], rec.number)
        self.store.add(rec)
        with self._cond:  # (a re-entrant lock: status() takes it again)
            self.pending.append(rec)
            self.pending.sort(key=lambda r: (r.number, r.created_at))
            self.broadcast_status()  # posted before the worker wakes, so editors see "queued" before "started"
            self._cond.notify()

    def remaining(self) -> int:
        with self._cond:
            return len(self.pending) + (self.running is not None)

    def status(self) -> dict:
        """The `status` message body: {"exec_info": {"queue_remaining": N}}."""
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def broadcast_status(self) -> None:
        self.hub.send("status", {"status": self.status()})

    def snapshot(self) -> tuple[list[PromptRecord], list[PromptRecord]]:
        """(running, pending) as lists, for /queue and /jobs."""
        with self._cond:
            return ([self.running] if self.running else []), list(self.pending)

    def cancel(self, prompt_ids: list[str]) -> list[str]:
        """Remove pending prompts; returns the ids that were removed."""
        wanted = set(prompt_ids)
        with self._cond:
            removed = [r.prompt_id for r in self.pending if r.prompt_id in wanted]
            self.pending = [r for r in self.pending if r.prompt_id not in wanted]
            for prompt_id in removed if self.scheduler is not None else []:
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
        """Stop the running prompt (only if it is `prompt_id`, when given). True when something was asked to stop."""
        with self._cond:
            running = self.running
        if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
            return False
        self.executor.interrupt()
        return True

    # ---- the worker ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="atelier-prompt-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop after the running prompt (which is interrupted) and wait for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.executor.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)

    def pause(self) -> None:
        """Classroom mode: start no more prompts (the running one finishes)."""
        if self.scheduler is not None:
            self.scheduler.pause()

    def resume(self) -> None:
        if self.scheduler is not None:
            with self._cond:
                self.scheduler.resume()
                self._cond.notify()

    def _take(self) -> PromptRecord | None:
        with self._cond:
            while not self._stopping and (rec := self._next()) is None:
                self._cond.wait()
            if self._stopping:
                return None
            self.running = rec
            return rec

    def _next(self) -> PromptRecord | None:
        """The prompt to run next, taken off `pending`: the first, or the scheduler's pick (None while paused)."""
        if self.scheduler is None:
            return self.pending.pop(0) if self.pending else None
        self._batch = self.scheduler.take(1)
        if self._batch is None:
            return None
        (part,) = self._batch.parts
        rec = next(r for r in self.pending if r.prompt_id == part.job_id)
        self.pending.remove(rec)
        return rec

    def _work(self) -> None:
        while (rec := self._take()) is not None:
            try:
                self._run(rec)
            except Exception:  # a bug in the engine must not stop the queue
                log.exception("Prompt %s failed outside any node.", rec.prompt_id)
                rec.state = "error"
                rec.error = {
                    "exception_message": "The prompt failed outside any node (a bug in Atelier); the server log "
                    "has the details.",
                    "node_id": None,
                    "traceback": [],
                }
                rec.ended_at = now_ms()
                self.store.finish(rec)
            finally:
                with self._cond:
                    self.running = None
                    if self._batch is not None:  # its duration feeds the expected waits
                        self.scheduler.finish(self._batch)
                        self._batch = None
                self.hub.send("executing", {"node": None, "prompt_id": rec.prompt_id}, rec.client_id)
                self.broadcast_status()
                if self.on_finished is not None:
                    self.on_finished(rec)

    def _run(self, rec: PromptRecord) -> None:
        rec.started_at = now_ms()
        self.store.mark_running(rec.prompt_id, rec.started_at)
        listener = PromptListener(self.hub, rec, self.store, wants_previews(rec.extra_data, self.preview_method))
        result = self.executor.execute(rec.prompt, rec.outputs_to_execute, listener, rec.extra_data)
        rec.state = result.status
        rec.outputs = {node_id: ui for node_id, ui in result.ui.items()}
        rec.ended_at = now_ms()
        self.store.finish(rec)
