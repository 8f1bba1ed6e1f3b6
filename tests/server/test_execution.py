"""A prompt's life through the WebSocket: messages in order, previews, errors, interrupt, cancel, restart."""

from __future__ import annotations

import asyncio
import io
import json
import struct

from PIL import Image

from atelier.server.hub import preview_frame
from tests.server.harness import async_test, is_type, post_prompt, receive, server, text_types, wait_history
from tests.server.stub_nodes import graph


@async_test
async def test_prompt_runs_with_comfyui_message_sequence(tmp_path):
    async with server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=editor-1")
        hello = await receive(ws, is_type("status"))
        assert hello[-1]["data"] == {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "editor-1"}
        await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        flags = await receive(ws, is_type("feature_flags"))
        assert flags[-1]["data"] == {"supports_preview_metadata": True, "max_upload_size": 50 * 1024 * 1024}

        queued = await post_prompt(client, graph(steps=2), client_id="editor-1", extra_data={"preview_method": "auto"})
        pid = queued["prompt_id"]
        assert queued["node_errors"] == {} and isinstance(queued["number"], int)
        messages = await receive(ws, is_type("executing", node=None))
        messages += await receive(ws, is_type("status"))  # the queue is empty again

        events = [t for t in text_types(messages) if t != "progress_state"]
        assert events == [
            "status",  # queue_remaining 1
            "execution_start",
            "execution_cached",
            "executing",
            "executing",
            "progress",
            "progress",
            "executing",
            "executed",
            "execution_success",
            "executing",
            "status",
        ]
        texts = [m for m in messages if isinstance(m, dict)]
        assert texts[0]["data"]["status"]["exec_info"]["queue_remaining"] == 1
        assert texts[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0
        assert [m["data"]["node"] for m in texts if m["type"] == "executing"] == ["1", "2", "3", None]
        assert all(m["data"]["prompt_id"] == pid for m in texts if m["type"] != "status")
        progress = [m["data"] for m in texts if m["type"] == "progress"]
        assert progress == [
            {"value": 1, "max": 2, "node": "2", "prompt_id": pid},
            {"value": 2, "max": 2, "node": "2", "prompt_id": pid},
        ]
        executed = next(m["data"] for m in texts if m["type"] == "executed")
        ref = {"filename": "stub_00001_.png", "subfolder": "", "type": "output"}
        assert executed == {"node": "3", "display_node": "3", "output": {"images": [ref]}, "prompt_id": pid}

        # Two previews (one per step), as event 4 frames with metadata, because the client asked for them.
        frames = [m for m in messages if isinstance(m, bytes)]
        assert len(frames) == 2
        event, length = struct.unpack(">II", frames[0][:8])
        meta = json.loads(frames[0][8 : 8 + length])
        assert event == 4 and meta["node_id"] == "2" and meta["prompt_id"] == pid and meta["image_type"] == "image/jpeg"
        assert Image.open(io.BytesIO(frames[0][8 + length :])).size == (16, 8)

        # The output is viewable and is what the nodes made.
        resp = await client.get("/api/view", params=ref)
        assert resp.status == 200 and resp.content_type == "image/png"
        image = Image.open(io.BytesIO(await resp.read()))
        assert image.size == (16, 8) and image.getpixel((0, 0)) == (255, 0, 0)
        assert image.text["node"] == "3"

        entry = await wait_history(client, pid)
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        kept = [m[0] for m in entry["status"]["messages"]]
        assert kept == ["execution_start", "execution_cached", "execution_success"]
        assert entry["outputs"] == {"3": {"images": [ref]}}
        assert entry["prompt"][1] == pid and entry["prompt"][4] == ["3"]
        assert entry["meta"]["3"]["node_id"] == "3"

        # Same prompt again: every node is cached, and the output node shows its earlier image again.
        await post_prompt(client, graph(steps=2), client_id="editor-1")
        again = await receive(ws, is_type("executing", node=None))
        assert next(m["data"]["nodes"] for m in again if is_type("execution_cached")(m)) == ["1", "2", "3"]
        assert next(m["data"]["output"] for m in again if is_type("executed")(m)) == {"images": [ref]}
        # Another colour: a new file with the same prefix never overwrites the first one.
        await post_prompt(client, graph(colour="green"), client_id="editor-1")
        third = await receive(ws, is_type("executing", node=None))
        new_ref = next(m["data"]["output"] for m in third if is_type("executed")(m))["images"][0]
        assert new_ref["filename"] == "stub_00002_.png"
        first = Image.open(io.BytesIO(await (await client.get("/view", params=ref)).read()))
        assert first.getpixel((0, 0)) == (255, 0, 0)
        await ws.close()


def test_preview_frame_without_metadata_is_event_1_jpeg():
    frame = preview_frame(b"\xff\xd8jpegdata", "image/jpeg", None)
    assert struct.unpack(">II", frame[:8]) == (1, 1) and frame[8:] == b"\xff\xd8jpegdata"
    assert struct.unpack(">II", preview_frame(b"png", "image/png", None)[:8]) == (1, 2)


@async_test
async def test_failing_node_reports_error_and_queue_moves_on(tmp_path):
    async with server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive(ws, is_type("status"))
        bad = await post_prompt(client, graph(fail=True), client_id="c")
        good = await post_prompt(client, graph(colour="blue"), client_id="c")
        messages = await receive(ws, is_type("execution_success", prompt_id=good["prompt_id"]))
        error = next(m["data"] for m in messages if is_type("execution_error")(m))
        assert error["prompt_id"] == bad["prompt_id"] and error["node_id"] == "4" and error["node_type"] == "Fail"
        assert error["exception_message"] == "boom" and error["exception_type"] == "RuntimeError"
        assert error["executed"] == ["1", "2"] and isinstance(error["timestamp"], int)
        failed = await wait_history(client, bad["prompt_id"])
        assert failed["status"]["status_str"] == "error" and failed["status"]["completed"] is False
        assert failed["status"]["messages"][-1][0] == "execution_error"
        job = await (await client.get(f"/api/jobs/{bad['prompt_id']}")).json()
        assert job["status"] == "failed" and job["execution_error"]["exception_message"] == "boom"
        # The server still answers.
        assert (await client.get("/api/queue")).status == 200


@async_test
async def test_interrupt_stops_the_running_prompt(tmp_path):
    async with server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive(ws, is_type("status"))
        slow = await post_prompt(client, graph(steps=500, delay=0.01), client_id="c")
        await receive(ws, is_type("progress"))
        queue = await (await client.get("/api/queue")).json()
        assert [item[1] for item in queue["queue_running"]] == [slow["prompt_id"]] and queue["queue_pending"] == []
        resp = await client.post("/api/interrupt", json={"prompt_id": slow["prompt_id"]})
        assert resp.status == 200
        messages = await receive(ws, is_type("executing", node=None))
        stopped = next(m["data"] for m in messages if is_type("execution_interrupted")(m))
        assert stopped["prompt_id"] == slow["prompt_id"] and stopped["node_id"] == "2"
        assert stopped["node_type"] == "SlowImage" and stopped["executed"] == ["1"]
        entry = await wait_history(client, slow["prompt_id"])
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
        job = await (await client.get(f"/api/jobs/{slow['prompt_id']}")).json()
        assert job["status"] == "cancelled"


@async_test
async def test_queued_prompts_can_be_cancelled(tmp_path):
    async with server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive(ws, is_type("status"))
        slow = await post_prompt(client, graph(steps=500, delay=0.01), client_id="c")
        await receive(ws, is_type("progress"))
        waiting = [(await post_prompt(client, graph(colour=c), client_id="c"))["prompt_id"] for c in ("red", "green")]
        front = await post_prompt(client, graph(colour="blue"), client_id="c", front=True)
        queue = await (await client.get("/queue")).json()
        assert [item[1] for item in queue["queue_pending"]] == [front["prompt_id"], *waiting]
        assert queue["queue_pending"][0][0] < 0  # "front" prompts get a negative number

        assert (await client.post("/api/queue", json={"delete": [waiting[0]]})).status == 200
        cancelled = await (await client.post(f"/api/jobs/{waiting[1]}/cancel")).json()
        assert cancelled == {"cancelled": True}
        assert await (await client.post("/api/jobs/cancel", json={"job_ids": ["nope"]})).json() == {"cancelled": False}
        assert (await client.post("/api/queue", json={"clear": True})).status == 200
        queue = await (await client.get("/api/queue")).json()
        assert queue["queue_pending"] == [] and len(queue["queue_running"]) == 1

        pending = await (await client.get("/api/jobs", params={"status": "in_progress,pending"})).json()
        assert [j["id"] for j in pending["jobs"]] == [slow["prompt_id"]]
        assert pending["jobs"][0]["status"] == "in_progress"
        assert (await client.post(f"/api/jobs/{slow['prompt_id']}/cancel")).status == 200
        await wait_history(client, slow["prompt_id"])
        await asyncio.sleep(0.1)
        history = await (await client.get("/api/history")).json()
        assert list(history) == [slow["prompt_id"]]  # none of the cancelled prompts ever ran
        jobs = await (await client.get("/api/jobs", params={"status": "cancelled", "sort_order": "asc"})).json()
        assert [j["id"] for j in jobs["jobs"]] == [slow["prompt_id"], *waiting, front["prompt_id"]]


@async_test
async def test_history_and_pending_queue_survive_a_restart(tmp_path):
    async with server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive(ws, is_type("status"))
        done = await post_prompt(client, graph(colour="green"), client_id="c")
        await wait_history(client, done["prompt_id"])
        slow = await post_prompt(client, graph(steps=500, delay=0.01), client_id="c")
        await receive(ws, is_type("progress", prompt_id=slow["prompt_id"]))
        waiting = await post_prompt(client, graph(colour="blue", prefix="after"), client_id="c")
        await ws.close()
    # The server stopped: the running prompt was interrupted, the waiting one is still in the database.
    async with server(tmp_path) as client:
        history = await (await client.get("/api/history")).json()
        assert history[done["prompt_id"]]["outputs"]["3"]["images"][0]["filename"] == "stub_00001_.png"
        entry = await wait_history(client, waiting["prompt_id"])  # queued again on start, and run
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["3"]["images"][0]["filename"] == "after_00001_.png"
        ids = list(await (await client.get("/api/history")).json())
        assert ids == [done["prompt_id"], slow["prompt_id"], waiting["prompt_id"]]
        last = await (await client.get("/api/history", params={"max_items": "1"})).json()
        assert list(last) == [waiting["prompt_id"]]
        first = await (await client.get("/api/history", params={"max_items": "1", "offset": "0"})).json()
        assert list(first) == [done["prompt_id"]]
        assert (await client.post("/api/history", json={"delete": [done["prompt_id"]]})).status == 200
        assert await (await client.get(f"/api/history/{done['prompt_id']}")).json() == {}
        assert (await client.post("/history", json={"clear": True})).status == 200
        assert await (await client.get("/api/history")).json() == {}
