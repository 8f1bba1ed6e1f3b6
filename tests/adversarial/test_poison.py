"""Poison that survives a restart (issue 21, item 2): values an older version stored are skipped, not served.

`"number": Infinity` made /queue and /jobs invalid JSON and then stopped the server from starting (OverflowError in
next_number); `"number": 1e19` made every later POST /prompt fail after a restart; a NaN setting made GET /settings
unparseable for every browser. Here the poison is written straight into the database and the settings file, as an
older version would have left it, and the server must start, serve strict JSON and queue a normal prompt.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid

from aiohttp.test_utils import TestClient, TestServer

from atelier.graph.schema import Input, NodeContext, NodeOutput, NodeSchema
from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from tests.adversarial.corpus import good_prompt
from tests.server.harness import async_test, is_type, post_prompt, receive, server, wait_history
from tests.server.stub_nodes import stub_registry

COLUMNS = "prompt_id, number, state, prompt, extra_data, outputs_to_execute, created_at, outputs, messages"


def strict(text: str) -> object:
    """Parse as a browser's JSON.parse does: NaN and Infinity are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def poison_rows() -> dict[str, tuple]:
    """prompt_id -> the row an older version (or a hand edit) might have stored, each bad in one way."""
    good = json.dumps(good_prompt())

    def row(number: object = 5, state: str = "success", prompt: str = good, **columns: object) -> tuple:
        extra = columns.get("extra_data", '{"client_id": "old"}')
        outputs = columns.get("outputs", "{}")
        return (number, state, prompt, extra, '["2"]', columns.get("created_at", 1), outputs, "[]")

    return {
        "number-infinity": row(number=float("inf"), state="pending"),
        "number-minus-infinity": row(number=float("-inf")),
        "number-1e19": row(number=1e19),
        "number-text": row(number="many"),
        "prompt-not-json": row(prompt="{not json"),
        "prompt-a-list": row(prompt="[1, 2]"),
        "prompt-nested-deep": row(prompt="[" * 50_000 + "]" * 50_000),
        "state-unknown": row(state="exploded"),
        "created-at-text": row(created_at="yesterday"),
        "outputs-a-number": row(outputs="42"),
    }


READABLE = {  # rows with NaN or Infinity inside their JSON text: kept, with those numbers read as null
    "extra-data-nan": (
        '{"client_id": "old", "zoom": NaN}',
        '{"2": {"images": [{"filename": "a.png", "t": Infinity}]}}',
    ),
}


@async_test
async def test_poison_in_the_database_and_settings_does_not_survive_a_restart(tmp_path, caplog):
    async with server(tmp_path) as client:  # a first run creates the database, with one normal prompt in history
        first = await post_prompt(client, good_prompt())
        await wait_history(client, first["prompt_id"])

    db = sqlite3.connect(tmp_path / "atelier.sqlite")
    for prompt_id, values in poison_rows().items():
        db.execute(f"INSERT INTO prompts ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (prompt_id, *values))
    for prompt_id, (extra, outputs) in READABLE.items():
        values = (prompt_id, 7, "success", json.dumps(good_prompt()), extra, '["2"]', 2, outputs, "[]")
        db.execute(f"INSERT INTO prompts ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    db.commit()
    db.close()
    settings = tmp_path / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text('{"Comfy.Locale": "fr", "Comfy.Zoom": NaN, "Comfy.Big": 1e999}')

    with caplog.at_level(logging.WARNING, logger="atelier.server"):
        async with server(tmp_path) as client:
            for path in ("/api/queue", "/api/jobs", "/api/history", "/api/settings", "/api/prompt"):
                resp = await client.get(path)
                assert resp.status == 200, path
                strict(await resp.text())
            history = strict(await (await client.get("/api/history")).text())
            assert set(history) == {first["prompt_id"], "extra-data-nan"}  # every poisoned row is left out
            assert history["extra-data-nan"]["prompt"][3]["zoom"] is None
            assert history["extra-data-nan"]["outputs"]["2"]["images"][0]["t"] is None
            job = strict(await (await client.get("/api/jobs/extra-data-nan")).text())
            assert job["id"] == "extra-data-nan" and job["workflow"]["extra_data"]["zoom"] is None
            assert (await client.get("/api/jobs/number-infinity")).status == 404
            stored = strict(await (await client.get("/api/settings")).text())
            assert stored["Comfy.Locale"] == "fr" and stored["Comfy.Zoom"] is None and stored["Comfy.Big"] is None

            second = await post_prompt(client, good_prompt())  # a normal prompt after the restart: queued and run
            assert second["number"] == 8  # one more than the sane numbers (7), never 1e19 + 1
            assert (await wait_history(client, second["prompt_id"]))["status"]["completed"] is True

    reported = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped prompt")]
    assert sorted(m.split("'")[1] for m in reported) == sorted(poison_rows())  # each bad row once, by its id
    assert all(not r.exc_info for r in caplog.records)


@async_test
async def test_poison_is_refused_at_the_door(tmp_path):
    async with server(tmp_path) as client:
        bodies = {
            '{"prompt": {}, "number": Infinity}': "holds Infinity, which is not JSON",
            '{"prompt": {}, "number": NaN}': "holds NaN, which is not JSON",
            '{"prompt": {}, "number": 1e999}': "holds the number 1e999, too large for a float",
        }
        for body, words in bodies.items():
            resp = await client.post("/api/prompt", data=body)
            assert resp.status == 400 and words in (await resp.json())["error"]["message"]
        resp = await client.post("/api/prompt", json={"prompt": good_prompt(), "number": 1e19})
        assert resp.status == 400
        assert (await resp.json())["error"]["message"] == (
            "The 'number' field must be a whole number between -2**53 and 2**53; got '1e+19'."
        )
        accepted = await post_prompt(client, good_prompt(), number=2**53 - 1, prompt_id=str(uuid.uuid4()))
        assert accepted["number"] == 2**53 - 1  # the largest number still exact in a double
        history = strict(await (await client.get(f"/api/history/{accepted['prompt_id']}")).text())
        assert history == {} or history[accepted["prompt_id"]]["prompt"][0] == 2**53 - 1

        for value in ("NaN", "-Infinity", '{"a": [1e400]}'):
            resp = await client.post("/api/settings/Comfy.Zoom", data=value)
            assert resp.status == 400, value
            assert "which is not JSON" in await resp.text() or "too large for a float" in await resp.text()
        strict(await (await client.get("/api/settings")).text())


class ReportNaN:
    """An output node whose report holds NaN and infinities (a diverged loss, an empty image's statistics)."""

    SCHEMA = NodeSchema(name="ReportNaN", category="stub", output_node=True, inputs=[Input("image", "IMAGE")])

    def run(self, ctx: NodeContext, image: object) -> NodeOutput:
        return NodeOutput(result=(), ui={"stats": [float("nan"), float("inf"), -float("inf"), 0.5]})


@async_test
async def test_a_node_that_reports_nan_reaches_history_and_the_socket_as_null(tmp_path):
    registry = stub_registry(OutputFiles(DataDir(tmp_path)))
    registry.add(ReportNaN)
    app = create_app(registry, tmp_path, static_root=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws?clientId=nan")
        await receive(ws, is_type("status"))
        prompt = {**good_prompt(), "2": {"class_type": "ReportNaN", "inputs": {"image": ["1", 0]}}}
        queued = await post_prompt(client, prompt, client_id="nan")
        messages = await receive(ws, is_type("executed", prompt_id=queued["prompt_id"]))
        assert messages[-1]["data"]["output"] == {"stats": [None, None, None, 0.5]}
        await wait_history(client, queued["prompt_id"])
        for path in ("/api/history", f"/api/jobs/{queued['prompt_id']}", "/api/jobs"):
            strict(await (await client.get(path)).text())
        history = strict(await (await client.get("/api/history")).text())
        assert history[queued["prompt_id"]]["outputs"]["2"] == {"stats": [None, None, None, 0.5]}
        await ws.close()
