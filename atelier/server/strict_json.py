"""JSON in and out of the server, strictly, so that no request can store a value that breaks later responses.

Python's json module accepts more than JSON (RFC 8259) does: the words NaN, Infinity and -Infinity, and numbers
such as 1e400 that overflow to infinity; it writes them back the same way. A browser's JSON.parse refuses a whole
body that holds one, so a single stored `"number": Infinity` made /queue and /jobs unreadable for every editor in
the room. Nesting is the other trap: 100,000 nested brackets end in a RecursionError (a 500) when decoded, and a
value nested 900 deep is decoded but breaks code that walks it recursively later.

    body = await read_json(request, "prompt body")    # the value, or BadJSON(status, one sentence)
    await json_response_off_loop(build)                # build() and its JSON in a thread; NaN refused, not written
    dumps_finite(value)                                # what nodes report: a NaN or an infinity written as null
    loads_lenient(text)                                # what an older version stored: NaN and Infinity read as null

A body is refused past MAX_BODY_BYTES (413) or MAX_DEPTH levels of arrays and objects (400). Bodies larger than
OFF_LOOP_BYTES are decoded in a worker thread, so that one large request does not pause every other client.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from atelier.errors import InputError
from atelier.graph.schema import nesting_depth

MAX_BODY_BYTES = 16 * 1024 * 1024  # a large workflow is 1-2 MB; uploads are streamed and do not come through here
MAX_DEPTH = 64  # the editor's deepest body (a workflow with subgraphs in extra_data) nests about 12 levels
OFF_LOOP_BYTES = 256 * 1024  # decoding this much takes about 3 ms; larger bodies are decoded in a thread

dumps = functools.partial(json.dumps, allow_nan=False)


class BadJSON(InputError):
    """A request body that is not strict JSON, too large or too deep: `status` (400 or 413) and one sentence."""

    def __init__(self, message: str, status: int = 400, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.details = details  # where the decoder stopped, e.g. "Expecting value: line 1 column 5 (char 4)"

    def http_error(self) -> web.HTTPException:
        """The same refusal as aiohttp's exception (a plain-text body: the sentence), for a handler to raise."""
        if self.status == 413:
            return web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, 0, text=str(self))
        return web.HTTPBadRequest(text=str(self))


def loads(data: bytes | str, what: str = "request body", expected: str = "a JSON value") -> Any:
    """Decode strict JSON: no NaN or Infinity, no number that overflows a float, at most MAX_DEPTH levels deep.
    `what` and `expected` name the body in the refusal: "The {what} is not valid JSON; expected {expected}."."""

    def refuse_constant(name: str) -> None:
        raise BadJSON(f"The {what} holds {name}, which is not JSON; expected a finite number.")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise BadJSON(f"The {what} holds the number {text[:40]}, too large for a float; expected a finite number.")
        return value

    try:
        value = json.loads(data, parse_constant=refuse_constant, parse_float=finite_float, object_pairs_hook=_object)
    except RecursionError:
        raise BadJSON(f"The {what} nests arrays and objects too deeply; the most is {MAX_DEPTH} levels.") from None
    except ValueError as ex:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4,300 digits
        details = str(ex).split("; ")[0]
        raise BadJSON(f"The {what} is not valid JSON; expected {expected}.", details=details) from None
    if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise BadJSON(f"The {what} nests arrays and objects more than {MAX_DEPTH} levels deep.")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict:
    """Each decoded object passes through Python code, where a worker thread lets the event loop have the GIL."""
    return dict(pairs)


async def read_json(
    request: web.Request, what: str = "request body", expected: str = "a JSON value", max_bytes: int = MAX_BODY_BYTES
) -> Any:
    """The request's body decoded as strict JSON (see `loads`), refused with 413 when larger than `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadJSON(_too_large(what, request.content_length, max_bytes), status=413)
    data = await request.read()  # aiohttp itself refuses bodies past the app's client_max_size
    if len(data) > max_bytes:
        raise BadJSON(_too_large(what, len(data), max_bytes), status=413)
    if len(data) <= OFF_LOOP_BYTES:
        return loads(data, what, expected)
    return await asyncio.get_running_loop().run_in_executor(None, loads, data, what, expected)


async def read_object(request: web.Request, what: str = "request body") -> dict:
    """A body that must be a JSON object, or no body at all ({}): the small POST routes (queue, free, ...)."""
    if not request.can_read_body:
        return {}
    body = await read_json(request, what, "a JSON object")
    if not isinstance(body, dict):
        raise BadJSON(f"The {what} is {json_kind(body)}; expected a JSON object.")
    return body


def json_kind(value: Any) -> str:
    """What a decoded value is, in JSON's words and with its article: "an object", "a string", "null"..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _too_large(what: str, size: int, limit: int) -> str:
    return f"The {what} is {size:,} bytes; the most is {limit:,}."


def loads_lenient(text: str | bytes) -> Any:
    """Decode what an older version may have stored: NaN, Infinity and overflowing numbers become None."""

    def finite_or_none(text: str) -> float | None:
        value = float(text)
        return value if math.isfinite(value) else None

    return json.loads(text, parse_constant=lambda _name: None, parse_float=finite_or_none)


def dumps_finite(value: Any) -> str:
    """JSON text of `value` with every non-finite float written as null (for what nodes report, e.g. a NaN loss)."""
    try:
        return dumps(value)
    except ValueError:
        return dumps(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_chunked(value: Any, levels: int = 3) -> str:
    """dumps(value), with each item below the top `levels` of objects and arrays written by a json call of its own.

    json's C encoder holds the GIL for the whole of one call; the Python between the calls lets the event loop
    run, so a large history written in a worker thread does not pause the other clients."""
    if levels and isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return "{" + ", ".join(f"{dumps(key)}: {dumps_chunked(item, levels - 1)}" for key, item in value.items()) + "}"
    if levels and isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps_chunked(item, levels - 1) for item in value) + "]"
    return dumps(value)


async def json_response_off_loop(build: Callable[[], Any]) -> web.Response:
    """A JSON response whose data is built (say, read from the database) and written in a worker thread."""
    body = await asyncio.to_thread(lambda: dumps_chunked(build()).encode())  # 20 MB encode: 10 ms, not on the loop
    return web.Response(body=body, content_type="application/json")
