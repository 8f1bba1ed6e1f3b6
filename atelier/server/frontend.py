"""The node editor itself: the official ComfyUI frontend's static files, and Atelier's workflow templates.

- GET /              index.html, never cached, with a Content-Security-Policy (see below)
- GET /<file>        the frontend's assets (scripts, styles, fonts) with explicit MIME types: a module script
                     served as text/plain would not run
- GET /templates/index.json, /templates/<name>.json, /templates/<name>-1.webp   Atelier's templates
- GET /templates/index.<locale>.json      the same list in the editor's language: French names `<name>.fr`
- GET /templates/index_logo.json          `{}`: no provider logos
- GET /workflow_templates                 `{}`: no custom-node templates
- GET /global_subgraphs                   `{}`: no shared subgraph blueprints; /global_subgraphs/<id>: 404
- GET /i18n                               Atelier's nodes in the editor's i18n format (see node_translations)
- GET /extensions                         the two editor extensions Atelier adds: its default graph, and the
                                          offline guard (remote requests refused before they are made)
- GET /atelier/default_graph              that graph: the txt2img template in the learner's language

Templates live in atelier/server/templates/: `<name>.json` (a UI-format workflow, in English), `<name>-1.webp`
(its thumbnail) and `templates.json`, the ordered list [{"name", "title", "description"}] shown in the browser.
templates/i18n/fr.json holds their French: title, description, and per node id a title and widget values (notes
and prompts). The French index lists `<name>.fr`, whose workflow is the English one with those replaced; titles
of nodes that keep their type's name are left to the editor, which shows the type's own translated name.

How the frontend (1.58) localizes, and what each piece of Atelier plugs into:
- template browser: it asks for /templates/index.<locale>.json (locale "fr", "de"...) and falls back to
  index.json with a console warning; every locale is answered (French for fr, English otherwise).
- node names, descriptions, tooltips, socket names: GET /i18n returns {locale: {"nodeDefs": {Node: {...}}}},
  merged into its own messages; ComfyUI's core nodes it translates itself, Atelier's teaching nodes are here.
- the default graph: a constant of the bundle (window.comfyAPI.defaultGraph.defaultGraph, a Z-Image Turbo graph
  that Atelier cannot run). atelier/web/editor/default_graph.js, loaded as an extension, fills that same object
  with Atelier's graph before the first graph loads, so start-up, "Load Default" and a new tab all show it.

The Content-Security-Policy (security.page_policy) limits where the page may connect (fetch, XHR, WebSocket,
beacons) and load scripts, images, fonts and media from: this server only. It stops what no setting turns off: the
bundled error reporter (sentry.io), Firebase sign-in, the Comfy registry and the size check of a missing model's
download URL. Chromium logs each refusal as a console error, so atelier/web/editor/offline.js refuses them first,
quietly, the way a failed request fails. The one inline script of index.html, its import map, is
allowed by its SHA-256 hash (editor_policy), so no other inline script can run; styles may be inline (the editor
positions its widgets with style attributes); WebAssembly may be compiled (1.58 bundles a module); no other site
may frame the editor.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import re
from pathlib import Path

from aiohttp import web

from atelier.graph.registry import NodeRegistry
from atelier.server.classroom import settings_for, who
from atelier.server.files import UnsafePathError, safe_join
from atelier.server.security import page_policy, stored_file
from atelier.server.state import add_api, error_text, state

TEMPLATES_DIR = Path(__file__).parent / "templates"
TRANSLATIONS_DIR = TEMPLATES_DIR / "i18n"  # fr.json (templates), nodes.fr.json (the teaching nodes)
EDITOR_DIR = Path(__file__).resolve().parent.parent / "web" / "editor"
# URL -> file of the editor extensions Atelier adds (atelier/web/editor/); the editor imports them all before it
# loads its first graph.
EDITOR_EXTENSIONS = {f"/extensions/atelier/{name}": EDITOR_DIR / name for name in ("offline.js", "default_graph.js")}
TEMPLATE_CATEGORY = "Atelier"
LANGUAGES = ("en", "fr")  # English is the templates' own language; French comes from TRANSLATIONS_DIR
DEFAULT_GRAPH_TEMPLATE = "atelier_txt2img"  # the embedded model at its native 128 x 128


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
    # 'wasm-unsafe-eval' lets the bundle compile its WebAssembly modules (an inline one in vendor-other-*.js);
    # it allows no JavaScript eval.
    return page_policy(script_src=" ".join(["'self'", "'wasm-unsafe-eval'", *hashes]))


def _serve(path: Path, headers: dict | None = None) -> web.FileResponse:
    """A file of the frontend (ours, not a user's: its type comes from its name), under the editor's policy."""
    mime = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(
        path, headers={"Content-Type": mime, "Content-Security-Policy": page_policy(), **(headers or {})}
    )


async def index(request: web.Request) -> web.StreamResponse:
    root = state(request).static_root
    if root is None or not (root / "index.html").is_file():
        return error_text(404, "The node editor is not installed; pip install comfyui-frontend-package==1.58.1.")
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


def template_translations(folder: Path, lang: str) -> dict:
    """{template name: {"title", "description", "nodes": {node id: {"title", "widgets_values"}}}} for `lang`
    ({} for English, the templates' own language)."""
    path = folder / "i18n" / f"{lang}.json"
    return json.loads(path.read_text(encoding="utf-8")) if lang != "en" and path.is_file() else {}


def split_template_name(name: str) -> tuple[str, str]:
    """'atelier_txt2img.fr' -> ('atelier_txt2img', 'fr'); a name without a language suffix is English."""
    base, _, suffix = name.rpartition(".")
    return (base, suffix) if base and suffix in LANGUAGES else (name, "en")


def template_index(folder: Path, lang: str = "en") -> list[dict]:
    """/templates/index[.<locale>].json in the frontend's format: one module ("default") holding Atelier's
    templates, titled and described in `lang`; a translated template is named `<name>.<lang>`."""
    translated = template_translations(folder, lang)
    templates = []
    for entry in template_manifest(folder):
        local = translated.get(entry["name"], {})
        templates.append(
            {
                "name": f"{entry['name']}.{lang}" if local else entry["name"],
                "title": local.get("title") or entry.get("title", entry["name"]),
                "description": local.get("description") or entry.get("description", ""),
                "mediaType": "image",
                "mediaSubtype": "webp",
            }
        )
    return [{"moduleName": "default", "title": TEMPLATE_CATEGORY, "type": "image", "templates": templates}]


def localized_workflow(folder: Path, name: str, lang: str) -> dict:
    """The workflow of template `name` with its node titles, notes and prompts in `lang`. A node whose
    translation gives no title loses its English one, so the editor shows its type's name in its own language."""
    workflow = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    local = template_translations(folder, lang).get(name)
    if not local:
        return workflow
    for node in workflow.get("nodes", []):
        replaced = local.get("nodes", {}).get(str(node.get("id")), {})
        if "title" in replaced:
            node["title"] = replaced["title"]
        else:
            node.pop("title", None)
        if "widgets_values" in replaced:
            node["widgets_values"] = replaced["widgets_values"]
    return workflow


def editor_language(request: web.Request) -> str:
    """The learner's language: the editor's Comfy.Locale setting once chosen, else the browser's first language
    (the frontend itself starts from navigator.language); one of LANGUAGES, English when neither is known."""
    chosen = settings_for(state(request), who(request)).get("Comfy.Locale")
    if not isinstance(chosen, str) or not chosen:
        chosen = request.headers.get("Accept-Language", "en").split(",")[0]
    lang = chosen.strip().lower()[:2]
    return lang if lang in LANGUAGES else "en"


async def templates_index(request: web.Request) -> web.Response:
    locale = request.match_info.get("locale", "en").lower()[:2]  # "fr", "zh" (from zh-TW)...
    lang = locale if locale in LANGUAGES else "en"  # every locale gets an answer: no 404 in the console
    return web.json_response(template_index(state(request).templates_dir, lang), headers=NO_CACHE)


async def template_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if not _TEMPLATE_NAME.match(name):
        return error_text(400, f"The template name {name!r} may only hold letters, digits, '.', '_' and '-'.")
    folder = state(request).templates_dir
    stem, suffix = (name[: -len("-1.webp")], "-1.webp") if name.endswith("-1.webp") else (Path(name).stem, "")
    base, lang = split_template_name(stem)
    if name.endswith(".json") and base != "templates":
        if (folder / f"{base}.json").is_file():
            return web.json_response(localized_workflow(folder, base, lang), headers=NO_CACHE)
    elif suffix and (folder / f"{base}{suffix}").is_file():
        return stored_file(folder / f"{base}{suffix}")  # a thumbnail, shared by every language: type from bytes
    return error_text(404, f"No template file {name!r}.")


async def logo_index(request: web.Request) -> web.Response:
    return web.json_response({})  # provider name -> logo file, for partner templates: none here


async def workflow_templates(request: web.Request) -> web.Response:
    return web.json_response({})  # templates of custom-node packs: none (a failure here breaks the browser)


async def default_graph(request: web.Request) -> web.Response:
    """The graph the editor opens on: the txt2img template (embedded model, 128 x 128) in the learner's
    language, without a saved camera, so the editor fits it to the view it has."""
    workflow = localized_workflow(state(request).templates_dir, DEFAULT_GRAPH_TEMPLATE, editor_language(request))
    workflow.get("extra", {}).pop("ds", None)
    return web.json_response(workflow, headers=NO_CACHE)


async def extensions(request: web.Request) -> web.Response:
    return web.json_response(list(EDITOR_EXTENSIONS))  # no custom-node scripts; the editor loads its core ones


async def extension_file(request: web.Request) -> web.StreamResponse:
    return _serve(EDITOR_EXTENSIONS[request.path], NO_CACHE)


async def global_subgraphs(request: web.Request) -> web.Response:
    return web.json_response({})  # id -> {name, info, data}: no shared subgraph blueprints


async def global_subgraph(request: web.Request) -> web.Response:
    return error_text(404, f"No shared subgraph {request.match_info['id'][:100]!r}.")


# ---- the editor's translations of Atelier's nodes ----


def node_translations(registry: NodeRegistry, folder: Path = TRANSLATIONS_DIR) -> dict[str, dict]:
    """GET /i18n: {locale: {"nodeDefs": {node name: {display_name, description, inputs: {input: {name,
    tooltip}}, outputs: {"0": {name, tooltip}}}}}}, the frontend's own format (its nodeDefs.json per locale).

    English is read from the nodes' schemas (what /object_info says); French from nodes.fr.json, which covers
    the same nodes. ComfyUI's core nodes are absent: the frontend already translates them."""
    french = json.loads((folder / "nodes.fr.json").read_text(encoding="utf-8"))
    english = {}
    for name in french:
        info = registry.object_info(name).get(name)
        if info is None:
            continue
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        english[name] = {
            "display_name": info["display_name"],
            "description": info["description"],
            "inputs": {
                key: {"name": key, **({"tooltip": spec[1]["tooltip"]} if spec[1].get("tooltip") else {})}
                for key, spec in inputs.items()
            },
            "outputs": {
                str(k): {"name": label, **({"tooltip": tip} if tip else {})}
                for k, (label, tip) in enumerate(zip(info["output_name"], info["output_tooltips"], strict=True))
            },
        }
    return {"en": {"nodeDefs": english}, "fr": {"nodeDefs": {k: v for k, v in french.items() if k in english}}}


async def i18n(request: web.Request) -> web.Response:
    return web.json_response(node_translations(state(request).registry))


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
    app.router.add_get("/templates/index_logo.json", logo_index)
    app.router.add_get(r"/templates/index.{locale:[A-Za-z_-]+}.json", templates_index)
    app.router.add_get("/templates/{name}", template_file)
    for url in EDITOR_EXTENSIONS:
        app.router.add_get(url, extension_file)
    add_api(app, "GET", "/workflow_templates", workflow_templates)
    add_api(app, "GET", "/extensions", extensions)
    add_api(app, "GET", "/global_subgraphs", global_subgraphs)
    add_api(app, "GET", "/global_subgraphs/{id}", global_subgraph)
    add_api(app, "GET", "/i18n", i18n)
    add_api(app, "GET", "/atelier/default_graph", default_graph)
    app.router.add_get("/", index)
    app.router.add_get("/{path:.+}", static_file)  # last: every other route wins
