"""The connected editors (WebSocket clients) and how messages reach them, from any thread, in order.

Text frames are JSON `{"type": T, "data": D}`. Preview images go as binary frames, big-endian:

    event 1 PREVIEW_IMAGE                  [u32 1][u32 format: 1 = JPEG, 2 = PNG][image bytes]
    event 3 PROGRESS_TEXT                  [u32 3]([u32 p][p bytes: prompt id])[u32 n][n bytes: node id][UTF-8 text]
    event 4 PREVIEW_IMAGE_WITH_METADATA    [u32 4][u32 n][n bytes of JSON metadata][image bytes]

Event 4 is used for clients that announced `supports_preview_metadata` in their first `feature_flags` message;
event 3 carries the prompt id (the part in brackets) for clients that announced `supports_progress_text_metadata`
(the server announces it too: the frontend reads the prefix only then). Other clients get the older layouts.

The worker thread calls `send(...)`; each client has a FIFO queue drained by one task on the event loop, so
messages arrive in the order they were sent even when a slow client makes a write wait.

In classroom mode (`private`, classroom.py) a sid belongs to the first identity that claims it, for the server's
life (`claim`), so no learner can take over another's socket by its id; and a message sent to nobody in particular
(sid None) reaches nobody unless it is `status`: a prompt queued without a socket must not tell the whole class.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from atelier.server.strict_json import dumps_finite

PREVIEW_IMAGE = 1
PROGRESS_TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMATS = {"image/jpeg": 1, "image/png": 2}
_NOBODY = object()  # the owner of a socket send_each did not know about


def preview_frame(image: bytes, mime: str, metadata: dict | None) -> bytes:
    """One binary preview frame: event 4 with its JSON metadata, or event 1 when `metadata` is None."""
    if metadata is None:
        return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS.get(mime, 1)) + image
    meta = dumps_finite({**metadata, "image_type": mime}).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image


def progress_text_frame(text: str, node_id: str, prompt_id: str | None) -> bytes:
    """One binary progress-text frame (event 3): a line of text shown on node `node_id`, prefixed by the prompt
    id when `prompt_id` is given (clients with supports_progress_text_metadata)."""

    def sized(value: str) -> bytes:
        data = value.encode("utf-8")
        return struct.pack(">I", len(data)) + data

    prefix = sized(prompt_id) if prompt_id is not None else b""
    return struct.pack(">I", PROGRESS_TEXT) + prefix + sized(node_id) + text.encode("utf-8")


class Client:
    """One open WebSocket: its id (sid), the feature flags it announced, and its outgoing queue."""

    def __init__(self, sid: str, ws: web.WebSocketResponse) -> None:
        self.sid = sid
        self.ws = ws
        self.flags: dict = {}
        self.outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sender = asyncio.ensure_future(self._drain())

    @property
    def wants_metadata(self) -> bool:
        return self.flags.get("supports_preview_metadata") is True

    @property
    def wants_text_metadata(self) -> bool:
        return self.flags.get("supports_progress_text_metadata") is True

    async def _drain(self) -> None:
        while (message := await self.outbox.get()) is not None:
            try:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_str(message)
            except (ConnectionError, RuntimeError):
                return  # the socket closed under us; the handler will remove the client


class Hub:
    """Clients by sid. `send` and `send_preview` may be called from any thread."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.private = False  # classroom mode: see the module's docstring
        self.owners: dict[str, str | None] = {}  # sid -> the owner (classroom.Who.owner) that claimed it
        self._owners_lock = threading.Lock()

    def claim(self, sid: str, owner: str | None) -> bool:
        """Take `sid` for `owner`, or confirm it is theirs; False when someone else holds it (classroom mode)."""
        if not self.private:
            return True
        with self._owners_lock:
            return self.owners.setdefault(sid, owner) == owner

    def connect(self, sid: str, ws: web.WebSocketResponse) -> Client:
        """Register a socket (runs on the loop). A reconnect with the same sid replaces the old socket."""
        self.loop = asyncio.get_running_loop()
        old = self.clients.get(sid)
        if old is not None:
            old.outbox.put_nowait(None)
        client = Client(sid, ws)
        self.clients[sid] = client
        return client

    def disconnect(self, client: Client) -> None:
        client.outbox.put_nowait(None)
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to client `sid`, or to everyone when sid is None."""
        if sid is None and self.private and event != "status":
            return
        self._post(dumps_finite({"type": event, "data": data}), sid)  # a node's NaN arrives as null

    def send_each(self, event: str, body: Callable[[str | None, bool], Any]) -> None:
        """Send each connected client its own `{"type": event, "data": body(owner, sees_all)}`: the owner holding
        its sid (classroom mode), and whether that person sees everybody's work (the local user, the instructor).
        One body is made per owner (in the caller's thread), not per socket."""
        if self.loop is None or self.loop.is_closed():
            return
        with self._owners_lock:
            owners = dict(self.owners) if self.private else {}
        made = {
            owner: dumps_finite({"type": event, "data": body(owner, owner is None)})
            for owner in {None, *owners.values()}
        }
        self.loop.call_soon_threadsafe(self._each_now, made, owners)

    def _each_now(self, made: dict[str | None, str], owners: dict[str, str | None]) -> None:
        for sid, client in self.clients.items():
            # A socket claimed since `owners` was read gets nothing now (its own status comes on connect).
            message = made.get(owners.get(sid, _NOBODY) if self.private else None)
            if message is not None:
                client.outbox.put_nowait(message)

    def send_preview(self, image: bytes, mime: str, metadata: dict, sid: str | None) -> None:
        """Send a preview frame to `sid` (event 4 if it supports metadata, else event 1)."""
        if self.loop is None or sid is None:
            return
        self.loop.call_soon_threadsafe(self._preview_now, image, mime, metadata, sid)

    def _preview_now(self, image: bytes, mime: str, metadata: dict, sid: str) -> None:
        client = self.clients.get(sid)
        if client is not None:
            client.outbox.put_nowait(preview_frame(image, mime, metadata if client.wants_metadata else None))

    def send_progress_text(self, text: str, node_id: str, prompt_id: str, sid: str | None) -> None:
        """Show a line of text on node `node_id` of client `sid` while prompt `prompt_id` runs (event 3)."""
        if self.loop is None or sid is None:
            return
        self.loop.call_soon_threadsafe(self._text_now, text, str(node_id), prompt_id, sid)

    def _text_now(self, text: str, node_id: str, prompt_id: str, sid: str) -> None:
        client = self.clients.get(sid)
        if client is not None:
            client.outbox.put_nowait(
                progress_text_frame(text, node_id, prompt_id if client.wants_text_metadata else None)
            )

    def _post(self, message: str, sid: str | None) -> None:
        if self.loop is None or self.loop.is_closed():
            return  # nobody has ever connected
        self.loop.call_soon_threadsafe(self._post_now, message, sid)

    def _post_now(self, message: str, sid: str | None) -> None:
        targets = list(self.clients.values()) if sid is None else [c for c in [self.clients.get(sid)] if c]
        for client in targets:
            client.outbox.put_nowait(message)

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            self.disconnect(client)
            await client.ws.close()
