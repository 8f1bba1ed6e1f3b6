"""What every route handler can reach (`state(request)`), and the helper that mounts a route bare and under /api."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from atelier.graph.registry import NodeRegistry
from atelier.server.files import DataDir, OutputFiles
from atelier.server.hub import Hub
from atelier.server.prompt_queue import PromptQueue
from atelier.server.settings import Settings
from atelier.server.store import PromptStore

if TYPE_CHECKING:  # torch and the models load when the lab first needs them, not at server start
    from atelier.lessons.embedded import LessonModels
    from atelier.models.tokenizer import CLIPTokenizer
    from atelier.server.classroom import Classroom


@dataclass
class Limits:
    max_upload_bytes: int = 50 * 1024 * 1024  # an upload larger than this is refused (413)
    max_image_pixels: int = 64 * 1024 * 1024  # decompression-bomb guard: 64 megapixels, e.g. 8192 x 8192


class LabModels:
    """The models behind the lab's lesson routes (server/lab.py), loaded on first use and kept for the server's life.

    The tokenizer comes alone (no weights: the token view answers without loading a model); the embedded model's
    text encoder, VAE and image encoder come together (lessons/embedded.py). A request that arrives during a load
    waits for it rather than loading again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokenizer: CLIPTokenizer | None = None
        self._models: LessonModels | None = None

    def tokenizer(self) -> CLIPTokenizer:
        with self._lock:
            if self._tokenizer is None:
                from atelier.models.tokenizer import CLIPTokenizer

                self._tokenizer = CLIPTokenizer.from_default()
            return self._tokenizer

    def models(self) -> LessonModels:
        with self._lock:
            if self._models is None:
                from atelier.lessons.embedded import load_embedded_models

                self._models = load_embedded_models()
            return self._models


@dataclass
class ServerState:
    registry: NodeRegistry
    data: DataDir
    files: OutputFiles
    store: PromptStore
    queue: PromptQueue
    hub: Hub
    settings: Settings
    limits: Limits
    static_root: Path | None  # the frontend's static/ folder (None: the API only)
    templates_dir: Path
    on_free: Callable[[bool, bool], None] | None  # POST /free (unload_models, free_memory) beyond the node cache
    argv: list[str]
    lab: LabModels = field(default_factory=LabModels)
    classroom: Classroom | None = None  # classroom mode (--classroom): the class, its learners and their secrets


STATE: web.AppKey[ServerState] = web.AppKey("atelier_state", ServerState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def state(request: web.Request) -> ServerState:
    return request.app[STATE]


def add_api(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Mount `path` both bare and under /api: the editor calls `/api/...`, older scripts the bare path."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, "/api" + path, handler)


def error_text(status: int, message: str) -> web.Response:
    """A plain-text error whose body (and reason phrase, which the editor shows in its toast) is one sentence."""
    reason = message if message.isascii() and "\n" not in message and len(message) < 200 else None
    return web.Response(status=status, text=message, reason=reason)
