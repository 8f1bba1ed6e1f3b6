"""Hostile WebSocket messages: the editor's live channel ignores what it cannot read and stays open.

A message nested 100,000 deep raised RecursionError in the socket's handler, which closed the socket (and logged a
traceback); now every message is decoded as strict JSON (strict_json.loads) and one that is not is ignored.
"""

from __future__ import annotations

import logging

from tests.server.harness import async_test, is_type, receive, server

HOSTILE = [
    "[" * 100_000 + "]" * 100_000,
    '{"type": "feature_flags", "data": NaN}',
    '{"type": "feature_flags", "data": [1, 2]}',
    '{"type": ["feature_flags"]}',
    "[]",
    "null",
    "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
    "not json at all",
]


@async_test
async def test_the_socket_ignores_hostile_messages_and_stays_open(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        async with server(tmp_path) as client:
            ws = await client.ws_connect("/ws?clientId=adversary")
            await receive(ws, is_type("status"))
            for message in HOSTILE:
                await ws.send_str(message)
            await ws.send_bytes(b"\x00\xff binary")
            await ws.send_str('{"type": "feature_flags", "data": {"supports_preview_metadata": true}}')
            answer = (await receive(ws, is_type("feature_flags")))[-1]
            assert answer["data"]["supports_preview_metadata"] is True
            assert not ws.closed
            await ws.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the log"
