"""The instructor's page (/classroom/) and its routes, in classroom mode only (classroom.py).

    GET    /classroom/                    the page (atelier/web/classroom/): the instructor's; 403 to learners
    GET    /atelier/classroom/state       the wall, the queue, the exercise and its results, and how far each
                                          learner is through the parcours (the page polls it)
    GET    /atelier/classroom/join.svg    the learners' join link as a QR code (segno, SVG)
    POST   /atelier/classroom/pause       start no more prompts (the running one finishes); /resume starts again
    POST   /atelier/classroom/exercise    {title?, settings, vary?: {param, values}}: pushed to every learner's lab
    DELETE /atelier/classroom/exercise    take the exercise back
    GET    /atelier/classroom/exercise    the current exercise (learners too: their lab reads it on start)
    POST   /atelier/classroom/remove      {learner}: the learner is out of the class
    GET    /atelier/classroom/export.zip  the session's gallery: an HTML contact sheet, the PNGs, metadata.json

Pushing an exercise ("tout le monde : graine 42, CFG 1 / 7 / 30"). The settings are checked here, stored (a
restart keeps them) and sent on every open socket as `{"type": "atelier_exercise", "data": exercise}`; the lab
(web/lab/classroom.js) puts them in its form and shows a card whose Run makes one image per value. Each of those
prompts carries `extra_data.atelier_lab = {kind: "class", exercise: id, value, params, roles}`, so the results of
one exercise are found in the history by its id and shown side by side: one row per learner, one column per value.

Removing a learner: their cookie names nobody from then on (Classroom.remove, kept in the store), their waiting
prompts are cancelled, a running one is interrupted and their sockets are closed. Their history is kept: it is
the session's record, and the export lists it under their name.

Le parcours: each learner's lab sends their progress (PUT /atelier/lab/parcours/progress, kept in the store per
learner); the state gives, per learner, {done, total, steps, current} (lessons/parcours.progress_summary) and the
page shows them as a table, the current step named in the page's language.

Parameters of an image: the lab's own record of what it ran (extra_data.atelier_lab.params), else what the graph
says when it is the classic txt2img graph (merging.txt2img), else nothing: a node-editor graph can be anything.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import logging
import re
import secrets
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web

from atelier.lessons.parcours import progress_summary
from atelier.server.classroom import INSTRUCTOR, Classroom, who
from atelier.server.files import UnsafePathError, safe_join
from atelier.server.frontend import MIME_TYPES, NO_CACHE
from atelier.server.merging import txt2img
from atelier.server.security import page_policy
from atelier.server.state import ServerState, error_text, state
from atelier.server.store import PromptRecord, now_ms
from atelier.server.strict_json import BadJSON, dumps, dumps_finite, read_json

log = logging.getLogger(__name__)

PAGE_ROOT = Path(__file__).resolve().parent.parent / "web" / "classroom"
API = "/atelier/classroom"
EXERCISE_KEY = "exercise"  # its name in the store's class values
RECENT = 10  # finished prompts per learner read to find their latest image
MAX_VALUES = 8  # values of the varied parameter: a row of the wall, and as many images per learner
MAX_TITLE = 120
MAX_TEXT = 2000  # characters of a prompt in an exercise

NOT_INSTRUCTOR = "Cette page est celle du formateur. / This page is the instructor's."
NOT_CLASSROOM = (
    "Le mode classe n'est pas activé : lancez « atelier serve --classroom ». / "
    "Classroom mode is off: start the server with `atelier serve --classroom`."
)

# What an exercise may fix, and what it may vary (the lab's form fields: web/lab/form.js).
TEXT_FIELDS = ("prompt", "negative")
NUMBER_FIELDS = ("seed", "steps", "cfg", "width", "height")
CHOICE_FIELDS = ("sampler", "scheduler")
VARIED = ("seed", "steps", "cfg", "sampler", "scheduler")
# The limits when the registry has no KSampler (tests' stub nodes): those of the real nodes' schemas.
FALLBACK_LIMITS = {
    "seed": {"type": "INT", "min": 0, "max": 2**64 - 1, "step": None},
    "steps": {"type": "INT", "min": 1, "max": 10000, "step": None},
    "cfg": {"type": "FLOAT", "min": 0.0, "max": 100.0, "step": None},
    "width": {"type": "INT", "min": 16, "max": 16384, "step": 8},
    "height": {"type": "INT", "min": 16, "max": 16384, "step": 8},
}


class ExerciseError(ValueError):
    """A bad exercise: `str()` is English; `key` and `params` name the sentence of the page's i18n files."""

    def __init__(self, message: str, key: str, **params: Any) -> None:
        super().__init__(message)
        self.key, self.params = key, params


def _bad(error: ExerciseError) -> web.Response:
    return web.json_response({"error": str(error), "message_key": error.key, "params": error.params}, status=400)


# --------------------------------------------------------------------------------------------------------------
# Who may ask
# --------------------------------------------------------------------------------------------------------------


INSTRUCTOR_NAME = "Formateur / Instructor"  # the owner of prompts queued by the instructor (owner None)


def name_of(room: Classroom, owner: str | None) -> str:
    return INSTRUCTOR_NAME if owner is None else room.name_of(owner)


def _room(request: web.Request) -> Classroom | None:
    return state(request).classroom


def _refusal(request: web.Request, learners_too: bool = False) -> web.Response | None:
    """404 outside classroom mode; 403 for a learner (unless `learners_too`); None when the request may go on."""
    if _room(request) is None:
        return error_text(404, NOT_CLASSROOM)
    if who(request) is not INSTRUCTOR and not learners_too:
        return error_text(403, NOT_INSTRUCTOR)
    return None


def instructor_only(handler: Any) -> Any:
    async def guarded(request: web.Request) -> web.StreamResponse:
        return await handler(request) if (refused := _refusal(request)) is None else refused

    return guarded


@instructor_only
async def page_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info.get("path") or "index.html"
    try:
        path = safe_join(PAGE_ROOT, relative, what="file")
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    if not path.is_file():
        return error_text(404, f"No classroom page file {relative!r}.")
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": mime, "Content-Security-Policy": page_policy(), **NO_CACHE})


# --------------------------------------------------------------------------------------------------------------
# What a prompt made, and with which parameters
# --------------------------------------------------------------------------------------------------------------


def lab_record(rec: PromptRecord) -> dict:
    """What the lab queued with the prompt (extra_data.atelier_lab), or {} for other prompts."""
    lab = rec.extra_data.get("atelier_lab")
    return lab if isinstance(lab, dict) else {}


def output_images(rec: PromptRecord) -> list[dict]:
    """The prompt's output files ({filename, subfolder, type}), the lab's "image" role first when it named one."""
    refs: list[dict] = []
    roles = lab_record(rec).get("roles")
    first = roles.get("image") if isinstance(roles, dict) else None
    nodes = sorted(rec.outputs, key=lambda node: node != first)
    for node in nodes:
        ui = rec.outputs[node]
        for item in ui.get("images", []) if isinstance(ui, dict) else []:
            if (
                isinstance(item, dict)
                and isinstance(item.get("filename"), str)
                and item.get("type", "output") == "output"
            ):
                refs.append({"filename": item["filename"], "subfolder": item.get("subfolder") or "", "type": "output"})
    return refs


def parameters(rec: PromptRecord) -> dict:
    """Seed, CFG, steps, sampler, scheduler, size and prompt of a generation, as far as they are known."""
    params = lab_record(rec).get("params")
    if isinstance(params, dict):
        keep = ("prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "width", "height", "model")
        return {k: params[k] for k in keep if k in params}
    found = txt2img(rec.prompt)
    if found is None:
        return {}
    return {
        "prompt": found.prompt,
        "negative": found.negative,
        "seed": found.seed,
        "steps": found.steps,
        "cfg": found.cfg,
        "sampler": found.sampler,
        "scheduler": found.scheduler,
        "width": found.width,
        "height": found.height,
        "model": found.checkpoint,
    }


def image_entry(rec: PromptRecord) -> dict | None:
    """A finished prompt as the wall shows it: its first image, parameters, when it ended; None without image."""
    images = output_images(rec)
    if not images:
        return None
    return {"prompt_id": rec.prompt_id, "image": images[0], "params": parameters(rec), "ended_at": rec.ended_at}


def waiting_entry(rec: PromptRecord, room: Classroom, running: bool, place: Any) -> dict:
    """A queued prompt as the page lists it: who, what (its parameters), how many images, where it stands."""
    params = parameters(rec)
    entry = {
        "prompt_id": rec.prompt_id,
        "owner": rec.owner,
        "name": name_of(room, rec.owner),
        "running": running,
        "params": params,
        "images": _batch_of(rec),
        "source": "lab" if lab_record(rec) else "editor",
    }
    if place is not None:  # the scheduler's Position: batches ahead, expected seconds
        entry["batches_ahead"] = place.batches_ahead
        entry["starts_in"] = None if place.starts_in is None else round(place.starts_in, 1)
    return entry


def _batch_of(rec: PromptRecord) -> int:
    params = lab_record(rec).get("params")
    if isinstance(params, dict) and isinstance(params.get("batch"), int):
        return params["batch"]
    found = txt2img(rec.prompt)
    return getattr(found, "batch", 1) if found is not None else 1


# --------------------------------------------------------------------------------------------------------------
# The wall and the queue
# --------------------------------------------------------------------------------------------------------------


def recent_by_owner(st: ServerState) -> dict[str | None, list[PromptRecord]]:
    """Each owner's last RECENT finished prompts, newest first (one query: a window over the owners)."""
    rows = st.store.select(
        "prompt_id IN (SELECT prompt_id FROM (SELECT prompt_id, ROW_NUMBER() OVER "
        "(PARTITION BY owner ORDER BY ended_at DESC, rowid DESC) AS k FROM prompts WHERE state = 'success') "
        "WHERE k <= ?)",
        (RECENT,),
        order="ended_at DESC, rowid DESC",
    )
    found: dict[str | None, list[PromptRecord]] = {}
    for rec in rows:
        found.setdefault(rec.owner, []).append(rec)
    return found


def queue_view(st: ServerState, room: Classroom) -> dict:
    running, pending = st.queue.snapshot()
    scheduler = st.queue.scheduler
    places = scheduler.positions() if scheduler is not None else {}
    if scheduler is not None:  # the order the prompts will start in, not their queue numbers
        order = {job.job_id: i for i, job in enumerate(scheduler.waiting_jobs())}
        pending = sorted(pending, key=lambda rec: order.get(rec.prompt_id, len(order)))
    return {
        "paused": bool(getattr(scheduler, "paused", False)),
        "can_pause": scheduler is not None,
        "running": [waiting_entry(rec, room, True, None) for rec in running],
        "waiting": [waiting_entry(rec, room, False, places.get(rec.prompt_id)) for rec in pending],
    }


def class_state(st: ServerState, room: Classroom, base_url: str) -> dict:
    """Everything the instructor's page shows, in one answer."""
    recent = recent_by_owner(st)
    queue = queue_view(st, room)
    waiting: dict[str | None, int] = {}
    for entry in queue["running"] + queue["waiting"]:
        waiting[entry["owner"]] = waiting.get(entry["owner"], 0) + 1

    def latest(owner: str | None) -> dict | None:
        return next((e for rec in recent.get(owner, []) if (e := image_entry(rec)) is not None), None)

    progress = st.store.all_parcours()

    def parcours(owner: str) -> dict:
        steps, updated_at = progress.get(owner, ({}, None))
        return {**progress_summary(steps), "updated_at": updated_at}

    learners = [
        {
            "id": lid,
            "name": person.name,
            "latest": latest(lid),
            "queued": waiting.get(lid, 0),
            "parcours": parcours(lid),
        }
        for lid, person in list(room.learners.items())
    ]
    join, _ = room.links(room.public_url or base_url)
    exercise = current_exercise(st)
    return {
        "join_url": join,
        "join_code": room.join_code,
        "learners": learners,
        "removed": [{"id": lid, "name": name} for lid, name in list(room.removed.items())],
        "queue": queue,
        "workers": st.queue.workers(),  # who runs the batches: Ray's actors, or this process (PromptQueue.workers)
        "can_add_worker": st.queue.can_add_worker,
        "exercise": exercise,
        "results": exercise_results(st, room, exercise) if exercise is not None else [],
    }


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/"


@instructor_only
async def get_state(request: web.Request) -> web.Response:
    st, room = state(request), _room(request)
    body = await asyncio.to_thread(class_state, st, room, _base_url(request))
    return web.json_response(body, dumps=dumps_finite, headers={"Cache-Control": "no-store"})


@instructor_only
async def join_svg(request: web.Request) -> web.Response:
    import segno

    room = _room(request)
    join, _ = room.links(room.public_url or _base_url(request))
    out = io.BytesIO()
    segno.make(join, error="m").save(out, kind="svg", scale=8, border=2, title="Atelier", xmldecl=False)
    return web.Response(body=out.getvalue(), content_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@instructor_only
async def pause(request: web.Request) -> web.Response:
    st = state(request)
    st.queue.pause()
    st.queue.broadcast_status()
    return web.json_response({"paused": bool(getattr(st.queue.scheduler, "paused", False))})


@instructor_only
async def resume(request: web.Request) -> web.Response:
    st = state(request)
    st.queue.resume()
    st.queue.broadcast_status()
    return web.json_response({"paused": bool(getattr(st.queue.scheduler, "paused", False))})


@instructor_only
async def add_worker(request: web.Request) -> web.Response:
    """One more Ray worker while the class runs (after `ray start --address=...` on another machine, say)."""
    st = state(request)
    if not st.queue.can_add_worker:
        error = ExerciseError("This server runs without Ray: start it with --ray to add workers.", "err.no_ray")
        return web.json_response({"error": str(error), "message_key": error.key, "params": {}}, status=409)
    try:
        await asyncio.to_thread(st.queue.add_worker)
    except Exception as failure:  # Ray could not place it (no free GPU or CPU in the cluster): said, not raised
        log.warning("Could not add a Ray worker: %s", failure)
        error = ExerciseError(f"Ray could not start another worker: {str(failure)[:200]}", "err.worker_not_added")
        return web.json_response({"error": str(error), "message_key": error.key, "params": {}}, status=503)
    st.queue.broadcast_status()
    return web.json_response({"workers": st.queue.workers()})


# --------------------------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------------------------


def _limits(st: ServerState) -> dict[str, dict]:
    if "KSampler" in st.registry and "EmptyLatentImage" in st.registry:
        from atelier.server.lab import form_limits

        return form_limits(st.registry)
    return FALLBACK_LIMITS


def _choices() -> dict[str, list[str]]:
    from atelier.sampling.samplers import SAMPLERS
    from atelier.sampling.schedules import SCHEDULERS

    return {"sampler": list(SAMPLERS), "scheduler": list(SCHEDULERS)}


def _value(name: str, raw: Any, limits: dict[str, dict], choices: dict[str, list[str]]) -> Any:
    """One setting's value, checked as the lab's form checks it; ExerciseError otherwise."""
    if name in TEXT_FIELDS:
        if not isinstance(raw, str) or len(raw) > MAX_TEXT:
            raise ExerciseError(f"The {name} must be text of at most {MAX_TEXT} characters.", "err.text", field=name)
        return raw
    if name in CHOICE_FIELDS:
        if raw not in choices[name]:
            raise ExerciseError(
                f"{raw!r} is not a {name}; expected one of {', '.join(choices[name])}.",
                "err.choice",
                field=name,
                value=str(raw),
            )
        return raw
    limit = limits[name]
    whole = limit["type"] == "INT"
    ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and (not whole or float(raw).is_integer())
    if not ok or not limit["min"] <= raw <= limit["max"] or (whole and limit["step"] and raw % limit["step"]):
        kind = "a whole number" if whole else "a number"
        step = f" and a multiple of {limit['step']}" if whole and limit["step"] else ""
        raise ExerciseError(
            f"The {name} must be {kind} from {limit['min']} to {limit['max']}{step}, got {raw!r}.",
            "err.range",
            field=name,
            lo=limit["min"],
            hi=limit["max"],
        )
    return int(raw) if whole else float(raw)


def check_exercise(body: Any, limits: dict[str, dict], choices: dict[str, list[str]]) -> dict:
    """An exercise from the page's JSON, every value checked: {id, title, settings, vary, values, created_at}."""
    if not isinstance(body, dict):
        raise ExerciseError("The exercise must be a JSON object {title, settings, vary}.", "err.body")
    title = body.get("title") or ""
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise ExerciseError(f"The title must be text of at most {MAX_TITLE} characters.", "err.title", max=MAX_TITLE)
    raw = body.get("settings") or {}
    if not isinstance(raw, dict):
        raise ExerciseError('settings must be an object such as {"seed": 42}.', "err.body")
    known = TEXT_FIELDS + NUMBER_FIELDS + CHOICE_FIELDS
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ExerciseError(
            f"An exercise cannot set {unknown[0]!r}; it sets some of {', '.join(known)}.",
            "err.unknown",
            field=unknown[0],
        )
    settings = {name: _value(name, value, limits, choices) for name, value in raw.items()}
    vary, values = body.get("vary"), []
    if vary is not None:
        if not isinstance(vary, dict) or vary.get("param") not in VARIED or not isinstance(vary.get("values"), list):
            raise ExerciseError(
                f"vary must be {{param, values}} with param one of {', '.join(VARIED)}.",
                "err.vary",
                params=", ".join(VARIED),
            )
        values = [_value(vary["param"], v, limits, choices) for v in vary["values"]]
        if not 1 <= len(values) <= MAX_VALUES:
            raise ExerciseError(
                f"Give from 1 to {MAX_VALUES} values to vary, got {len(values)}.", "err.values", max=MAX_VALUES
            )
        vary = vary["param"]
    if not settings and vary is None:
        raise ExerciseError("The exercise sets nothing: fix at least one setting or vary one.", "err.empty")
    return {
        "id": secrets.token_hex(4),
        "title": title.strip(),
        "settings": settings,
        "vary": vary,
        "values": values,
        "created_at": now_ms(),
    }


def current_exercise(st: ServerState) -> dict | None:
    stored = st.store.class_value(EXERCISE_KEY)
    return json.loads(stored) if stored else None


def broadcast(st: ServerState, event: str, data: Any) -> None:
    """Send a message on every open socket (the hub sends nothing of a prompt to everybody: this is the class's)."""
    for sid in list(st.hub.clients):
        st.hub.send(event, data, sid)


async def post_exercise(request: web.Request) -> web.Response:
    if (refused := _refusal(request)) is not None:
        return refused
    st = state(request)
    try:
        body = await read_json(request, expected="a JSON object")
    except BadJSON:
        return _bad(ExerciseError("The exercise must be a JSON object {title, settings, vary}.", "err.body"))
    try:
        exercise = check_exercise(body, _limits(st), _choices())
    except ExerciseError as ex:
        return _bad(ex)
    await asyncio.to_thread(st.store.set_class_value, EXERCISE_KEY, dumps(exercise))
    broadcast(st, "atelier_exercise", exercise)
    return web.json_response(exercise)


async def delete_exercise(request: web.Request) -> web.Response:
    if (refused := _refusal(request)) is not None:
        return refused
    st = state(request)
    await asyncio.to_thread(st.store.set_class_value, EXERCISE_KEY, None)
    broadcast(st, "atelier_exercise", None)
    return web.json_response({"exercise": None})


async def get_exercise(request: web.Request) -> web.Response:
    """The current exercise (null when none): learners' labs read it on start and as a fallback to the socket."""
    if (refused := _refusal(request, learners_too=True)) is not None:
        return refused
    exercise = await asyncio.to_thread(current_exercise, state(request))
    return web.json_response({"exercise": exercise}, headers={"Cache-Control": "no-store"})


def _cell_key(value: Any) -> Any:
    """A value as a column of the results: 7 and 7.0 are one column (the page's JSON writes 7.0 as 7)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def exercise_results(st: ServerState, room: Classroom, exercise: dict) -> list[dict]:
    """The class's images for one exercise: one row per person who ran it, their latest image per value."""
    records = st.store.select(
        "state = 'success' AND json_extract(extra_data, '$.atelier_lab.exercise') = ?", (exercise["id"],)
    )
    rows: dict[str | None, dict] = {}
    for rec in records:  # oldest first: a later run of the same value replaces an earlier one
        entry = image_entry(rec)
        if entry is None:
            continue
        row = rows.setdefault(rec.owner, {"owner": rec.owner, "name": name_of(room, rec.owner), "cells": {}})
        value = lab_record(rec).get("value")
        row["cells"][_cell_key(value)] = {**entry, "value": value}
    order = [_cell_key(v) for v in exercise["values"]] or [_cell_key(None)]
    return [{**row, "cells": [row["cells"].get(key) for key in order]} for row in rows.values()]


# --------------------------------------------------------------------------------------------------------------
# Removing a learner
# --------------------------------------------------------------------------------------------------------------


async def remove_learner(request: web.Request) -> web.Response:
    if (refused := _refusal(request)) is not None:
        return refused
    st, room = state(request), _room(request)
    try:
        body = await read_json(request, expected="a JSON object")
    except BadJSON:
        body = None
    learner_id = body.get("learner") if isinstance(body, dict) else None
    if not isinstance(learner_id, str) or learner_id not in room.learners:
        error = ExerciseError(f"No learner {str(learner_id)[:40]!r} in the class.", "err.no_learner")
        return web.json_response({"error": str(error), "message_key": error.key, "params": {}}, status=404)
    learner = await asyncio.to_thread(room.remove, learner_id)
    running, pending = st.queue.snapshot()
    cancelled = await asyncio.to_thread(st.queue.cancel, [r.prompt_id for r in pending if r.owner == learner_id])
    interrupted = [r.prompt_id for r in running if r.owner == learner_id and st.queue.interrupt(r.prompt_id)]
    for sid in [sid for sid, owner in list(st.hub.owners.items()) if owner == learner_id]:
        client = st.hub.clients.get(sid)
        if client is not None:
            await client.ws.close()
    return web.json_response(
        {
            "removed": learner_id,
            "name": learner.name if learner else "",
            "cancelled": cancelled,
            "interrupted": interrupted,
        }
    )


# --------------------------------------------------------------------------------------------------------------
# The session's gallery
# --------------------------------------------------------------------------------------------------------------


def folder_name(name: str, owner: str | None) -> str:
    """A zip folder for a person: their name in letters, digits and dashes, then their id ("zoe-martin-1a2b3c4d")."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", plain).strip("-").lower()[:40] or "learner"
    return f"{slug}-{owner}" if owner is not None else "instructor"


def _caption(params: dict) -> str:
    parts = [
        f"{label} {params[key]}"
        for key, label in (("seed", "seed"), ("cfg", "CFG"), ("steps", "steps"), ("sampler", ""), ("scheduler", ""))
        if key in params
    ]
    return " · ".join(p.strip() for p in parts)


def contact_sheet(people: list[tuple[str, list[dict]]], title: str) -> str:
    """The HTML contact sheet: self-contained (its style inline, no script, nothing fetched from elsewhere), every
    text escaped; its images are the PNGs beside it in the zip, by relative path."""
    esc = html.escape
    sections = []
    for name, items in people:
        figures = "\n".join(
            f'<figure><a href="{esc(item["file"])}"><img src="{esc(item["file"])}" '
            f'alt="{esc(str(item["params"].get("prompt", "")))}" loading="lazy"></a><figcaption>'
            f"<q>{esc(str(item['params'].get('prompt', '')))}</q><br>{esc(_caption(item['params']))}"
            "</figcaption></figure>"
            for item in items
        )
        sections.append(f"<section><h2>{esc(name)} <small>({len(items)})</small></h2>\n{figures}\n</section>")
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'">
<title>{esc(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5em}} section{{display:flex;flex-wrap:wrap;gap:.8em;
margin-bottom:2em}} h2{{flex-basis:100%;margin:.2em 0}} figure{{margin:0;width:12em}} img{{width:12em;height:12em;
object-fit:contain;background:#eee;image-rendering:pixelated}} figcaption{{font-size:12px;color:#333}}</style>
</head><body><h1>{esc(title)}</h1>
<p>Planche contact de la séance : chaque image est le PNG à côté de cette page, avec ses paramètres (le graphe est
dans le PNG). / The session's contact sheet: each image is the PNG beside this page, with its parameters (the graph
is inside the PNG).</p>
{"".join(sections) or "<p>Aucune image. / No images.</p>"}
</body></html>
"""


def build_export(st: ServerState, room: Classroom) -> bytes:
    """The session's gallery as a zip: index.html, metadata.json and images/<person>/<file>.png, people in the
    order they joined (the instructor's own images last), each person's images oldest first."""
    records = st.store.select("state = 'success'", order="ended_at, rowid")
    order = {lid: i for i, (lid, _, _) in enumerate(st.store.learners() + st.store.learners(removed=True))}
    people: dict[str | None, list[dict]] = {}
    metadata = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        used: set[str] = set()
        for rec in records:
            params = parameters(rec)
            for ref in output_images(rec):
                path = st.files.path(ref)
                if not path.is_file():
                    continue  # deleted since: the sheet lists what exists
                name = name_of(room, rec.owner)
                inside = f"{ref['subfolder']}/{ref['filename']}".replace("\\", "/").split("/")
                arc = "/".join(
                    ["images", folder_name(name, rec.owner), *(p for p in inside if p not in ("", ".", ".."))]
                )
                if arc in used:
                    continue
                used.add(arc)
                zf.write(path, arc)
                item = {"file": arc, "params": params}
                people.setdefault(rec.owner, []).append(item)
                metadata.append(
                    {
                        "file": arc,
                        "learner": rec.owner,
                        "name": name,
                        "prompt_id": rec.prompt_id,
                        "ended_at": rec.ended_at,
                        "params": params,
                        "exercise": lab_record(rec).get("exercise"),
                    }
                )
        ranked = sorted(people.items(), key=lambda kv: order.get(kv[0], len(order)) if kv[0] is not None else 1e9)
        sheet = contact_sheet(
            [(name_of(room, owner), items) for owner, items in ranked], "Atelier : la séance / the session"
        )
        zf.writestr("index.html", sheet)
        zf.writestr("metadata.json", json.dumps(metadata, ensure_ascii=False, indent=1))
    return buffer.getvalue()


@instructor_only
async def export_zip(request: web.Request) -> web.Response:
    st, room = state(request), _room(request)
    data = await asyncio.to_thread(build_export, st, room)
    headers = {"Content-Disposition": 'attachment; filename="atelier-session.zip"', "Cache-Control": "no-store"}
    return web.Response(body=data, content_type="application/zip", headers=headers)


def setup(app: web.Application) -> None:
    """Mount the page and its routes (before the editor's catch-all static route)."""
    app.router.add_get("/classroom", instructor_only(lambda request: _redirect()))
    app.router.add_get("/classroom/", page_file)
    app.router.add_get("/classroom/{path:.+}", page_file)
    app.router.add_get(f"{API}/state", get_state)
    app.router.add_get(f"{API}/join.svg", join_svg)
    app.router.add_post(f"{API}/pause", pause)
    app.router.add_post(f"{API}/resume", resume)
    app.router.add_post(f"{API}/workers", add_worker)
    app.router.add_get(f"{API}/exercise", get_exercise)
    app.router.add_post(f"{API}/exercise", post_exercise)
    app.router.add_delete(f"{API}/exercise", delete_exercise)
    app.router.add_post(f"{API}/remove", remove_learner)
    app.router.add_get(f"{API}/export.zip", export_zip)


async def _redirect() -> web.Response:
    raise web.HTTPFound("/classroom/")
