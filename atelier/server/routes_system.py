"""Routes the editor needs to start and to describe the machine: users, settings, node definitions, models, stats.

Shapes follow ComfyUI's server (see shared/reference/comfyui-api.md, section 1). A client on another machine (the
server runs with --listen) is not told where the files live nor which Python and PyTorch run it: /system_stats and
the model-folder routes keep their shapes (the editor checks them) with relative folders and empty versions.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import sys

from aiohttp import web

import atelier
from atelier.errors import InputError
from atelier.server.classroom import hide_others_files, settings_for, who
from atelier.server.files import MODEL_EXTENSIONS, MODEL_FOLDERS, UnsafePathError, files_under, safe_join
from atelier.server.security import is_local_client
from atelier.server.state import ServerState, add_api, error_text, state
from atelier.server.strict_json import BadJSON, read_json, read_object


def feature_flags(st: ServerState) -> dict:
    """What this server supports, sent as the WebSocket `feature_flags` reply and by GET /features."""
    # supports_progress_text_metadata: text frames (event 3) start with the prompt id for clients that announced
    # it too (hub.py); the frontend reads that prefix only when the server sends this flag.
    return {
        "supports_preview_metadata": True,
        "supports_progress_text_metadata": True,
        "max_upload_size": st.limits.max_upload_bytes,
    }


# ---- users and settings ----


async def users(request: web.Request) -> web.Response:
    # A "users" key would switch the editor into multi-user mode with a login screen; Atelier has one local user.
    return web.json_response({"storage": "server", "migrated": True})


async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(settings_for(state(request), who(request)).all())


async def post_settings(request: web.Request) -> web.Response:
    try:
        values = await read_json(request, "settings body", "an object of setting ids and values")
    except BadJSON as ex:
        return error_text(ex.status, str(ex))
    if not isinstance(values, dict):
        return error_text(400, "The settings body must be a JSON object of setting ids and values.")
    return _store_settings(request, values)


def _store_settings(request: web.Request, values: dict) -> web.Response:
    try:
        settings_for(state(request), who(request)).update(values)
    except InputError as ex:
        return error_text(400, str(ex))
    return web.Response(status=200)


async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(settings_for(state(request), who(request)).get(request.match_info["id"]))


async def post_setting(request: web.Request) -> web.Response:
    try:
        value = await read_json(request, "setting value")
    except BadJSON as ex:
        return error_text(ex.status, str(ex))
    return _store_settings(request, {request.match_info["id"]: value})


# ---- nodes ----


async def object_info(request: web.Request) -> web.Response:
    return web.json_response(hide_others_files(state(request).registry.object_info(), who(request)))


async def object_info_one(request: web.Request) -> web.Response:
    info = state(request).registry.object_info(request.match_info["cls"])
    return web.json_response(hide_others_files(info, who(request)))


# ---- machine ----


def _memory() -> tuple[int, int]:
    """(total, available) RAM in bytes, from sysconf (0, 0 where the platform does not tell)."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _devices() -> list[dict]:
    import torch  # imported here: the server itself does not need torch, only the nodes do

    if torch.cuda.is_available():
        found = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            found.append(
                {
                    "name": f"cuda:{index} {torch.cuda.get_device_name(index)}",
                    "type": "cuda",
                    "index": index,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": torch.cuda.memory_reserved(index),
                    "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index),
                }
            )
        return found
    total, free = _memory()
    kind = "mps" if torch.backends.mps.is_available() else "cpu"
    return [
        {
            "name": kind,
            "type": kind,
            "index": None,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": total,
            "torch_vram_free": free,
        }
    ]


async def system_stats(request: web.Request) -> web.Response:
    import torch

    total, free = _memory()
    argv = state(request).argv
    system = {
        "os": sys.platform,
        "ram_total": total,
        "ram_free": free,
        "comfyui_version": atelier.__version__,  # the editor compares it with the version it requires
        "atelier_version": atelier.__version__,
        "python_version": sys.version,
        "pytorch_version": torch.__version__,
        "embedded_python": False,
        "argv": argv,  # the editor looks for --disable-api-nodes here
        "platform": platform.platform(),
    }
    if not is_local_client(request):  # strings still (the editor's schema wants them), but nothing to aim at
        system.update(python_version="", pytorch_version="", platform="")
        system["argv"] = [a for a in argv if "/" not in a and "\\" not in a]  # no paths
    return web.json_response({"system": system, "devices": _devices()})


async def features(request: web.Request) -> web.Response:
    return web.json_response(feature_flags(state(request)))


async def interrupt(request: web.Request) -> web.Response:
    try:
        body = await read_object(request)  # the editor may post no body at all: interrupt whatever runs
    except BadJSON as ex:
        return error_text(ex.status, str(ex))
    prompt_id = body.get("prompt_id") if isinstance(body.get("prompt_id"), str) else None
    st, person = state(request), who(request)
    if not person.sees_all:  # a learner stops only their own prompt
        mine = [r.prompt_id for r in st.queue.snapshot()[0] if r.owner == person.owner]
        if not mine or (prompt_id is not None and prompt_id not in mine):
            return web.Response(status=200)
        prompt_id = mine[0]
    st.queue.interrupt(prompt_id)
    return web.Response(status=200)


FREE_REFUSED = (
    "Seul le formateur peut vider la mémoire du serveur (toute la classe l'utilise). / "
    "Only the instructor can free the server's memory (the whole class uses it)."
)


async def free(request: web.Request) -> web.Response:
    try:
        body = await read_object(request)
    except BadJSON as ex:
        return error_text(ex.status, str(ex))
    unload, free_memory = bool(body.get("unload_models")), bool(body.get("free_memory"))
    st = state(request)
    if not who(request).sees_all:  # classroom mode: unloading the model would slow down the whole class
        return error_text(403, FREE_REFUSED)
    if free_memory:
        st.queue.executor.cache.clear()  # forget cached node outputs: the next prompt recomputes everything
    if st.on_free is not None and (unload or free_memory):
        st.on_free(unload, free_memory)
    return web.Response(status=200)


# ---- models ----


def _model_names(request: web.Request, folder: str) -> list[str] | None:
    path = state(request).data.model_folder(folder)
    if path is None:
        return None
    return [p.relative_to(path).as_posix() for p in files_under(path, MODEL_EXTENSIONS)]


async def models(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


async def models_in(request: web.Request) -> web.Response:
    names = _model_names(request, request.match_info["folder"])
    if names is None:
        return error_text(404, f"No model folder {request.match_info['folder']!r}; expected one of {MODEL_FOLDERS}.")
    return web.json_response(names)


async def embeddings(request: web.Request) -> web.Response:
    names = _model_names(request, "embeddings") or []
    return web.json_response([os.path.splitext(n)[0] for n in names])


def _shown_folder(request: web.Request, folder: str) -> str:
    """models/<folder> as a client may see it: absolute on this machine, relative to the data dir from another."""
    models_dir = state(request).data.models
    return str(models_dir / folder) if is_local_client(request) else f"{models_dir.name}/{folder}"


async def experiment_models(request: web.Request) -> web.Response:
    return web.json_response([{"name": f, "folders": [_shown_folder(request, f)]} for f in MODEL_FOLDERS])


async def experiment_models_in(request: web.Request) -> web.Response:
    folder = state(request).data.model_folder(request.match_info["folder"])
    if folder is None:
        return error_text(404, f"No model folder {request.match_info['folder']!r}; expected one of {MODEL_FOLDERS}.")
    entries = []
    for path in files_under(folder, MODEL_EXTENSIONS):
        info = path.stat()
        entries.append(
            {
                "name": path.relative_to(folder).as_posix(),
                "pathIndex": 0,
                "modified": info.st_mtime,
                "created": info.st_ctime,
                "size": info.st_size,
            }
        )
    return web.json_response(entries)


def safetensors_metadata(path: os.PathLike) -> dict | None:
    """The `__metadata__` of a .safetensors header (8-byte little-endian length, then JSON), or None."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            return None
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


async def view_metadata(request: web.Request) -> web.Response:
    folder = state(request).data.model_folder(request.match_info["folder"])
    filename = request.query.get("filename", "")
    if folder is None or not filename.endswith(".safetensors"):
        return error_text(404, "Metadata is only read from .safetensors files in a model folder.")
    try:
        path = safe_join(folder, filename, what="model file")
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    if not path.is_file():
        return error_text(404, f"The model file {filename!r} does not exist.")
    meta = safetensors_metadata(path)
    return web.json_response(meta) if meta is not None else error_text(404, f"{filename!r} has no metadata.")


# ---- small things the editor asks for ----


async def logs(request: web.Request) -> web.Response:
    return web.json_response("")


async def raw_logs(request: web.Request) -> web.Response:
    return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})


async def subscribe_logs(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def folder_paths(request: web.Request) -> web.Response:
    return web.json_response({f: [_shown_folder(request, f)] for f in MODEL_FOLDERS})


def setup(app: web.Application) -> None:
    add_api(app, "GET", "/users", users)
    add_api(app, "GET", "/settings", get_settings)
    add_api(app, "POST", "/settings", post_settings)
    add_api(app, "GET", "/settings/{id}", get_setting)
    add_api(app, "POST", "/settings/{id}", post_setting)
    add_api(app, "GET", "/object_info", object_info)
    add_api(app, "GET", "/object_info/{cls}", object_info_one)
    add_api(app, "GET", "/system_stats", system_stats)
    add_api(app, "GET", "/features", features)
    add_api(app, "POST", "/interrupt", interrupt)
    add_api(app, "POST", "/free", free)
    add_api(app, "GET", "/embeddings", embeddings)
    add_api(app, "GET", "/models", models)
    add_api(app, "GET", "/models/{folder}", models_in)
    add_api(app, "GET", "/experiment/models", experiment_models)
    add_api(app, "GET", "/experiment/models/{folder}", experiment_models_in)
    add_api(app, "GET", "/view_metadata/{folder}", view_metadata)
    app.router.add_get("/internal/logs", logs)
    app.router.add_get("/internal/logs/raw", raw_logs)
    app.router.add_patch("/internal/logs/subscribe", subscribe_logs)
    app.router.add_get("/internal/folder_paths", folder_paths)
