"""Run the real server on 127.0.0.1 (ephemeral port) with stub nodes, and talk to it as the editor does."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from atelier.server.state import Limits
from tests.server.stub_nodes import stub_registry

TIMEOUT = 10.0


def async_test(fn: Callable) -> Callable:
    """Run an `async def test_...(tmp_path)` with asyncio.run (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60))

    return wrapper


@contextlib.asynccontextmanager
async def server(data_dir: Path, limits: Limits | None = None, **kwargs: Any) -> AsyncIterator[TestClient]:
    app = create_app(stub_registry(OutputFiles(DataDir(data_dir))), data_dir, limits=limits, **kwargs)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def post_prompt(client: TestClient, prompt: dict, client_id: str = "tester", **extra: Any) -> dict:
    resp = await client.post("/api/prompt", json={"prompt": prompt, "client_id": client_id, **extra})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_history(client: TestClient, prompt_id: str, timeout: float = TIMEOUT) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = await (await client.get(f"/api/history/{prompt_id}")).json()
        if found:
            return found[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


async def receive(ws: Any, until: Callable[[Any], bool], timeout: float = TIMEOUT) -> list:
    """Messages (dicts for text frames, bytes for binary ones) up to and including the first that `until` accepts."""
    got = []
    end = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, end - time.monotonic()))
        if msg.type == WSMsgType.TEXT:
            item = json.loads(msg.data)
        elif msg.type == WSMsgType.BINARY:
            item = msg.data
        else:
            raise AssertionError(f"socket closed: {msg}")
        got.append(item)
        if until(item):
            return got


def is_type(kind: str, **data: Any) -> Callable[[Any], bool]:
    def check(item: Any) -> bool:
        if not isinstance(item, dict) or item["type"] != kind:
            return False
        return all(item["data"].get(k) == v for k, v in data.items())

    return check


def text_types(messages: list) -> list[str]:
    return [m["type"] for m in messages if isinstance(m, dict)]
