"""Request guards and response headers: only this server's own pages may change its state, the server answers only
to its own names, and nothing it stores is ever run as a page.

1. Cross-origin writes. A web page on another site can make the browser send POST/PUT/DELETE requests to
   http://127.0.0.1:8188 (queue prompts, overwrite workflows). Browsers add an `Origin` header to such requests,
   so a state-changing request (or a WebSocket upgrade) whose Origin differs from the Host it was sent to is
   refused with 403, as ComfyUI's origin-only middleware does.
2. DNS rebinding. A hostile name can be made to resolve to the server's address, which makes Origin and Host agree.
   So every request (the WebSocket upgrade included) must name the server by one of its own names in its Host:
   a loopback name, an address it is bound to and, when it listens on the network, the machine's host name and
   addresses; `--allowed-host` adds more (a name the room's DNS gives the machine).
3. Stored files. An upload named `gallery.html` may be a valid PNG with a `<script>` appended. A stored file is
   served with the type its first bytes show (the PNG, JPEG, WebP and GIF magic numbers), never the type its name
   suggests; anything else is an `application/octet-stream` attachment, which a browser downloads and never shows.
4. Headers on every response. `X-Content-Type-Options: nosniff` stops the browser from guessing HTML in bytes
   declared as something else. A Content-Security-Policy is on every response: pages (the editor, the lab) set
   their own, which lists where they may load from and connect to; every other response gets FILE_POLICY, which
   sandboxes it and allows no script at all. Each policy has `frame-ancestors 'self'`: no other site may frame
   our pages (clickjacking).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web

STATE_CHANGING = ("POST", "PUT", "DELETE", "PATCH")
LOOPBACK_NAMES = ("localhost",)
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A Host header is a name or an IPv4 address, or an IPv6 address in brackets, with an optional port.
_HOST_HEADER = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


# ---- host names (DNS rebinding) ----


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bound_addresses(listen: str) -> list[str]:
    """The addresses of a `--listen` value: "0.0.0.0" -> ["0.0.0.0"], "192.168.1.5,127.0.0.1" -> both."""
    return [a.strip() for a in listen.split(",") if a.strip()] or ["127.0.0.1"]


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, the primary one (the one with the default route) first.

    The primary address comes from connecting a UDP socket, which only picks a route: no packet is sent."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            found.append(probe.getsockname()[0])
        except OSError:
            pass  # no route at all: no network
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    found += [str(info[4][0]) for info in infos]
    return [a for a in dict.fromkeys(found) if not is_loopback(a) and a != "0.0.0.0"]


def machine_names() -> set[str]:
    """The names a browser on the LAN may use for this machine: host name, its .local (mDNS) form, addresses."""
    hostname = socket.gethostname().lower()
    names = {hostname, f"{hostname.split('.')[0]}.local", socket.getfqdn().lower()}
    with contextlib.suppress(OSError):  # a host name that does not resolve: its addresses come from the route
        names |= {str(info[4][0]).lower() for info in socket.getaddrinfo(hostname, None)}
    return {n for n in names | set(lan_addresses()) if n}


def host_names(listen: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host names the server answers to beyond loopback names (always allowed): the addresses it is bound to
    and the machine's names when one of them is not loopback, and `extra` (from --allowed-host). Empty for a
    server on 127.0.0.1 only."""
    names = {name.strip().lower() for name in extra if name.strip()}
    for address in bound_addresses(listen):
        if is_loopback(address):
            continue
        names |= machine_names()
        if address not in WILDCARD_ADDRESSES:
            names.add(address.strip("[]").lower())
    return frozenset(names)


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


def _host_refusal(host: str, allowed: frozenset[str]) -> str | None:
    """The sentence that refuses a Host header, or None when the server answers to it."""
    if not _HOST_HEADER.match(host):
        return f"The Host header {host[:80]!r} is not a host name; expected e.g. 'localhost:8188'."
    name = _hostname(host)
    if is_loopback(name) or name in allowed:
        return None
    if not allowed:
        return f"This server only answers to localhost; the Host {host!r} is not a local name."
    return (
        f"This server only answers to its own names ({', '.join(sorted(allowed)[:6])}); the Host {host!r} is not "
        "one of them (start it with --allowed-host NAME to add a name)."
    )


def guard_middleware(allowed: frozenset[str] = frozenset()) -> Callable:
    """The aiohttp middleware: the Host check (loopback names and `allowed`), then the cross-origin check."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if host and (refusal := _host_refusal(host, allowed)):
            return _refuse(refusal)
        origin = request.headers.get("Origin")
        upgrading = request.headers.get("Upgrade", "").lower() == "websocket"
        if origin and (request.method in STATE_CHANGING or upgrading) and not origin_matches(origin, host):
            return _refuse(f"Cross-origin request refused: the page at {origin} is not served by this server.")
        return await handler(request)

    return guard


def is_local_client(request: web.Request) -> bool:
    """Whether the request comes from this machine (what it may be told: paths, versions)."""
    return is_loopback(request.remote)


# ---- stored files ----

IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(head: bytes) -> str | None:
    """The image MIME type that a file's first 12 bytes show (PNG, JPEG, GIF, WebP), or None."""
    for magic, mime in IMAGE_MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def content_disposition(kind: str, filename: str) -> str:
    """`inline` or `attachment` with the file name, quoted so that no name can break out of the header."""
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()-]", "_", filename)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def stored_file(path: Path, download_name: str | None = None) -> web.FileResponse:
    """A stored file (upload, output, user file) as a response: inline with its image type when its bytes are an
    image, otherwise an application/octet-stream attachment. The name plays no part."""
    with path.open("rb") as f:
        mime = image_type(f.read(12))
    name = download_name or path.name
    headers = {
        "Content-Type": mime or "application/octet-stream",
        "Content-Disposition": content_disposition("inline" if mime else "attachment", name),
    }
    return web.FileResponse(path, headers=headers)


# ---- headers on every response ----

# Pages set their own policy (frontend.py, lab.py); this one covers files, JSON and errors: nothing may load or run.
FILE_POLICY = (
    "default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'self'"
)


def page_policy(script_src: str = "'self'", style_src: str = "'self' 'unsafe-inline'") -> str:
    """The Content-Security-Policy of a page of this server: scripts as given, everything else from this server
    only (`connect-src 'self'` covers its WebSocket too), images also from data: and blob: URLs (previews)."""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script_src}",
            f"style-src {style_src}",
            "img-src 'self' data: blob:",
            "media-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "frame-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        ]
    )


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: nosniff on every response, and FILE_POLICY where the handler set no policy."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Content-Security-Policy", FILE_POLICY)
