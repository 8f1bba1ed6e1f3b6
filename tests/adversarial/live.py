"""A real server on 127.0.0.1 in a thread of its own, and a raw HTTP client to send it anything at all.

The corpus and the fuzz need bytes that no polite client sends (bodies that are not JSON, paths with %00, methods
the route does not take), so requests go out through http.client, and the server keeps running across tests:

    with LiveServer(tmp_path) as live:
        reply = live.send("POST", "/api/prompt", b'{"number": NaN}')
        reply.status, reply.body, reply.seconds     # 400, b'{"error": ...}', 0.003
        live.tracebacks()                            # log records with a traceback since start (should be none)
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from tests.server.stub_nodes import stub_registry

Body = bytes | str | dict | list | None

# A client in another process, as a browser is: `python -c PINGER PORT STOPFILE` sends GET /api/features every
# 10 ms, prints "ready" after the first answer and, once STOPFILE exists, the JSON list of (start, latency) pairs
# (time.monotonic() seconds, the same clock in every process).
PINGER = r"""
import http.client, json, os, sys, time
port, stop = int(sys.argv[1]), sys.argv[2]
connection, pings = http.client.HTTPConnection("127.0.0.1", port, timeout=30), []
while not os.path.exists(stop):
    start = time.monotonic()
    connection.request("GET", "/api/features")
    assert connection.getresponse().read()
    pings.append((start, time.monotonic() - start))
    if len(pings) == 1:
        print("ready", flush=True)
    time.sleep(0.01)
print(json.dumps(pings), flush=True)
"""


@dataclass
class Reply:
    status: int
    body: bytes
    seconds: float
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def sentence(self) -> str | None:
        """The error's one sentence: {"error": "..."}, ComfyUI's {"error": {"message": ...}} or a plain text body."""
        text = self.body.decode("utf-8", "replace").strip()
        if self.content_type == "application/json":
            try:
                found = json.loads(text)
            except ValueError:
                return None
            error = found.get("error") if isinstance(found, dict) else None
            if isinstance(error, dict):
                error = error.get("message")
            return error if isinstance(error, str) and error.strip() else None
        return text or None


def clean_refusal(reply: Reply) -> str | None:
    """None when `reply` is a refusal as the room should get it (a 4xx with one sentence and no traceback), else
    what is wrong with it."""
    if not 400 <= reply.status < 500:
        return f"status {reply.status}"
    sentence = reply.sentence
    if sentence is None:
        return f"status {reply.status} without a sentence: {reply.body[:200]!r}"
    if "Traceback" in sentence or 'File "' in sentence:
        return f"a traceback in the reply: {sentence[:200]!r}"
    return None


class _LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LiveServer:
    """create_app with the stub nodes, served by aiohttp's runner on an ephemeral port of 127.0.0.1."""

    def __init__(self, data_dir: Path, timeout: float = 30.0) -> None:
        self.data_dir = data_dir
        self.timeout = timeout
        self.port = 0
        self.log = _LogRecords()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="adversarial-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> LiveServer:
        logging.getLogger().addHandler(self.log)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(self.timeout)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(self.timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout)
        self._loop.close()
        logging.getLogger().removeHandler(self.log)

    async def _start(self) -> None:
        app = create_app(stub_registry(OutputFiles(DataDir(self.data_dir))), self.data_dir, static_root=None)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:  # keep-alive handlers of connections the client has closed
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def send(self, method: str, path: str, body: Body = None, headers: dict[str, str] | None = None) -> Reply:
        """One request on a fresh connection. A dict or list body is sent as JSON; str and bytes as they are."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        sent = {"Content-Type": "application/json"} if data is not None else {}
        sent.update(headers or {})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        start = time.perf_counter()
        try:
            connection.putrequest(method, path, skip_host="Host" in sent, skip_accept_encoding=True)
            for name, value in sent.items():
                connection.putheader(name, value)
            if data is not None and "Content-Length" not in sent:
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data)
            response = connection.getresponse()
            content = response.read()
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
            return Reply(response.status, content, time.perf_counter() - start, content_type)
        finally:
            connection.close()

    def answers(self) -> bool:
        """The server still serves: GET /api/queue is 200 and strict JSON (a browser refuses NaN or Infinity)."""
        try:
            reply = self.send("GET", "/api/queue")
            json.loads(reply.body, parse_constant=_refuse)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return reply.status == 200

    def tracebacks(self, since: int = 0) -> list[str]:
        """The log records from the `since`-th on that carry a traceback (an unexpected exception)."""
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.log.records[since:]
            if r.exc_info or "Traceback" in r.getMessage()
        ]


def _refuse(name: str) -> None:
    raise ValueError(f"{name} in a response")


@dataclass
class Outcome:
    """How the server took one hostile request: `problem` is None for a clean refusal, else what went wrong."""

    reply: Reply | None
    problem: str | None


def attempt(
    live: LiveServer, method: str, path: str, body: Body = None, headers: dict[str, str] | None = None
) -> Outcome:
    """Send one hostile request and judge it: a clean 4xx refusal, nothing with a traceback in the server's log
    meanwhile, and the server still answering afterwards."""
    since = len(live.log.records)
    try:
        reply = live.send(method, path, body, headers)
    except (OSError, http.client.HTTPException) as ex:
        return Outcome(None, f"no reply: {type(ex).__name__}: {ex}")
    problem = clean_refusal(reply)
    logged = live.tracebacks(since)
    if problem is None and logged:
        problem = f"a traceback in the log: {logged[0][:200]}"
    if problem is None and not live.answers():
        problem = "the server stopped answering (GET /api/queue failed or was not strict JSON)"
    return Outcome(reply, problem)
