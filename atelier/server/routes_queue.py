"""Prompts in, queue and history out: POST /prompt, /queue, /history and the newer /jobs view of the same data.

A prompt is validated before it is queued (graph/validation.py); a rejected prompt gets ComfyUI's 400 body
{"error": {type, message, details, extra_info}, "node_errors": {...}}, which the editor turns into red outlines.

The room shares one event loop, so no request may hold it: bodies are decoded as strict JSON (strict_json.py),
a large graph is validated in a worker thread, and queue, history and jobs are read from the database and written
out in a thread, one record at a time (json's C code holds the GIL for the whole of one call, so one 400 MB
dumps would still pause the loop; 400 calls of 1 MB each let it run in between). Each field has a size limit.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from aiohttp import web

from atelier.graph.validation import ValidationResult, error_entry, validate_prompt
from atelier.server.classroom import client_id_for, own_ids, prompt_names_others_files, queue_status, visible, who
from atelier.server.scheduler import QueueFull
from atelier.server.state import add_api, state
from atelier.server.store import FINISHED, MAX_NUMBER, PromptRecord, now_ms
from atelier.server.strict_json import BadJSON, dumps, json_kind, json_response_off_loop, read_json, read_object

# extra_data keys that hold credentials for Comfy's paid API nodes: never stored, never echoed back.
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")

# Per-field limits of POST /prompt, far above what the editor sends: its biggest workflows are 1-2 MB, and the
# 5,000-node chain of the hardening tests is 0.7 MB and validates in under a second.
MAX_PROMPT_NODES = 20_000
MAX_EXTRA_DATA_BYTES = 4 * 1024 * 1024  # the editor's copy of the workflow: stored with the prompt, put in each PNG
MAX_ID_CHARACTERS = 256  # prompt_id and client_id
MAX_IDS = 10_000  # ids one POST /queue, /history or /jobs/cancel may list (the editor sends one at a time)


def _bad_prompt(kind: str, message: str, details: str = "", status: int = 400) -> web.Response:
    return web.json_response({"error": error_entry(kind, message, details), "node_errors": {}}, status=status)


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(queue_status(state(request).queue, who(request)))


def queue_number(value: Any) -> int:
    """The `number` a script asks for (its queue priority): a whole number within +-2**53, as a number or text."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    sound = isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
    if not sound or abs(number) >= MAX_NUMBER or number != int(number):
        shown = str(value)[:40]
        raise ValueError(f"The 'number' field must be a whole number between -2**53 and 2**53; got {shown!r}.")
    return int(number)


def _field_problem(body: dict) -> tuple[str, int] | None:
    """(sentence, status) for the first field of a prompt body that is of the wrong type or too large."""
    prompt, extra = body["prompt"], body.get("extra_data")
    if isinstance(prompt, dict) and len(prompt) > MAX_PROMPT_NODES:
        return f"The prompt has {len(prompt):,} nodes; the most is {MAX_PROMPT_NODES:,}.", 413
    if extra is not None and not isinstance(extra, dict):
        return f'extra_data is {json_kind(extra)}; expected an object such as {{"extra_pnginfo": ...}}.', 400
    for name in ("prompt_id", "client_id"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name} is {json_kind(value)}; expected a string such as a UUID.", 400
        if isinstance(value, str) and len(value) > MAX_ID_CHARACTERS:
            return f"{name} has {len(value):,} characters; the most is {MAX_ID_CHARACTERS}.", 400
    size = len(dumps(extra).encode()) if extra else 0
    if size > MAX_EXTRA_DATA_BYTES:
        return f"extra_data is {size:,} bytes of JSON; the most is {MAX_EXTRA_DATA_BYTES:,}.", 413
    return None


def _admit(body: dict, registry: Any) -> tuple[str, int] | ValidationResult:
    """Field checks, then the graph's validation (run in a worker thread: a large graph takes a while)."""
    return _field_problem(body) or validate_prompt(body["prompt"], registry, body.get("partial_execution_targets"))


async def post_prompt(request: web.Request) -> web.Response:
    st = state(request)
    try:
        body = await read_json(request, "prompt body", "an object {prompt, client_id, extra_data}")
    except BadJSON as ex:
        return _bad_prompt("invalid_prompt", str(ex), ex.details, status=ex.status)
    if not isinstance(body, dict) or "prompt" not in body:
        return _bad_prompt("no_prompt", "No prompt provided", "The body must have a 'prompt' key.")
    try:
        number = queue_number(body["number"]) if "number" in body else None
    except ValueError as ex:
        return _bad_prompt("invalid_prompt", str(ex))
    result = await asyncio.get_running_loop().run_in_executor(None, _admit, body, st.registry)
    if isinstance(result, tuple):
        message, status = result
        return _bad_prompt("invalid_prompt", message, status=status)
    if not result.ok:
        return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
    if (named := prompt_names_others_files(result.prompt, who(request))) is not None:
        return _bad_prompt("invalid_prompt", f"The file {named[:80]!r} belongs to another learner.", status=403)

    prompt_id = body.get("prompt_id")
    if not prompt_id or st.store.exists(prompt_id):
        prompt_id = str(uuid.uuid4())
    if number is None:
        number = st.queue.next_number(front=bool(body.get("front")))
    extra = body.get("extra_data") or {}
    extra = {k: v for k, v in extra.items() if k not in SENSITIVE_EXTRA_DATA}
    if isinstance(body.get("client_id"), str):
        extra["client_id"] = body["client_id"]
    if st.classroom is not None:  # messages go only to a socket of the prompt's owner
        extra["client_id"] = client_id_for(st.hub, who(request), extra.get("client_id"))
    extra["create_time"] = now_ms()
    rec = PromptRecord(
        prompt_id,
        number,
        result.prompt,
        extra,
        result.outputs,
        created_at=extra["create_time"],
        owner=who(request).owner,
    )
    try:
        await asyncio.to_thread(st.queue.put, rec)  # stored as JSON: a large prompt takes a while to write
    except QueueFull as full:
        return queue_full(request, full)
    reply = {"prompt_id": prompt_id, "number": rec.queue_tuple()[0], "node_errors": result.node_errors}
    return web.json_response(reply)


def queue_full(request: web.Request, full: QueueFull) -> web.Response:
    """429 for a learner past their cap: the sentence in the request's language (Accept-Language: French or
    English), the other language in `details`, and the key and params the lab translates with."""
    french = request.headers.get("Accept-Language", "").lower().startswith("fr")
    first, other = ("fr", "en") if french else ("en", "fr")
    body = {
        "error": error_entry("queue_full", full.text(first), full.text(other)),
        "node_errors": {},
        "message_key": full.key,
        "params": full.params,
    }
    return web.json_response(body, status=429)


async def get_queue(request: web.Request) -> web.Response:
    queue, person = state(request).queue, who(request)

    def build() -> dict:
        running, pending = (visible(person, records) for records in queue.snapshot())
        return {
            "queue_running": [r.queue_tuple() for r in running],
            "queue_pending": [r.queue_tuple() for r in pending],
        }

    return await json_response_off_loop(build)


async def _json_body(request: web.Request) -> dict:
    """The body of the small POST routes (queue, history, jobs/cancel): a JSON object, or {} when empty."""
    try:
        return await read_object(request)
    except BadJSON as ex:
        raise ex.http_error() from None


async def post_queue(request: web.Request) -> web.Response:
    body = await _json_body(request)
    st, person = state(request), who(request)
    ids = own_ids(st.store, person, _ids(body, "delete"))
    if body.get("clear"):
        if person.sees_all:
            st.queue.clear()
        else:
            st.queue.cancel([r.prompt_id for r in visible(person, st.queue.snapshot()[1])])
    if ids:
        st.queue.cancel(ids)
    return web.Response(status=200)


def _ids(body: dict, key: str) -> list[str]:
    """The prompt ids listed under `key` (none when it is not a list), at most MAX_IDS of them."""
    ids = body.get(key)
    if not isinstance(ids, list):
        return []
    if len(ids) > MAX_IDS:
        raise web.HTTPBadRequest(text=f"{key} lists {len(ids):,} ids; the most in one request is {MAX_IDS:,}.")
    return [str(i) for i in ids]


# ---- history ----


def history_entry(rec: PromptRecord) -> dict:
    """One value of GET /history: the queue tuple, what the output nodes showed, how it ended."""
    return {
        "prompt": rec.queue_tuple(),
        "outputs": rec.outputs,
        "status": {
            "status_str": "success" if rec.state == "success" else "error",
            "completed": rec.state == "success",
            "messages": rec.messages,
        },
        "meta": {
            node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            for node_id in rec.outputs
        },
    }


def _int_query(request: web.Request, name: str, default: int | None) -> int | None:
    try:
        return int(request.query[name]) if name in request.query else default
    except ValueError:
        raise web.HTTPBadRequest(text=f"The query parameter {name!r} must be an integer.") from None


async def get_history(request: web.Request) -> web.Response:
    store, person = state(request).store, who(request)
    max_items = _int_query(request, "max_items", None)
    offset = _int_query(request, "offset", -1)

    def build() -> dict:
        records = visible(person, store.history())
        start = offset
        if start < 0:  # as ComfyUI: without an offset, the most recent max_items (still oldest first)
            start = max(0, len(records) - max_items) if max_items is not None else 0
        chosen = records[start:] if max_items is None else records[start : start + max_items]
        return {rec.prompt_id: history_entry(rec) for rec in chosen}

    return await json_response_off_loop(build)


async def get_history_one(request: web.Request) -> web.Response:
    store, prompt_id, person = state(request).store, request.match_info["prompt_id"], who(request)

    def build() -> dict:
        rec = store.get(prompt_id)
        seen = rec is not None and rec.state in FINISHED and person.sees(rec.owner)
        return {rec.prompt_id: history_entry(rec)} if seen else {}

    return await json_response_off_loop(build)


async def post_history(request: web.Request) -> web.Response:
    body = await _json_body(request)
    store, person = state(request).store, who(request)
    ids = own_ids(store, person, _ids(body, "delete"))
    if body.get("clear") and person.sees_all:
        await asyncio.to_thread(store.delete_history)
    elif body.get("clear"):  # a learner clears their own history
        await asyncio.to_thread(store.delete_history, [r.prompt_id for r in visible(person, store.history())])
    if ids:
        await asyncio.to_thread(store.delete_history, ids)
    return web.Response(status=200)


# ---- jobs (the frontend's newer, unified view of queue + history) ----

JOB_STATUS = {
    "pending": "pending",
    "running": "in_progress",
    "success": "completed",
    "error": "failed",
    "interrupted": "cancelled",
    "cancelled": "cancelled",
}
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def _outputs_summary(outputs: dict) -> tuple[int, int, dict | None]:
    """(outputs_count, previewable_outputs_count, preview_output): the first image, preferring type output."""
    count = previewable = 0
    preview = fallback = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media, items in node_outputs.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if media in ("images", "video", "audio"):
                    previewable += 1
                    enriched = {**item, "nodeId": node_id, "mediaType": media}
                    if item.get("type") == "output" and preview is None:
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, previewable, preview or fallback


def _workflow_id(extra_data: dict) -> Any:
    """extra_data["extra_pnginfo"]["workflow"]["id"], where each level is an object (a client sends what it likes)."""
    found: Any = extra_data
    for key in ("extra_pnginfo", "workflow", "id"):
        found = found.get(key) if isinstance(found, dict) else None
    return found if isinstance(found, (str, int)) and not isinstance(found, bool) else None


def job_entry(rec: PromptRecord, detail: bool = False, wait: dict | None = None) -> dict:
    """One job of /jobs; `wait` (PromptQueue.waits) adds where a waiting job stands: `atelier_wait`."""
    count, previewable, preview = _outputs_summary(rec.outputs)
    job = {
        "id": rec.prompt_id,
        "status": JOB_STATUS[rec.state],
        "priority": rec.queue_tuple()[0],
        "create_time": rec.created_at,
        "execution_start_time": rec.started_at,
        "execution_end_time": rec.ended_at,
        "execution_error": rec.error,
        "outputs_count": count,
        "previewable_outputs_count": previewable,
        "preview_output": preview,
        "workflow_id": _workflow_id(rec.extra_data),
    }
    job = {k: v for k, v in job.items() if v is not None}
    if wait is not None:
        job["atelier_wait"] = wait
    if detail:
        job["outputs"] = rec.outputs
        job["execution_status"] = history_entry(rec)["status"] if rec.state in FINISHED else None
        job["workflow"] = {"prompt": rec.prompt, "extra_data": rec.extra_data}
    return job


async def get_jobs(request: web.Request) -> web.Response:
    wanted = [s for s in request.query.get("status", "").split(",") if s] or list(JOB_STATUSES)
    unknown = [s for s in wanted if s not in JOB_STATUSES]
    if unknown:
        raise web.HTTPBadRequest(text=f"Unknown job status {unknown[0]!r}; expected some of {', '.join(JOB_STATUSES)}.")
    sort_by = request.query.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration"):
        raise web.HTTPBadRequest(text=f"sort_by {sort_by!r} is not known; expected created_at or execution_duration.")
    descending = request.query.get("sort_order", "desc") != "asc"
    limit = _int_query(request, "limit", None)
    offset = max(0, _int_query(request, "offset", 0) or 0)
    workflow_id = request.query.get("workflow_id")
    store, person = state(request).store, who(request)

    def key(job: dict) -> float:
        if sort_by == "execution_duration":
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return end - start if start and end else 0
        return job["create_time"]

    queue = state(request).queue

    def build() -> dict:
        waits = queue.waits()  # a waiting job's place: {"position", "starts_in", "done_in"} (seconds)
        jobs = [job_entry(rec, wait=waits.get(rec.prompt_id)) for rec in visible(person, store.select())]
        jobs = [j for j in jobs if j["status"] in wanted and (not workflow_id or j.get("workflow_id") == workflow_id)]
        jobs.sort(key=key, reverse=descending)
        total = len(jobs)
        page = jobs[offset:] if limit is None else jobs[offset : offset + limit]
        pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
        return {"jobs": page, "pagination": pagination}

    return await json_response_off_loop(build)


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    rec = await asyncio.to_thread(state(request).store.get, job_id)
    if rec is None or not who(request).sees(rec.owner):
        return web.json_response({"error": f"No job with id {job_id[:MAX_ID_CHARACTERS]!r}."}, status=404)
    queue = state(request).queue
    return await json_response_off_loop(lambda: job_entry(rec, detail=True, wait=queue.waits().get(rec.prompt_id)))


def _cancel(request: web.Request, job_id: str) -> bool:
    """Cancel a pending job (removed from the queue) or the running one (interrupted): the person's own only."""
    st = state(request)
    if not own_ids(st.store, who(request), [job_id]):
        return False
    return bool(st.queue.cancel([job_id])) or st.queue.interrupt(job_id)


async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response({"cancelled": _cancel(request, request.match_info["job_id"])})


async def cancel_jobs(request: web.Request) -> web.Response:
    body = await _json_body(request)
    results = [_cancel(request, job_id) for job_id in _ids(body, "job_ids")]
    return web.json_response({"cancelled": any(results)})


def setup(app: web.Application) -> None:
    add_api(app, "GET", "/prompt", get_prompt)
    add_api(app, "POST", "/prompt", post_prompt)
    add_api(app, "GET", "/queue", get_queue)
    add_api(app, "POST", "/queue", post_queue)
    add_api(app, "GET", "/history", get_history)
    add_api(app, "GET", "/history/{prompt_id}", get_history_one)
    add_api(app, "POST", "/history", post_history)
    add_api(app, "GET", "/jobs", get_jobs)
    add_api(app, "POST", "/jobs/cancel", cancel_jobs)
    add_api(app, "GET", "/jobs/{job_id}", get_job)
    add_api(app, "POST", "/jobs/{job_id}/cancel", cancel_job)
