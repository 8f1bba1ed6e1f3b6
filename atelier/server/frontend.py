"""The node editor itself: the official ComfyUI frontend's static files, and Atelier's workflow templates.

- GET /              index.html, never cached, with a Content-Security-Policy (see below)
- GET /<file>        the frontend's assets (scripts, styles, fonts) with explicit MIME types: a module script
                     served as text/plain would not run
- GET /templates/index.json, /templates/<name>.json, /templates/<name>-1.webp   Atelier's templates
- GET /workflow_templates                                                       `{}`: no custom-node templates

Templates live in atelier/server/templates/: `<name>.json` (a UI-format workflow), `<name>-1.webp` (its
thumbnail) and `templates.json`, the ordered list [{"name", "title", "description"}] shown in the browser.

The Content-Security-Policy (security.page_policy) limits where the page may connect (fetch, XHR, WebSocket,
beacons) and load scripts, images, fonts and media from: this server only. It stops what no setting turns off: the
bundled error reporter (sentry.io) and Firebase sign-in. The one inline script of index.html, its import map, is
allowed by its SHA-256 hash (editor_policy), so no other inline script can run; styles may be inline (the editor
positions its widgets with style attributes); no other site may frame the editor.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import re
from pathlib import Path

from aiohttp import web

from atelier.server.files import UnsafePathError, safe_join
from atelier.server.security import page_policy, stored_file
from atelier.server.state import add_api, error_text, state

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATE_CATEGORY = "Atelier"


MIME_TYPES = {
    ".html": "text/html",
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
    ".wasm": "application/wasm",
    ".md": "text/markdown",
    ".txt": "text/plain",
}

NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}


def frontend_root() -> Path:
    """The static/ folder of the installed comfyui-frontend-package."""
    return Path(str(importlib.resources.files("comfyui_frontend_package") / "static"))


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)


def editor_policy(index_html: str) -> str:
    """The editor's Content-Security-Policy: scripts from this server, and the inline ones of `index_html` (its
    import map) by their hash ('sha256-<base64 of the SHA-256 of the script text>', CSP level 2)."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(index_html)
    ]
    return page_policy(script_src=" ".join(["'self'", *hashes]))


def _serve(path: Path, headers: dict | None = None) -> web.FileResponse:
    """A file of the frontend (ours, not a user's: its type comes from its name), under the editor's policy."""
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(
        path, headers={"Content-Type": mime, "Content-Security-Policy": page_policy(), **(headers or {})}
    )


async def index(request: web.Request) -> web.StreamResponse:
    root = state(request).static_root
    if root is None or not (root / "index.html").is_file():
        return error_text(404, "The node editor is not installed; pip install comfyui-frontend-package==1.27.10.")
    policy = editor_policy((root / "index.html").read_text(encoding="utf-8"))
    return _serve(root / "index.html", {**NO_CACHE, "Content-Security-Policy": policy})


async def static_file(request: web.Request) -> web.StreamResponse:
    root = state(request).static_root
    relative = request.match_info["path"]
    if root is None:
        return error_text(404, "The node editor is not installed.")
    try:
        path = safe_join(root, relative, what="file")
    except UnsafePathError as ex:
        return error_text(ex.status, str(ex))
    if path.is_dir() and (path / "index.html").is_file():
        return await index(request) if path == root else _serve(path / "index.html", NO_CACHE)
    if not path.is_file():
        return error_text(404, f"No file {relative!r} here.")
    return _serve(path)


# ---- templates ----

_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def template_manifest(folder: Path) -> list[dict]:
    """templates.json, keeping only entries whose workflow file exists."""
    manifest = folder / "templates.json"
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    return [e for e in entries if _TEMPLATE_NAME.match(e.get("name", "")) and (folder / f"{e['name']}.json").is_file()]


def template_index(folder: Path) -> list[dict]:
    """/templates/index.json in the frontend's format: one module ("default") holding Atelier's templates."""
    templates = [
        {
            "name": entry["name"],
            "title": entry.get("title", entry["name"]),
            "description": entry.get("description", ""),
            "mediaType": "image",
            "mediaSubtype": "webp",
        }
        for entry in template_manifest(folder)
    ]
    return [{"moduleName": "default", "title": TEMPLATE_CATEGORY, "type": "image", "templates": templates}]


async def templates_index(request: web.Request) -> web.Response:
    return web.json_response(template_index(state(request).templates_dir), headers=NO_CACHE)


async def template_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if not _TEMPLATE_NAME.match(name):
        return error_text(400, f"The template name {name!r} may only hold letters, digits, '.', '_' and '-'.")
    path = state(request).templates_dir / name
    if not path.is_file() or path.suffix not in (".json", ".webp") or name == "templates.json":
        return error_text(404, f"No template file {name!r}.")
    return stored_file(path) if path.suffix == ".webp" else _serve(path)  # a thumbnail: its type from its bytes


async def workflow_templates(request: web.Request) -> web.Response:
    return web.json_response({})  # templates of custom-node packs: none (a failure here breaks the browser)


FAVICON = Path(__file__).resolve().parent.parent / "web" / "favicon.png"


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(FAVICON, headers={"Content-Type": "image/png"})


async def user_css(request: web.Request) -> web.Response:
    """The editor asks for /user.css (a place for users' own styles); an empty sheet instead of a 404."""
    return web.Response(text="", content_type="text/css")


def setup(app: web.Application) -> None:
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/user.css", user_css)
    app.router.add_get("/templates/index.json", templates_index)
    app.router.add_get("/templates/{name}", template_file)
    add_api(app, "GET", "/workflow_templates", workflow_templates)
    app.router.add_get("/", index)
    app.router.add_get("/{path:.+}", static_file)  # last: every other route wins
