"""The lab: a plain page at /lab/ for the workshop, and the few routes only it needs under /atelier/lab/.

Generations in the lab go through the same ComfyUI protocol as the node editor (POST /api/prompt, /ws, /api/view,
/api/history): the lab asks this module for the graph of its parameters (built by lab_graphs.py, which names each
output by its role), queues it, and shows what comes back.
The routes below answer the questions a graph cannot: how a prompt is cut into tokens, which sigmas a scheduler
visits, where words (and images) sit in the text encoder's space, what the VAE keeps of an image, and whether two
images are the same pixel for pixel.

    GET  /lab/                          the page (atelier/web/lab/: index.html, lab.css, *.js, i18n/*.json)
    GET  /atelier/lab/options           models and their native sizes, LoRAs, embeddings, samplers, schedulers, the
                                        teaching defaults and the form's limits
    POST /atelier/lab/graph             {params, view?, init_image?, words?} -> {prompt (API), roles, workflow}
    POST /atelier/lab/workflow          {prompt} -> {workflow}: any API prompt, laid out for the node editor
    GET  /atelier/lab/tokens?text=      the prompt's tokens, ids and 77-token windows
    GET  /atelier/lab/schedules?steps=&scheduler=&denoise=   sigma per step for every scheduler
    GET  /atelier/lab/vocabulary?lang=&model=   what the embedded model can draw, and every word it read in training
    GET  /atelier/lab/compose?lang=&kind=&colour=[&size=&cell=&background=]   a prompt in its training captions' grammar
    POST /atelier/lab/concepts          {words, images?} -> 2-D map (PCA) of text and image embeddings
    POST /atelier/lab/vae-roundtrip     {image: file ref} -> reconstruction, 4 latent channels, compression figures
    POST /atelier/lab/compare           {a, b: file refs} -> pixel difference of two images
    GET  /atelier/lab/parcours/check?check=&since=   whether the newest editor graph has a parcours step's wires
    GET  /atelier/lab/parcours/progress the asker's own progress through the parcours {steps: {id: {done, opened}},
                                        owner: their learner id, or null}
    PUT  /atelier/lab/parcours/progress {steps}: replace it (in classroom mode the instructor's page shows it)

Each of these routes computes its lesson in atelier/lessons/ and renders it as JSON. The models they need (the
embedded model's text encoder, VAE and image encoder, ~10 MB in all) are loaded on first use and kept in the app's
state (`state(request).lab`); the UNet is not kept, since only the prompt queue samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from aiohttp import web
from PIL import Image, ImageOps

from atelier.errors import AtelierError, InputError
from atelier.graph.registry import NodeRegistry
from atelier.graph.validation import shape_problem
from atelier.lessons.parcours import CHECKS, clean_progress, missing_wires
from atelier.lessons.tokens import PromptTokens, read_tokens, word_positions
from atelier.server.classroom import may_read, visible, who
from atelier.server.files import UnsafePathError, safe_join
from atelier.server.frontend import MIME_TYPES, NO_CACHE
from atelier.server.security import page_policy
from atelier.server.state import error_text, state
from atelier.server.store import now_ms
from atelier.server.strict_json import read_json

if TYPE_CHECKING:  # these lessons import torch, loaded on their route's first call
    from torch import Tensor

    from atelier.lessons.concepts import ConceptMap
    from atelier.lessons.round_trip import RoundTrip
    from atelier.lessons.schedules import SchedulerComparison

LAB_ROOT = Path(__file__).resolve().parent.parent / "web" / "lab"
API = "/atelier/lab"
EMBEDDED = "embedded.safetensors"  # models.library.EMBEDDED_NAME, without importing torch at server start
MAX_WORDS = 40  # concept map: words and phrases per request
MAX_IMAGES = 12  # concept map: images per request
MAX_TEXT = 2000  # characters of a prompt for the token view
VAE_MAX_SIDE = 512  # the VAE round trip shrinks larger uploads (a CPU must answer in seconds)

# What the lab starts with: small and quick on a laptop CPU, and each value the plain textbook one.
TEACHING_DEFAULTS = {
    "model": EMBEDDED,
    "prompt": "a red circle on the left",
    "negative": "",
    "seed": 42,
    "steps": 20,
    "cfg": 7.5,
    "sampler": "euler",
    "scheduler": "normal",
    "width": 128,
    "height": 128,
    "batch": 1,
    "denoise": 1.0,
}

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------
# The lessons' work, off the event loop (their models: state(request).lab, server/state.py)
# --------------------------------------------------------------------------------------------------------------


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run torch work off the event loop, so the page and the WebSocket stay live meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# --------------------------------------------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------------------------------------------


def _bad(message: str, status: int = 400, key: str | None = None, params: dict | None = None) -> web.Response:
    """{"error": the English sentence} and, for the page to say it in the learner's language, its key and params."""
    body = {"error": message} if key is None else {"error": message, "message_key": key, "params": params or {}}
    return web.json_response(body, status=status)


async def _body(request: web.Request) -> dict:
    body = await read_json(request, expected="a JSON object")  # strict and bounded; BadJSON is an InputError
    if not isinstance(body, dict):
        raise InputError("The request body must be a JSON object.")
    return body


def _int_arg(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {raw!r}.") from None
    if not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {value}.")
    return value


def _open_ref(request: web.Request, ref: Any, what: str) -> Image.Image:
    """An RGB image from a file reference {"filename", "subfolder", "type"} (input, output or temp)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise InputError(f"The {what} must be a file reference {{filename, subfolder, type}}, got {ref!r}.")
    ref = {"type": "input", "subfolder": "", **ref}
    path = state(request).files.path(ref)
    if not path.is_file() or not may_read(state(request), who(request), ref):  # classroom: not another's image
        raise InputError(f"The {what} {ref['filename']!r} does not exist in {ref.get('type', 'input')}/.")
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def _handler(fn: Callable) -> Callable:
    """Turn a user's mistake (AtelierError) into a 400 JSON {"error": sentence}; anything else is a bug (500)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except UnsafePathError as ex:
            return _bad(str(ex), ex.status)
        except AtelierError as ex:
            return _bad(str(ex), key=ex.key, params=ex.params)

    return wrapped


# --------------------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------------------


async def lab_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/lab/")


async def lab_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info.get("path") or "index.html"
    try:
        path = safe_join(LAB_ROOT, relative, what="file")
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    if not path.is_file():
        return error_text(404, f"No lab file {relative!r}.")
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": mime, "Content-Security-Policy": page_policy(), **NO_CACHE})


# --------------------------------------------------------------------------------------------------------------
# Options and graphs
# --------------------------------------------------------------------------------------------------------------


def _choices(request: web.Request, node: str, input_name: str, fallback: list[str]) -> list[str]:
    """A combo's options as the node editor sees them (the registry may hold stub nodes in tests)."""
    registry = state(request).registry
    if node not in registry:
        return fallback
    for inp in registry.require(node).SCHEMA.inputs:
        if inp.name == input_name:
            return inp.choices()
    return fallback


def form_limits(registry: NodeRegistry) -> dict[str, dict]:
    """What each numeric field of the lab's form accepts: the type, min, max and step of the node input it sets
    (KSampler's and EmptyLatentImage's schemas, lab_graphs.PARAM_INPUTS), so the form and the nodes agree."""
    from atelier.server.lab_graphs import PARAM_INPUTS

    limits = {}
    for param, (node, input_name) in PARAM_INPUTS.items():
        [inp] = [i for i in registry.require(node).SCHEMA.inputs if i.name == input_name]
        limits[param] = {"type": inp.type, "min": inp.min, "max": inp.max, "step": inp.step}
    return limits


def _models_folders(request: web.Request) -> Any:
    """The node editor's model folders (ModelPaths), or None with a registry of stub nodes (tests)."""
    env = getattr(state(request).registry.get("CLIPTextEncode"), "env", None)
    return env.models if env is not None else None


def _embedding_names(request: web.Request) -> list[str]:
    """The names `embedding:name` can use: the files of models/embeddings without their extension."""
    folders = _models_folders(request)
    return sorted({name.rsplit(".", 1)[0] for name in folders.list("embeddings")}) if folders is not None else []


def _embedding_folder(request: web.Request) -> Any:
    """What `embedding:name` reads in the token view: the embeddings folder, any width (only positions count)."""
    from atelier.models.embeddings import EmbeddingFolder

    folders = _models_folders(request)
    return EmbeddingFolder(folders, None) if folders is not None else None


def native_sizes(request: web.Request, models: list[str]) -> dict[str, int]:
    """The image side each model was trained at (models/library.py native_size: our metadata, else SD1.x's 512).
    Above it the UNet meets a latent larger than any it learned from, and repeats what it knows across it."""
    from atelier.models.library import native_size, resolve_model

    sizes = {}
    for name in models:
        try:
            sizes[name] = native_size(resolve_model(name, state(request).data.root))
        except AtelierError:  # a name the loader will refuse with its own sentence
            sizes[name] = 512
    return sizes


@_handler
async def options(request: web.Request) -> web.Response:
    from atelier.sampling.samplers import SAMPLERS
    from atelier.sampling.schedules import SCHEDULERS

    models = _choices(request, "CheckpointLoaderSimple", "ckpt_name", [EMBEDDED])
    return web.json_response(
        {
            "models": models,
            "native_sizes": native_sizes(request, models),
            "loras": _choices(request, "LoraLoader", "lora_name", []),
            "embeddings": _embedding_names(request),
            "samplers": list(SAMPLERS),
            "schedulers": list(SCHEDULERS),
            "defaults": TEACHING_DEFAULTS,
            "limits": form_limits(state(request).registry),
            "node_types": sorted(state(request).registry),
        }
    )


def generation_params(raw: Any) -> Any:
    """GenerationParams from the page's JSON, checked (one sentence for the first bad value)."""
    from atelier.generation import GenerationParams

    if not isinstance(raw, dict):
        raise InputError("params must be a JSON object of generation parameters.")
    fields = {f.name: f for f in dataclasses.fields(GenerationParams)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise InputError(f"Unknown generation parameter {unknown[0]!r}; expected some of {', '.join(fields)}.")
    values = {**TEACHING_DEFAULTS, **raw}
    values = {k: v for k, v in values.items() if k in fields}
    for name in ("seed", "steps", "width", "height", "batch"):
        value = values[name]
        if isinstance(value, float) and value.is_integer():
            values[name] = int(value)
    params = GenerationParams(**values)
    params.check()
    if params.seed == -1:
        raise InputError("Seed -1 (random) is drawn by the page before queuing; the graph needs the seed itself.")
    return params


def ui_workflow(request: web.Request, prompt: dict) -> dict:
    from atelier.graph.workflow import api_to_ui

    return api_to_ui(prompt, state(request).registry)


@_handler
async def graph(request: web.Request) -> web.Response:
    from atelier.server.lab_graphs import view_graph

    body = await _body(request)
    params = generation_params(body.get("params"))
    init_image = body.get("init_image")
    if init_image is not None and (not isinstance(init_image, str) or not init_image):
        raise InputError("init_image must be the name of an uploaded image in input/, e.g. 'photo.png'.")
    if init_image is None and params.denoise < 1.0:
        raise InputError("Denoise below 1 needs an init image (img2img); upload one or set denoise to 1.")
    words = body.get("words")
    if words is not None and not isinstance(words, list):
        raise InputError("words must be a list of words of the prompt.")
    prefix = body.get("filename_prefix") or "lab"
    if not isinstance(prefix, str):
        raise InputError("filename_prefix must be text, e.g. 'lab'.")
    view = str(body.get("view") or "generate")
    if view == "attention" and isinstance(words, list):  # the node would refuse them only once queued, in English
        tokenizer = await _in_thread(state(request).lab.tokenizer)
        for word in words:
            word_positions(tokenizer, params.prompt, str(word))
    lab_graph = view_graph(params, view, init_image, words, prefix)
    return web.json_response(
        {"prompt": lab_graph.prompt, "roles": lab_graph.roles, "workflow": ui_workflow(request, lab_graph.prompt)}
    )


@_handler
async def workflow(request: web.Request) -> web.Response:
    body = await _body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        raise InputError("prompt must be an API-format graph {node_id: {class_type, inputs}}.")
    if (problem := shape_problem(prompt)) is not None:
        raise InputError(f"{problem['message']} ({problem['details'] or 'prompt'})")
    return web.json_response({"workflow": ui_workflow(request, prompt)})


# --------------------------------------------------------------------------------------------------------------
# Text: tokens and the 77-token window
# --------------------------------------------------------------------------------------------------------------


def token_report(prompt: PromptTokens) -> dict:
    """The page's JSON of a prompt's tokens (lessons/tokens.py); `over` counts the tokens past the first window."""
    tokens = prompt.tokens
    return {
        "tokens": [dataclasses.asdict(t) for t in tokens],
        "count": len(tokens),
        "window": prompt.size,
        "text_slots": prompt.text_slots,
        "over": len(prompt.cut),
        "windows": [[dataclasses.asdict(t) for t in window] for window in prompt.windows],
        "start_id": prompt.start_id,
        "end_id": prompt.end_id,
        "unknown_embeddings": list(prompt.unknown_embeddings),
    }


@_handler
async def tokens(request: web.Request) -> web.Response:
    text = request.query.get("text", "")
    if len(text) > MAX_TEXT:
        raise InputError(
            f"text is {len(text)} characters long; the token view reads at most {MAX_TEXT}.",
            "text_too_long",
            length=len(text),
            max=MAX_TEXT,
        )
    lab = state(request).lab
    embeddings = _embedding_folder(request)
    prompt = await _in_thread(lambda: read_tokens(lab.tokenizer(), text, embeddings))
    return web.json_response(token_report(prompt))


# --------------------------------------------------------------------------------------------------------------
# Vocabulary: what the embedded model knows (lessons/vocabulary.py)
# --------------------------------------------------------------------------------------------------------------


@_handler
async def vocabulary(request: web.Request) -> web.Response:
    """The embedded model's world in the interface language; for any other model, only {"known": false}: what a
    user's own checkpoint learned is not ours to say."""
    from atelier.lessons.vocabulary import CATEGORIES, known_words, world_choices

    if request.query.get("model", EMBEDDED) != EMBEDDED:
        return web.json_response({"known": False})
    choices = world_choices(request.query.get("lang", "en"))
    return web.json_response(
        {
            "known": True,
            "categories": list(CATEGORIES),
            "choices": {category: [dataclasses.asdict(c) for c in choices[category]] for category in CATEGORIES},
            "words": sorted(known_words()),
        }
    )


@_handler
async def compose(request: web.Request) -> web.Response:
    from atelier.lessons.vocabulary import compose_prompt

    q = request.query
    names = {key: q.get(key) or None for key in ("kind", "colour", "size", "cell", "background")}
    if not names["kind"] or not names["colour"]:
        raise InputError("compose needs an object (kind) and a colour: every training caption names both.")
    return web.json_response({"prompt": compose_prompt(q.get("lang", "en"), **names)})


# --------------------------------------------------------------------------------------------------------------
# Schedules: sigma per step
# --------------------------------------------------------------------------------------------------------------


def schedule_report(comparison: SchedulerComparison) -> dict:
    """The page's JSON of every scheduler's sigmas (lessons/schedules.py), rounded to 5 decimals."""
    return {
        "steps": comparison.steps,
        "current": comparison.scheduler,
        "denoise": comparison.denoise,
        "sigma_max": comparison.sigma_max,
        "sigma_min": comparison.sigma_min,
        "schedulers": {name: [round(s, 5) for s in sigmas] for name, sigmas in comparison.curves.items()},
    }


@_handler
async def schedules(request: web.Request) -> web.Response:
    from atelier.lessons.schedules import compare_schedulers
    from atelier.sampling.denoisers import DiscreteSchedule

    steps = _int_arg(request.query, "steps", 20, 1, 1000)
    raw = request.query.get("denoise", "1")
    try:
        denoise = float(raw)
    except ValueError:
        raise InputError(f"denoise must be a number from 0 to 1, got {raw!r}.") from None
    if not 0.0 < denoise <= 1.0:
        raise InputError(f"denoise must be a number above 0 and at most 1, got {denoise}.")
    scheduler = request.query.get("scheduler", "normal")
    # SD's training schedule, the embedded model's too: no model needs to be loaded to draw it.
    comparison = compare_schedulers(DiscreteSchedule.scaled_linear(), steps, scheduler, denoise)
    return web.json_response(schedule_report(comparison))


# --------------------------------------------------------------------------------------------------------------
# Concept map: text (and image) embeddings projected to 2-D
# --------------------------------------------------------------------------------------------------------------


def concept_report(concepts: ConceptMap) -> dict:
    """The page's JSON of a concept map (lessons/concepts.py), similarities rounded to 4 decimals."""
    points = [{**dataclasses.asdict(p), "nearest_similarity": round(p.nearest_similarity, 4)} for p in concepts.points]
    return {
        "points": points,
        "explained": concepts.explained,
        "similarity": np.round(concepts.similarity, 4).tolist(),
        "dim": concepts.dim,
    }


@_handler
async def concepts(request: web.Request) -> web.Response:
    from atelier.lessons.concepts import concept_map

    body = await _body(request)
    words = body.get("words", [])
    refs = body.get("images", [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise InputError("words must be a list of words or short phrases.")
    if not isinstance(refs, list):
        raise InputError("images must be a list of file references {filename, subfolder, type}.")
    words = [w.strip() for w in words if w.strip()]
    if len(words) > MAX_WORDS or len(refs) > MAX_IMAGES:
        raise InputError(
            f"The concept map takes at most {MAX_WORDS} words and {MAX_IMAGES} images at once.",
            "concepts_too_many",
            words=MAX_WORDS,
            images=MAX_IMAGES,
        )
    if len(words) + len(refs) < 3:
        raise InputError(
            "Give at least 3 words or images in all: a map of fewer points shows nothing.", "concepts_too_few"
        )
    images = [_open_ref(request, ref, "image") for ref in refs]
    labels = [str(ref.get("label") or ref["filename"]) for ref in refs]
    lab = state(request).lab
    concepts = await _in_thread(lambda: concept_map(lab.models(), words, images, labels))
    return web.json_response(concept_report(concepts))


# --------------------------------------------------------------------------------------------------------------
# VAE round trip and latent channels
# --------------------------------------------------------------------------------------------------------------


def channel_pictures(latent: Tensor) -> list[Image.Image]:
    """One RAW latent (C, h, w) -> C grey pictures of h x w (lessons/channels.py, "shared symmetric", the mapping
    of the latent view too); the page enlarges them."""
    from atelier.imaging import unit_to_uint8
    from atelier.lessons.channels import channel_greys

    return [Image.fromarray(grey.numpy()) for grey in unit_to_uint8(channel_greys(latent))]


def vae_report(trip: RoundTrip, save: Callable[[Image.Image, str], dict]) -> dict:
    """The page's JSON of a VAE round trip (lessons/round_trip.py): its pictures saved with `save`, its figures."""
    from atelier.lessons.channels import channel_stats

    stats = [dataclasses.asdict(s) for s in channel_stats(trip.latent)]  # RAW units, as the Latent Channels node
    return {
        "original": save(trip.original, "lab_vae_in"),
        "reconstruction": save(trip.reconstruction, "lab_vae_out"),
        "channels": [save(grey, f"lab_latent_c{i}") for i, grey in enumerate(channel_pictures(trip.latent))],
        "channel_stats": stats,
        "image_shape": [3, trip.original.height, trip.original.width],
        "latent_shape": list(trip.latent.shape),
        "pixel_values": trip.pixel_values,
        "latent_values": trip.latent_values,
        "ratio_values": trip.ratio_values,
        "ratio_bytes_fp16": trip.ratio_bytes_fp16,
        "mean_abs_error": trip.mean_abs_error,
        # JSON has no infinity: an exact reconstruction is sent as null (the page shows "∞").
        "psnr_db": trip.psnr_db if math.isfinite(trip.psnr_db) else None,
    }


@_handler
async def vae_roundtrip_route(request: web.Request) -> web.Response:
    from atelier.lessons.round_trip import round_trip

    body = await _body(request)
    image = _open_ref(request, body.get("image"), "image")
    files, room, person = state(request).files, state(request).classroom, who(request)

    def save(img: Image.Image, prefix: str) -> dict:
        ref = files.save_image(img, prefix, "temp")
        if room is not None:
            room.claim_file(person, ref)  # the learner's to open with /view
        return ref

    lab = state(request).lab
    return web.json_response(
        await _in_thread(lambda: vae_report(round_trip(lab.models().vae, image, VAE_MAX_SIDE), save))
    )


# --------------------------------------------------------------------------------------------------------------
# Are two images the same?
# --------------------------------------------------------------------------------------------------------------


def compare_images(a: Image.Image, b: Image.Image) -> dict:
    """Pixel difference of two images of one size: max and mean |a - b| over the 8-bit RGB values."""
    if a.size != b.size:
        raise InputError(f"The two images differ in size ({a.width}x{a.height} and {b.width}x{b.height}).")
    x, y = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    diff = np.abs(x - y)  # (H, W, 3)
    return {
        "identical": bool(diff.max() == 0),
        "max_abs": int(diff.max()),
        "mean_abs": float(diff.mean()),
        "differing_pixels": int((diff.max(axis=2) > 0).sum()),
        "pixels": a.width * a.height,
    }


@_handler
async def compare(request: web.Request) -> web.Response:
    body = await _body(request)
    a, b = _open_ref(request, body.get("a"), "image a"), _open_ref(request, body.get("b"), "image b")
    return web.json_response(compare_images(a, b))


# --------------------------------------------------------------------------------------------------------------
# Le parcours: did the learner's own graph run, with the structure the step asks for?
# --------------------------------------------------------------------------------------------------------------


@_handler
async def parcours_check(request: web.Request) -> web.Response:
    """GET ?check=txt2img|img2img&since=<ms>: the newest graph the learner ran from the node editor since `since`
    (the lab's own runs carry extra_data.atelier_lab and are left out), and the wires it lacks (lessons/parcours.py).
    In classroom mode a learner's history holds only their own prompts, so each learner is checked on their work."""
    check = request.query.get("check", "")
    if check not in CHECKS:
        raise InputError(f"check must be one of {', '.join(CHECKS)}, got {check!r}.")
    since = _int_arg(request.query, "since", 0, 0, 2**53)
    store, person = state(request).store, who(request)

    def newest() -> dict:
        runs = [
            rec
            for rec in visible(person, store.history())
            if rec.state == "success" and "atelier_lab" not in rec.extra_data and rec.created_at >= since
        ]
        if not runs:
            return {"done": False, "ran": False, "missing": []}
        rec = max(runs, key=lambda r: r.created_at)
        missing = missing_wires(rec.prompt, check)
        return {"done": not missing, "ran": True, "prompt_id": rec.prompt_id, "missing": missing}

    return web.json_response(await asyncio.to_thread(newest))


@_handler
async def parcours_progress(request: web.Request) -> web.Response:
    """GET: the asker's own progress; PUT {steps}: replace it. Kept in the store per learner (their id; the local
    user and the instructor share one record), so a restart or another browser of the same learner keeps it, and
    the instructor's page (server/instructor.py) shows how far each learner is. Nobody reads another's here."""
    store, person = state(request).store, who(request)
    if request.method == "PUT":
        steps = clean_progress((await _body(request)).get("steps"))
        await asyncio.to_thread(store.set_parcours, person.owner, steps, now_ms())
        return web.json_response({"steps": steps})
    steps = await asyncio.to_thread(store.parcours, person.owner)
    return web.json_response({"steps": steps, "owner": person.owner})  # owner: names the lab's browser record


def setup(app: web.Application) -> None:
    """Mount the page and its routes (before the editor's catch-all static route)."""
    app.router.add_get("/lab", lab_redirect)
    app.router.add_get("/lab/", lab_file)
    app.router.add_get("/lab/{path:.+}", lab_file)
    app.router.add_get(f"{API}/options", options)
    app.router.add_post(f"{API}/graph", graph)
    app.router.add_post(f"{API}/workflow", workflow)
    app.router.add_get(f"{API}/tokens", tokens)
    app.router.add_get(f"{API}/schedules", schedules)
    app.router.add_get(f"{API}/vocabulary", vocabulary)
    app.router.add_get(f"{API}/compose", compose)
    app.router.add_post(f"{API}/concepts", concepts)
    app.router.add_post(f"{API}/vae-roundtrip", vae_roundtrip_route)
    app.router.add_post(f"{API}/compare", compare)
    app.router.add_get(f"{API}/parcours/check", parcours_check)
    app.router.add_get(f"{API}/parcours/progress", parcours_progress)
    app.router.add_put(f"{API}/parcours/progress", parcours_progress)
