"""The editor's own files under user/default/: saved workflows, keybindings, templates it remembers.

A file name arrives URL-encoded in one path segment ("workflows%2Fcat.json"); aiohttp decodes it and safe_join
keeps it inside user/default/ (no absolute paths, no `..`, no symlinks out). Files are served as stored files
(security.stored_file: an image type read from the bytes, or a download), so a file saved as `x.html` never runs as
a page; the one exception is user.css, the editor's style sheet for the user's own styles.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from atelier.server.classroom import user_folder, who
from atelier.server.files import UnsafePathError, files_under, safe_join, write_atomic
from atelier.server.security import stored_file
from atelier.server.state import add_api, error_text, state

USER_STYLESHEET = "user.css"  # index.html links it as a style sheet: it applies only when served as text/css

# What the editor reads on every start before the user has saved anything: its own files and folders, which are
# empty until then. They answer as empty (200) rather than 404, which the browser would log as a console error
# on every page load; any other missing file or folder is a 404, as in ComfyUI.
EMPTY_EDITOR_FILES = {USER_STYLESHEET: ("", "text/css"), "comfy.templates.json": ("[]", "application/json")}
EDITOR_FOLDERS = ("workflows", "subgraphs")


def _user_path(request: web.Request, relative: str) -> Path:
    try:
        return safe_join(user_folder(state(request), who(request)), relative, what="user file")
    except UnsafePathError as ex:
        raise _http_error(ex) from None


def _http_error(ex: UnsafePathError) -> web.HTTPException:
    return web.HTTPForbidden(text=str(ex)) if ex.status == 403 else web.HTTPBadRequest(text=str(ex))


def file_info(path: Path, relative: str) -> dict:
    stat = path.stat()
    return {"path": relative, "size": stat.st_size, "modified": stat.st_mtime, "created": stat.st_ctime}


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() in ("true", "1")


async def list_userdata(request: web.Request) -> web.Response:
    """GET /userdata?dir=workflows&recurse=true&split=false&full_info=true (404 = nothing there yet)."""
    directory = request.query.get("dir", "")
    if not directory:
        return error_text(400, "The query parameter 'dir' is missing; expected e.g. dir=workflows.")
    folder = _user_path(request, directory)
    if not folder.is_dir():
        if directory.strip("/") in EDITOR_FOLDERS:
            return web.json_response([])
        return error_text(404, f"The user folder {directory!r} does not exist.")
    recurse = _flag(request, "recurse")
    paths = files_under(folder) if recurse else (p for p in sorted(folder.iterdir()) if p.is_file())
    result: list = []
    for path in paths:
        relative = path.relative_to(folder).as_posix()
        if _flag(request, "full_info"):
            result.append(file_info(path, relative))
        elif _flag(request, "split"):
            result.append([relative, *relative.split("/")])
        else:
            result.append(relative)
    return web.json_response(result)


async def list_userdata_v2(request: web.Request) -> web.Response:
    """GET /v2/userdata?path=sub/dir: the entries of one folder, files and folders."""
    relative = request.query.get("path", "")
    folder = _user_path(request, relative)
    if not folder.is_dir():
        return error_text(404, f"The user folder {relative!r} does not exist.")
    root = user_folder(state(request), who(request))
    entries = []
    for path in sorted(folder.iterdir()):
        if not path.resolve().is_relative_to(root.resolve()):
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            entries.append({"name": path.name, "path": rel, "type": "directory"})
        elif path.is_file():
            stat = path.stat()
            entries.append(
                {"name": path.name, "path": rel, "type": "file", "size": stat.st_size, "modified": stat.st_mtime}
            )
    return web.json_response(entries)


async def get_userdata(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["file"]
    path = _user_path(request, relative)
    if not path.is_file():
        if relative in EMPTY_EDITOR_FILES:
            text, content_type = EMPTY_EDITOR_FILES[relative]
            return web.Response(text=text, content_type=content_type)
        return error_text(404, f"The user file {relative!r} does not exist.")
    if relative == USER_STYLESHEET:  # CSS runs no script; with nosniff it cannot be read as anything else
        return web.FileResponse(path, headers={"Content-Type": "text/css"})
    return stored_file(path)


async def post_userdata(request: web.Request) -> web.Response:
    relative = request.match_info["file"]
    path = _user_path(request, relative)
    if path.is_dir() or path == user_folder(state(request), who(request)):
        return error_text(400, f"The user file {relative!r} names a folder; expected a file name.")
    if path.exists() and not _flag(request, "overwrite", default=True):
        return error_text(409, f"The user file {relative!r} already exists (overwrite=false).")
    write_atomic(path, await request.read())
    if _flag(request, "full_info"):
        return web.json_response(file_info(path, relative))
    return web.json_response(relative)


async def delete_userdata(request: web.Request) -> web.Response:
    relative = request.match_info["file"]
    path = _user_path(request, relative)
    if not path.is_file():
        return error_text(404, f"The user file {relative!r} does not exist.")
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    source_rel, dest_rel = request.match_info["file"], request.match_info["dest"]
    source, dest = _user_path(request, source_rel), _user_path(request, dest_rel)
    if not source.is_file():
        return error_text(404, f"The user file {source_rel!r} does not exist.")
    if dest.exists() and not _flag(request, "overwrite"):
        return error_text(409, f"The user file {dest_rel!r} already exists (overwrite=false).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    source.replace(dest)
    if _flag(request, "full_info"):
        return web.json_response(file_info(dest, dest_rel))
    return web.json_response(dest_rel)


def setup(app: web.Application) -> None:
    add_api(app, "GET", "/userdata", list_userdata)
    add_api(app, "GET", "/v2/userdata", list_userdata_v2)
    add_api(app, "GET", "/userdata/{file}", get_userdata)
    add_api(app, "POST", "/userdata/{file}", post_userdata)
    add_api(app, "DELETE", "/userdata/{file}", delete_userdata)
    add_api(app, "POST", "/userdata/{file}/move/{dest}", move_userdata)
