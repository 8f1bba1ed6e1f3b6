"""GET /ws?clientId=<id>: the editor's live channel.

1. On connect the server sends `status` with the queue size and a `sid`; the editor adopts the sid as its client
   id and sends it with every prompt, so execution messages for its prompts come back on this socket.
2. The editor then sends `feature_flags` (e.g. supports_preview_metadata); the server answers with its own.
3. From then on the server pushes: status (to everyone, on every queue change), and for the client's own prompts
   execution_start, execution_cached, executing, progress, progress_state, executed, execution_success /
   execution_error / execution_interrupted, then executing {node: null}; plus binary preview frames (hub.py).
"""

from __future__ import annotations

import logging
import uuid

from aiohttp import WSMsgType, web

from atelier.server.classroom import queue_status, who
from atelier.server.routes_system import feature_flags
from atelier.server.state import state
from atelier.server.strict_json import BadJSON, loads

log = logging.getLogger("atelier.server")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    st = state(request)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    if not st.hub.claim(sid, who(request).owner):  # classroom mode: another learner's sid; this socket gets its own
        sid = uuid.uuid4().hex
        st.hub.claim(sid, who(request).owner)
    client = st.hub.connect(sid, ws)
    st.hub.send("status", {"status": queue_status(st.queue, who(request), with_wait=True), "sid": sid}, sid)
    running, _ = st.queue.snapshot()
    for rec in running:  # a reconnect in the middle of its own prompt (several run at once in a merged batch)
        if rec.client_id == sid:
            st.hub.send("execution_start", {"prompt_id": rec.prompt_id, "timestamp": rec.started_at}, sid)
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                parsed = loads(message.data, "WebSocket message")
            except BadJSON:  # not strict JSON, or nested too deep: ignored, as any message the server does not know
                continue
            if isinstance(parsed, dict) and parsed.get("type") == "feature_flags":
                client.flags = parsed.get("data") if isinstance(parsed.get("data"), dict) else {}
                st.hub.send("feature_flags", feature_flags(st), sid)
    finally:
        st.hub.disconnect(client)
    return ws


def setup(app: web.Application) -> None:
    app.router.add_get("/ws", websocket)
