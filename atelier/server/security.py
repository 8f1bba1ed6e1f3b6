"""Request guards: only this server's own pages may change its state, and a local server answers only to local names.

1. Cross-origin writes. A web page on another site can make the browser send POST/PUT/DELETE requests to
   http://127.0.0.1:8188 (queue prompts, overwrite workflows). Browsers add an `Origin` header to such requests,
   so a state-changing request (or a WebSocket upgrade) whose Origin differs from the Host it was sent to is
   refused with 403, as ComfyUI's origin-only middleware does.
2. DNS rebinding. A hostile name can be made to resolve to 127.0.0.1, which makes Origin and Host agree. A server
   bound to the loopback interface therefore also refuses requests whose Host is not a loopback name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

STATE_CHANGING = ("POST", "PUT", "DELETE", "PATCH")
LOOPBACK_NAMES = ("localhost",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str | None:
    return urlsplit("//" + host_header).hostname


def origin_matches(origin: str, host_header: str) -> bool:
    """Whether an Origin ("http://127.0.0.1:8188") names the same host and port as a Host header."""
    parsed = urlsplit(origin)
    if not parsed.netloc:
        return False  # "null" (sandboxed frames, file://) is never our own page
    return parsed.netloc.lower() == host_header.lower()


def _refuse(message: str) -> web.Response:
    return web.Response(status=403, text=message, reason="Forbidden")


def guard_middleware(local_only: bool) -> Callable:
    """The aiohttp middleware. `local_only` (the server listens on loopback only) turns on the Host check."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if local_only and host and not is_loopback(_hostname(host)):
            return _refuse(f"This server only answers to localhost; the Host {host!r} is not a local name.")
        origin = request.headers.get("Origin")
        upgrading = request.headers.get("Upgrade", "").lower() == "websocket"
        if origin and (request.method in STATE_CHANGING or upgrading) and not origin_matches(origin, host):
            return _refuse(f"Cross-origin request refused: the page at {origin} is not served by this server.")
        return await handler(request)

    return guard
