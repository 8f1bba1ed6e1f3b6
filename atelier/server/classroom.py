"""Classroom mode (`atelier serve --classroom`): one server for a whole workshop, each learner seeing only their work.

    $ atelier serve --classroom                       (or CLASSROOM=1 make start)
    Classe / Class: code K7P3QX
      Élèves / Learners:      http://192.168.1.20:8188/lab/?join=K7P3QX
      Formateur / Instructor: http://192.168.1.20:8188/classroom/?instructor=...   (gardez-le pour vous / keep it)
    (then the join link as a QR code, for the learners' phones and laptops: segno, in text)

Who is asking. Every request passes `classroom_middleware`, which puts a `Who` in request[WHO] (`who(request)`):
  - a learner: a signed cookie, set when they joined with the class's join code and a display name (no password);
    a second tab sends the same cookie, so it is the same learner;
  - the instructor: the same cookie, set by the instructor link's secret (learners never need it); sees everything;
  - anybody else: 403 and one sentence in French and English, whatever the route.
Without --classroom there is no middleware: every request is LOCAL, the one local user, who sees everything.

What a learner sees is theirs. The routes keep what `Who.sees` accepts:
  - each prompt records its owner (store.py's owner column): /queue, /history, /jobs and GET /prompt are filtered,
    and cancel, delete and interrupt act on the learner's own prompts only;
  - uploads go under <type>/classroom/<learner id>/; an output or temp file is a learner's when one of their prompts
    names it in its outputs, or a lab route made it for them (`claim_file`); `may_open` decides /view;
  - saved workflows and editor settings live in user/classroom/<learner id>/ (`user_folder`, `settings_for`);
  - their progress through the parcours is kept under their id (store.py's parcours table): lab.py's
    /atelier/lab/parcours/progress reads and writes the asker's own, the instructor's page shows everyone's;
  - WebSocket: a socket id (sid) belongs to the first identity that uses it (Hub.claim), and a prompt's messages go
    to its client_id only when its owner holds that sid (`client_id_for`); nothing of a prompt is broadcast.

The cookie is `<id>.<HMAC-SHA256(key, id)>` (id: a learner's, or "instructor"), HttpOnly and SameSite=Lax: page
scripts cannot read it and other sites' requests do not carry it. The join code, the instructor secret and the key
are made on the first classroom start and kept in atelier.sqlite with the learners, so a restart (or a kill -9)
keeps the class: the same links work and every learner is still themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import io
import secrets
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from atelier.server.settings import Settings
from atelier.server.store import PromptRecord, PromptStore, now_ms

if TYPE_CHECKING:
    from atelier.server.files import DataDir
    from atelier.server.hub import Hub
    from atelier.server.prompt_queue import PromptQueue

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerState(Protocol):
    """What the classroom reads of the server's state (state.ServerState, which holds the Classroom: naming it
    here would make the two modules import each other)."""

    classroom: Classroom | None
    queue: PromptQueue
    store: PromptStore
    data: DataDir
    settings: Settings


JOIN_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: the code is read from a projector or aloud
JOIN_CODE_LENGTH = 6  # 31**6 ~ 8.9e8 codes
COOKIE = "atelier_who"
COOKIE_MAX_AGE = 14 * 24 * 3600  # two weeks: a workshop over several days keeps its learners
INSTRUCTOR_ID = "instructor"
LEARNER_FOLDER = "classroom"  # uploads go to <type>/classroom/<learner id>/
JOIN_PATH = "/classroom/join"
MAX_NAME = 40  # characters of a display name
REFUSED = (
    "Il faut le lien de la classe (avec son code) pour entrer ici. / "
    "You need the class link (with its join code) to enter here."
)
JOIN_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'"


@dataclass(frozen=True)
class Who:
    """Who a request comes from. `owner` is stamped on what they queue and upload (a learner's id; None for the
    local user and the instructor); `sees_all`: the local user and the instructor see every learner's work."""

    owner: str | None
    name: str
    sees_all: bool

    def sees(self, owner: str | None) -> bool:
        return self.sees_all or (owner is not None and owner == self.owner)


LOCAL = Who(None, "local", sees_all=True)
INSTRUCTOR = Who(None, "instructor", sees_all=True)
WHO: web.RequestKey[Who] = web.RequestKey("atelier_who", Who)  # request[WHO], set by classroom_middleware


def who(request: web.Request) -> Who:
    """The identity classroom_middleware found for this request; LOCAL when the server is not in classroom mode."""
    return request.get(WHO, LOCAL)


def new_join_code() -> str:
    return "".join(secrets.choice(JOIN_ALPHABET) for _ in range(JOIN_CODE_LENGTH))


def display_name(raw: str) -> str:
    """A learner's display name, trimmed; raises ValueError with a FR / EN sentence when it is empty or too long."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")  # no control or format characters
    if not name:
        raise ValueError(
            "Écrivez un nom pour que la classe vous reconnaisse. / Type a name the class will know you by."
        )
    if len(name) > MAX_NAME:
        raise ValueError(
            f"Ce nom a {len(name)} caractères ; {MAX_NAME} au plus. / This name has {len(name)} characters; "
            f"at most {MAX_NAME}."
        )
    return name


class Classroom:
    """The class: its join code, the instructor's secret, the cookie key and the learners, all kept in the store."""

    def __init__(self, store: PromptStore) -> None:
        self.store = store
        self.join_code = store.class_secret("join_code", new_join_code)
        self.instructor_secret = store.class_secret("instructor_secret", lambda: secrets.token_urlsafe(18))
        self._key = bytes.fromhex(store.class_secret("cookie_key", lambda: secrets.token_hex(32)))
        self._lock = threading.Lock()
        self.learners: dict[str, Who] = {lid: Who(lid, name, False) for lid, name, _ in store.learners()}
        self.removed: dict[str, str] = {lid: name for lid, name, _ in store.learners(removed=True)}  # id -> name
        self.public_url: str | None = None  # the URL `serve` printed (the instructor's page shows the join link)
        self._made: set[tuple[str, str]] = set()  # (owner, "type/subfolder/filename") made for them by lab routes
        self._settings: dict[str, Settings] = {}  # learner id -> their editor settings

    # ---- identity ----

    def join(self, name: str) -> Who:
        """A new learner (stored before this returns, so a crash right after keeps them)."""
        learner = Who(secrets.token_hex(4), name, False)
        self.store.add_learner(learner.owner, name, now_ms())
        with self._lock:
            self.learners[learner.owner] = learner
        return learner

    def remove(self, learner_id: str) -> Who | None:
        """Take a learner out of the class: their cookie names nobody from now on, even after a restart (the
        instructor's page also cancels their waiting prompts; their history stays). None: no such learner."""
        with self._lock:
            learner = self.learners.pop(learner_id, None)
            if learner is not None:
                self.removed[learner_id] = learner.name
        if learner is not None:
            self.store.remove_learner(learner_id, now_ms())
        return learner

    def name_of(self, owner: str | None) -> str:
        """The display name of a prompt's owner: a learner (in the class or removed), else the instructor's."""
        if owner is None:
            return INSTRUCTOR.name
        learner = self.learners.get(owner)
        return learner.name if learner is not None else self.removed.get(owner, owner)

    def _sign(self, identity: str) -> str:
        return hmac.new(self._key, identity.encode(), hashlib.sha256).hexdigest()[:32]

    def cookie_for(self, person: Who) -> str:
        identity = INSTRUCTOR_ID if person is INSTRUCTOR else str(person.owner)
        return f"{identity}.{self._sign(identity)}"

    def identify(self, cookie: str) -> Who | None:
        """The learner or instructor a cookie names, or None when it is missing, forged or names nobody."""
        identity, _, signature = cookie.partition(".")
        if not identity or not hmac.compare_digest(signature.encode(), self._sign(identity).encode()):
            return None
        return INSTRUCTOR if identity == INSTRUCTOR_ID else self.learners.get(identity)

    def is_join_code(self, code: str) -> bool:
        return hmac.compare_digest(code.strip().upper().encode(), self.join_code.encode())

    def is_instructor_secret(self, secret: str) -> bool:
        return hmac.compare_digest(secret.encode(), self.instructor_secret.encode())

    def links(self, base_url: str) -> tuple[str, str]:
        """(the learners' join link, the instructor's link: their page, server/instructor.py) for a base URL such
        as http://192.168.1.20:8188/."""
        base = base_url.rstrip("/")
        return f"{base}/lab/?join={self.join_code}", f"{base}/classroom/?instructor={self.instructor_secret}"

    def settings(self, person: Who, make: Callable[[], Settings]) -> Settings:
        """A learner's Settings, made once (its lock then orders the writes of their tabs)."""
        key = str(person.owner)
        with self._lock:
            if key not in self._settings:
                self._settings[key] = make()
            return self._settings[key]

    # ---- files ----

    def upload_folder(self, person: Who) -> str:
        """The subfolder a person's uploads go to: classroom/<id> for a learner, the folder itself otherwise."""
        return f"{LEARNER_FOLDER}/{person.owner}" if person.owner is not None else ""

    def claim_file(self, person: Who, ref: dict) -> None:
        """Record that `ref` (a file reference a lab route made for `person`) is theirs to open."""
        if person.owner is not None:
            with self._lock:
                self._made.add((person.owner, _ref_key(ref)))

    def may_open(self, person: Who, ref: dict, records: Callable[[], Iterable[PromptRecord]]) -> bool:
        """Whether `person` may read the file `ref`: theirs by folder, by a lab route, or in the outputs of one of
        `records()` (the prompts they own). Inputs outside classroom/ (the templates' examples) are everybody's."""
        if person.sees_all:
            return True
        key = _ref_key(ref)
        kind, _, path = key.partition("/")
        folder = f"{LEARNER_FOLDER}/{person.owner}/"
        if path.startswith(folder):
            return True
        if path.startswith(LEARNER_FOLDER + "/"):
            return False
        if kind == "input":
            return True
        with self._lock:
            if (person.owner, key) in self._made:
                return True
        return any(key in output_keys(rec) for rec in records())


def _ref_key(ref: dict) -> str:
    """'type/subfolder/filename' of a file reference, with '/' separators and no empty or '.' parts."""
    parts = [str(ref.get("type") or "output"), str(ref.get("subfolder") or ""), str(ref.get("filename") or "")]
    return "/".join(p for part in parts for p in part.replace("\\", "/").split("/") if p not in ("", "."))


def output_keys(rec: PromptRecord) -> set[str]:
    """The files a prompt's output nodes showed, as _ref_key strings."""
    keys = set()
    for node_outputs in rec.outputs.values():
        for items in node_outputs.values() if isinstance(node_outputs, dict) else ():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    keys.add(_ref_key(item))
    return keys


def others_file(value: str, person: Who) -> bool:
    """Whether `value` is a path under another learner's folder ('classroom/<someone else>/photo.png')."""
    if person.sees_all:
        return False
    path = value.replace("\\", "/").lstrip("./")
    return path.startswith(LEARNER_FOLDER + "/") and not path.startswith(f"{LEARNER_FOLDER}/{person.owner}/")


def hide_others_files(object_info: dict, person: Who) -> dict:
    """object_info with the COMBO choices that name other learners' files left out (LoadImage lists every upload
    in input/; a learner's list shows the templates' images and their own)."""
    if person.sees_all:
        return object_info
    for node in object_info.values():
        for section in node.get("input", {}).values():
            for spec in section.values():
                if isinstance(spec, list) and spec and isinstance(spec[0], list):
                    spec[0] = [c for c in spec[0] if not (isinstance(c, str) and others_file(c, person))]
    return object_info


def prompt_names_others_files(prompt: dict, person: Who) -> str | None:
    """The first input value of a prompt that names a file in another learner's folder (LoadImage of
    'classroom/<someone else>/photo.png'), or None. The instructor and the local user may name any file."""
    for node in prompt.values():
        for value in (node.get("inputs") or {}).values() if isinstance(node, dict) else ():
            if isinstance(value, str) and others_file(value, person):
                return value
    return None


# ---- the queue and the sockets, as one person sees them ----


def visible(person: Who, records: Iterable[PromptRecord]) -> list[PromptRecord]:
    """The records `person` may see: their own, or all of them for the local user and the instructor."""
    return [rec for rec in records if person.sees(rec.owner)]


def may_read(st: ServerState, person: Who, ref: dict) -> bool:
    """Whether `person` may open the file `ref` (GET /view, the lab's images, a mask's original): always, outside
    classroom mode; else Classroom.may_open over their stored prompts and the one running."""
    if st.classroom is None or person.sees_all:
        return True

    def records() -> list[PromptRecord]:
        running = [rec for rec in st.queue.snapshot()[0] if rec.owner == person.owner]  # outputs so far
        return running + st.store.select("owner = ?", (person.owner,))

    return st.classroom.may_open(person, ref, records)


def user_folder(st: ServerState, person: Who) -> Path:
    """Where a person's saved workflows and editor settings live: user/default/ for the local user and the
    instructor, user/classroom/<id>/ for a learner (created on first use)."""
    if person.owner is None:
        return st.data.user
    folder = st.data.root / "user" / LEARNER_FOLDER / person.owner
    (folder / "workflows").mkdir(parents=True, exist_ok=True)
    return folder


def settings_for(st: ServerState, person: Who) -> Settings:
    """The editor settings `person` reads and writes: their own file over the same private defaults."""
    if person.owner is None or st.classroom is None:
        return st.settings
    return st.classroom.settings(person, lambda: Settings(user_folder(st, person), st.settings.defaults))


def own_ids(store: PromptStore, person: Who, prompt_ids: list[str]) -> list[str]:
    """The ids among `prompt_ids` of prompts that `person` may cancel or delete (all of them for the instructor)."""
    if person.sees_all:
        return prompt_ids
    return [i for i in prompt_ids if (rec := store.get(i)) is not None and rec.owner == person.owner]


def queue_status(queue: PromptQueue, person: Who, with_wait: bool = False) -> dict:
    """The `status` body of GET /prompt and of a socket's first message: the prompts that `person` still waits
    for (every prompt, for the local user and the instructor); with_wait (a socket's status) adds where they wait
    (`atelier_wait`: position and expected seconds of each, PromptQueue.waits_of; left out while nothing waits)."""
    wait = queue.waits_of(None if person.sees_all else person.owner) if with_wait else {"prompts": {}}
    if person.sees_all:
        status = queue.status()
    else:
        running, pending = queue.snapshot()
        status = {"exec_info": {"queue_remaining": len(visible(person, running + pending))}}
    return {**status, "atelier_wait": wait} if wait["prompts"] else status


def client_id_for(hub: Hub, person: Who, client_id: Any) -> str | None:
    """The client_id a prompt may keep: a socket id that `person` holds (or now claims), else None (no messages)."""
    if not isinstance(client_id, str) or not hub.claim(client_id, person.owner):
        return None
    return client_id


# ---- the start ----


def join_qr(url: str) -> str:
    """The join link as a QR code in text (two modules per character, light on the terminal's dark background)."""
    import segno

    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, border=2, compact=True)
    return out.getvalue()


def announcement(room: Classroom, base_url: str) -> str:
    """What the terminal shows at start: the learners' link with its code and QR code, and the instructor's link."""
    join, instructor = room.links(base_url)
    return (
        f"Classe / Class: code {room.join_code}\n"
        f"  Élèves / Learners:      {join}\n"
        f"  Formateur / Instructor: {instructor}   (gardez-le pour vous / keep it to yourself)\n"
        f"{join_qr(join)}"
    )


# ---- the middleware and the join page ----


def refuse() -> web.Response:
    return web.Response(status=403, text=REFUSED, content_type="text/plain", charset="utf-8")


def _without(request: web.Request, name: str) -> str:
    """The request's path and query, minus the query parameter `name` (the join code or the instructor secret)."""
    query = [(k, v) for k, v in request.rel_url.query.items() if k != name]
    return request.path + ("?" + urlencode(query) if query else "")


def _enter(room: Classroom, person: Who, location: str) -> web.Response:
    """303 to `location` with the person's cookie set."""
    response = web.Response(status=303, headers={"Location": location})
    response.set_cookie(
        COOKIE, room.cookie_for(person), max_age=COOKIE_MAX_AGE, path="/", httponly=True, samesite="Lax"
    )
    return response


def _local_path(value: str) -> str:
    """A redirect target from the join form: a path on this server, else the lab."""
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/lab/"


def join_page(code: str, next_path: str, name: str = "", error: str = "", status: int = 200) -> web.Response:
    """The join form: French first, then English; the learner gives a display name, nothing else."""
    problem = f'<p class="error">{html.escape(error)}</p>' if error else ""
    page = f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Atelier : rejoindre la classe / join the class</title>
<style>body{{font:18px system-ui,sans-serif;max-width:30em;margin:4em auto;padding:0 1em}}
.en{{color:#555}} input{{font:inherit;padding:.3em;width:100%;box-sizing:border-box}}
button{{font:inherit;margin-top:1em;padding:.4em 1.2em}} .error{{color:#b00020}}</style></head>
<body><h1>Atelier</h1>
<form method="post" action="{JOIN_PATH}">
<label for="name">Votre nom pour la classe <span class="en">/ Your name for the class</span></label>
<input id="name" name="name" maxlength="{MAX_NAME}" required autofocus value="{html.escape(name)}">
<input type="hidden" name="code" value="{html.escape(code)}">
<input type="hidden" name="next" value="{html.escape(next_path)}">
{problem}<button type="submit">Entrer <span class="en">/ Enter</span></button>
</form>
<p>Pas de mot de passe : ce nom suffit. Vos images et votre historique ne sont visibles que par vous et par le
formateur. <span class="en">No password: this name is all. Your images and history are seen only by you and the
instructor.</span></p></body></html>"""
    headers = {"Content-Security-Policy": JOIN_PAGE_POLICY, "Cache-Control": "no-store"}
    return web.Response(status=status, text=page, content_type="text/html", charset="utf-8", headers=headers)


async def _post_join(request: web.Request, room: Classroom) -> web.Response:
    form = await request.post()
    code, next_path = str(form.get("code", "")), _local_path(str(form.get("next", "")))
    if not room.is_join_code(code):
        return refuse()
    raw = str(form.get("name", ""))
    try:
        name = display_name(raw)
    except ValueError as ex:
        return join_page(code, next_path, raw[:MAX_NAME], str(ex), status=400)
    return _enter(room, room.join(name), next_path)


def classroom_middleware(room: Classroom) -> Any:
    """Resolve each request's identity into request[WHO], or answer it: the join page, a cookie, or 403."""

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        person = room.identify(request.cookies.get(COOKIE, ""))
        query = request.rel_url.query
        if request.method == "GET" and "instructor" in query:
            if not room.is_instructor_secret(query["instructor"]):
                return refuse()
            return _enter(room, INSTRUCTOR, _without(request, "instructor"))
        if request.method == "POST" and request.path == JOIN_PATH:
            return await _post_join(request, room)
        if person is None:
            if request.method == "GET" and room.is_join_code(query.get("join", "")):
                return join_page(query["join"], _without(request, "join"))
            return refuse()
        if request.method == "GET" and "join" in query:  # the class link again, already joined: drop the code
            return web.Response(status=303, headers={"Location": _without(request, "join")})
        request[WHO] = person
        return await handler(request)

    return identify
