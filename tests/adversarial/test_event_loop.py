"""The event loop freezes for everyone (issue 21, item 3): no request may hold the loop the whole room shares.

A 4,500-node chain used to freeze HTTP and WebSocket for 46 s (quadratic validation on the loop), and 45 MB of
extra_data made each GET /jobs block 3.1 s. Validation is linear now and runs in a worker thread, bodies are
decoded off the loop, extra_data is limited per field, and queue, history and jobs are read and written in a thread.

The ping is GET /api/features, sent by another process, as a browser would (a client on the server's own loop
would measure its own turns too), every 10 ms while the work runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from atelier.server.routes_queue import MAX_EXTRA_DATA_BYTES
from tests.adversarial.corpus import chain, good_prompt
from tests.adversarial.live import PINGER
from tests.server.harness import async_test, post_prompt, server, wait_history

PING_LIMIT = 0.1  # seconds


@dataclasses.dataclass
class Pings:
    """Latencies (seconds) of the pings sent at rest, before the body, and of those sent while it ran."""

    rest: list[float] = dataclasses.field(default_factory=list)
    during: list[float] = dataclasses.field(default_factory=list)

    def check(self, what: str) -> None:
        """The worst ping during the work is within PING_LIMIT of the worst at rest: on a busy machine (CI's two
        cores, or other jobs) every ping is slower, and a loop held by the work is slower by the work's length."""
        assert len(self.during) >= 3, f"only {len(self.during)} pings during {what}"
        worst, rest = max(self.during), max(self.rest)
        assert worst < PING_LIMIT + rest, (
            f"a ping waited {worst * 1000:.0f} ms during {what} (at rest: {rest * 1000:.0f} ms at worst)"
        )


@contextlib.asynccontextmanager
async def pinger(port: int, folder: Path, rest_s: float = 1.0) -> AsyncIterator[Pings]:
    """Pings from another process: `rest_s` seconds of them before the body, then while it runs (the lists are
    filled when the body ends)."""
    stop = folder / "stop-pinging"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PINGER, str(port), str(stop), stdout=asyncio.subprocess.PIPE
    )
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    await asyncio.sleep(rest_s)
    began, pings = time.monotonic(), Pings()
    try:
        yield pings
    finally:
        stop.touch()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        stop.unlink()
        for start, latency in json.loads(out)[1:]:  # the first ping opened the connection
            (pings.during if start >= began else pings.rest).append(latency)


def _get(port: int, path: str) -> tuple[int, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    reply = connection.getresponse()
    return reply.status, len(reply.read())


@async_test
async def test_the_loop_answers_within_100_ms_while_a_5000_node_graph_is_validated(tmp_path):
    prompt = chain(5000, width=1000)  # MakeImage(width 1000 > 64) -> 4,998 SlowImage -> SaveStub: all validated
    async with server(tmp_path) as client:
        async with pinger(client.port, tmp_path) as pings:
            start = time.perf_counter()
            for _ in range(3):
                resp = await client.post("/api/prompt", json={"prompt": prompt})
                assert resp.status == 400
            took = time.perf_counter() - start
        errors = (await resp.json())["node_errors"]
        assert list(errors) == ["0"] and errors["0"]["dependent_outputs"] == ["4999"]
    # Validation alone takes 0.15-0.25 s here: on the loop, the pings meanwhile would have waited that long.
    pings.check(f"3 POSTs of 5,000 nodes ({took:.2f} s)")


@async_test
async def test_45_mb_of_extra_data_is_refused_and_jobs_do_not_block(tmp_path):
    async with server(tmp_path) as client:
        resp = await client.post("/api/prompt", json={"prompt": good_prompt(), "extra_data": {"x": "e" * 45 * 2**20}})
        assert resp.status == 413
        message = (await resp.json())["error"]["message"]
        assert message == "The prompt body is 47,186,226 bytes; the most is 16,777,216."
        resp = await client.post("/api/prompt", json={"prompt": good_prompt(), "extra_data": {"x": "e" * 5 * 2**20}})
        assert (await resp.json())["error"]["message"] == (
            f"extra_data is {5 * 2**20 + 9:,} bytes of JSON; the most is {MAX_EXTRA_DATA_BYTES:,}."
        )

        # Five prompts just under the limit: 20 MB of extra_data that every GET /jobs and /history reads back.
        big = {"extra_pnginfo": {"workflow": {"id": "w", "blob": "e" * (MAX_EXTRA_DATA_BYTES - 100)}}}
        ids = [(await post_prompt(client, good_prompt(), extra_data=big))["prompt_id"] for _ in range(5)]
        await wait_history(client, ids[-1])
        async with pinger(client.port, tmp_path) as pings:
            start = time.perf_counter()
            # Read from a thread, as a browser reads from its own process: the 20 MB answers parsed by a client on
            # the server's own loop would hold that loop themselves.
            for path in ("/api/jobs", "/api/history", "/api/jobs?workflow_id=w", "/api/queue") * 2:
                status, size = await asyncio.to_thread(_get, client.port, path)
                assert status == 200 and size > 0
            took = time.perf_counter() - start
        jobs = await (await client.get("/api/jobs?workflow_id=w")).json()
        assert jobs["pagination"]["total"] == 5
    pings.check(f"8 GETs of 20 MB ({took:.2f} s)")
