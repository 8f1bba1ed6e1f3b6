"""Prompts in, queue and history out: POST /prompt, /queue, /history and the newer /jobs view of the same data.

A prompt is validated before it is queued (graph/validation.py); a rejected prompt gets ComfyUI's 400 body
{"error": {type, message, details, extra_info}, "node_errors": {...}}, which the editor turns into red outlines.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from atelier.graph.validation import error_entry, validate_prompt
from atelier.server.state import add_api, state
from atelier.server.store import FINISHED, PromptRecord, now_ms

# extra_data keys that hold credentials for Comfy's paid API nodes: never stored, never echoed back.
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")


def _bad_prompt(kind: str, message: str, details: str = "") -> web.Response:
    return web.json_response({"error": error_entry(kind, message, details), "node_errors": {}}, status=400)


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(state(request).queue.status())


async def post_prompt(request: web.Request) -> web.Response:
    st = state(request)
    try:
        body = await request.json()
    except ValueError as ex:
        return _bad_prompt("invalid_prompt", "The request body is not valid JSON.", str(ex))
    if not isinstance(body, dict) or "prompt" not in body:
        return _bad_prompt("no_prompt", "No prompt provided", "The body must have a 'prompt' key.")
    targets = body.get("partial_execution_targets")
    result = validate_prompt(body["prompt"], st.registry, targets)
    if not result.ok:
        return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)

    prompt_id = body.get("prompt_id")
    if not isinstance(prompt_id, str) or not prompt_id or st.store.exists(prompt_id):
        prompt_id = str(uuid.uuid4())
    if "number" in body:
        try:
            number = float(body["number"])
        except (TypeError, ValueError):
            return _bad_prompt("invalid_prompt", "The 'number' field must be a number.", repr(body["number"]))
    else:
        number = st.queue.next_number(front=bool(body.get("front")))
    extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
    extra = {k: v for k, v in extra.items() if k not in SENSITIVE_EXTRA_DATA}
    if isinstance(body.get("client_id"), str):
        extra["client_id"] = body["client_id"]
    extra["create_time"] = now_ms()
    rec = PromptRecord(prompt_id, number, result.prompt, extra, result.outputs, created_at=extra["create_time"])
    st.queue.put(rec)
    reply = {"prompt_id": prompt_id, "number": rec.queue_tuple()[0], "node_errors": result.node_errors}
    return web.json_response(reply)


async def get_queue(request: web.Request) -> web.Response:
    running, pending = state(request).queue.snapshot()
    return web.json_response(
        {"queue_running": [r.queue_tuple() for r in running], "queue_pending": [r.queue_tuple() for r in pending]}
    )


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def post_queue(request: web.Request) -> web.Response:
    body = await _json_body(request)
    queue = state(request).queue
    if body.get("clear"):
        queue.clear()
    if isinstance(body.get("delete"), list):
        queue.cancel([str(i) for i in body["delete"]])
    return web.Response(status=200)


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
    records = state(request).store.history()
    max_items = _int_query(request, "max_items", None)
    offset = _int_query(request, "offset", -1)
    if offset < 0:  # as ComfyUI: without an offset, the most recent max_items (still oldest first)
        offset = max(0, len(records) - max_items) if max_items is not None else 0
    chosen = records[offset:] if max_items is None else records[offset : offset + max_items]
    return web.json_response({rec.prompt_id: history_entry(rec) for rec in chosen})


async def get_history_one(request: web.Request) -> web.Response:
    rec = state(request).store.get(request.match_info["prompt_id"])
    if rec is None or rec.state not in FINISHED:
        return web.json_response({})
    return web.json_response({rec.prompt_id: history_entry(rec)})


async def post_history(request: web.Request) -> web.Response:
    body = await _json_body(request)
    store = state(request).store
    if body.get("clear"):
        store.delete_history()
    if isinstance(body.get("delete"), list):
        store.delete_history([str(i) for i in body["delete"]])
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
        for media, items in (node_outputs or {}).items():
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


def job_entry(rec: PromptRecord, detail: bool = False) -> dict:
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
        "workflow_id": ((rec.extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id"),
    }
    job = {k: v for k, v in job.items() if v is not None}
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

    jobs = [job_entry(rec) for rec in state(request).store.select()]
    jobs = [j for j in jobs if j["status"] in wanted and (not workflow_id or j.get("workflow_id") == workflow_id)]

    def key(job: dict) -> float:
        if sort_by == "execution_duration":
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return end - start if start and end else 0
        return job["create_time"]

    jobs.sort(key=key, reverse=descending)
    total = len(jobs)
    page = jobs[offset:] if limit is None else jobs[offset : offset + limit]
    pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
    return web.json_response({"jobs": page, "pagination": pagination})


async def get_job(request: web.Request) -> web.Response:
    rec = state(request).store.get(request.match_info["job_id"])
    if rec is None:
        return web.json_response({"error": f"No job with id {request.match_info['job_id']!r}."}, status=404)
    return web.json_response(job_entry(rec, detail=True))


def _cancel(request: web.Request, job_id: str) -> bool:
    """Cancel a pending job (removed from the queue) or the running one (interrupted)."""
    queue = state(request).queue
    return bool(queue.cancel([job_id])) or queue.interrupt(job_id)


async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response({"cancelled": _cancel(request, request.match_info["job_id"])})


async def cancel_jobs(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ids = body.get("job_ids") if isinstance(body.get("job_ids"), list) else []
    results = [_cancel(request, str(i)) for i in ids]
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
