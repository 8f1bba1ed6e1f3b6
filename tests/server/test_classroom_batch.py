"""The real server in classroom mode with the real nodes and a tiny random model: two learners' prompts go through
the scheduler (turns, split jobs), compatible ones run as ONE sampling call, and each learner still gets exactly
the PNG their prompt makes alone, their own previews and messages, their own places in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from atelier.generation import GenerationParams, api_graph
from atelier.graph.executor import EventLog, Executor
from atelier.server.app import create_app, default_registry
from atelier.server.files import DataDir
from atelier.server.state import STATE
from tests.server.harness import post_prompt, wait_history
from tests.server.test_classroom import browser, instructor, join
from tests.test_pipeline import tiny_checkpoint

SIZE = 32


def async_test(fn):
    """harness.async_test with a longer bound: these tests run a real model (fast alone, slow on a busy CPU)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 300))

    return wrapper


COMMON = {
    "steps": 3,
    "cfg": 6.0,
    "sampler": "euler_ancestral",
    "width": SIZE,
    "height": SIZE,
    "model": "tiny.safetensors",
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def data_dir_with_model(root: Path, model: Path) -> Path:
    folder = root / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / model.name).write_bytes(model.read_bytes())
    return root


@contextlib.asynccontextmanager
async def class_server(data_dir: Path, **kwargs) -> AsyncIterator[TestClient]:
    app = create_app(default_registry(DataDir(data_dir)), data_dir, static_root=None, classroom=True, **kwargs)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def prompt_of(text: str, seed: int, prefix: str, **changes) -> dict:
    graph = api_graph(GenerationParams(text, seed=seed, **{**COMMON, **changes}))
    graph["9"]["inputs"]["filename_prefix"] = prefix
    return graph


def alone(data_dir: Path, prompt: dict) -> list[bytes]:
    """The PNG files a prompt's SaveImage writes when the graph executor runs it alone (no server, no batch)."""
    registry = default_registry(DataDir(data_dir))
    result = Executor(registry).execute(prompt, ["9"], EventLog(), {})
    assert result.status == "success", result.error
    return [(data_dir / "output" / ref["subfolder"] / ref["filename"]).read_bytes() for ref in result.ui["9"]["images"]]


async def listen(ws, into: list, stop: asyncio.Event) -> None:
    """Every message of a socket until `stop`: dicts for text frames, (prompt id of the preview,) for binary ones."""
    while not stop.is_set():
        try:
            msg = await ws.receive(timeout=0.2)
        except TimeoutError:
            continue
        if msg.type == WSMsgType.TEXT:
            into.append(json.loads(msg.data))
        elif msg.type == WSMsgType.BINARY:
            event, size = struct.unpack(">II", msg.data[:8])
            assert event == 4  # with metadata: the socket announced supports_preview_metadata
            into.append(("preview", json.loads(msg.data[8 : 8 + size])["prompt_id"]))
        else:
            return


@async_test
async def test_two_learners_take_turns_share_one_sampling_call_and_get_their_own_images(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with class_server(data, batch_images=4) as client, browser(client) as ana, browser(client) as bob:
        st = client.server.app[STATE]
        room = st.classroom
        await join(ana, room.join_code, "Ana")
        await join(bob, room.join_code, "Bob")
        sockets = {
            "ana": await ana.ws_connect("/ws?clientId=ana-tab"),
            "bob": await bob.ws_connect("/ws?clientId=bob-tab"),
        }
        for ws in sockets.values():
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        heard: dict[str, list] = {"ana": [], "bob": []}
        stop = asyncio.Event()
        listeners = [asyncio.ensure_future(listen(sockets[n], heard[n], stop)) for n in heard]

        batches: list[list[str]] = []
        merged_calls: list[int] = []
        merged = st.queue.worker.merged
        run = merged.run
        merged.run = lambda batch: merged_calls.append(len(batch.parts)) or run(batch)
        st.queue.on_batch = lambda batch: batches.append([f"{p.job_id}/{p.index}" for p in batch.parts])

        st.queue.pause()  # everything is queued before the first batch is taken
        asked = {
            "a1": (ana, "ana-tab", prompt_of("a red circle", 1, "ana", batch=3)),  # split into 3 parts
            "a2": (ana, "ana-tab", prompt_of("a red circle, big", 2, "ana", steps=4)),  # other steps: another batch
            "b1": (bob, "bob-tab", prompt_of("un carré bleu", 3, "bob")),
            "b2": (bob, "bob-tab", prompt_of("une étoile jaune", 4, "bob")),
        }
        ids = {}
        for name, (session, tab, prompt) in asked.items():
            ids[name] = (await post_prompt(session, prompt, client_id=tab, extra_data={"preview_method": "auto"}))[
                "prompt_id"
            ]
        names = {v: k for k, v in ids.items()}

        # Each learner sees their own prompts' places (and nobody else's) in /api/jobs, before anything runs.
        jobs = (await (await ana.get("/api/jobs", params={"status": "pending"})).json())["jobs"]
        assert sorted(names[j["id"]] for j in jobs) == ["a1", "a2"]
        assert [j["atelier_wait"]["position"] for j in sorted(jobs, key=lambda j: names[j["id"]])] == [1, 3]

        st.queue.resume()
        entries = {
            name: await wait_history(ana if name[0] == "a" else bob, pid, timeout=240) for name, pid in ids.items()
        }
        await asyncio.sleep(0.3)  # the last messages reach the sockets
        stop.set()
        await asyncio.gather(*listeners)

        # Turns: Ana's split job and Bob's images interleave and share a call (key: same settings); a2 waits.
        named = [[names[j.split("/")[0]] + "/" + j.split("/")[1] for j in b] for b in batches]
        assert named == [["a1/0", "b1/0", "a1/1", "b2/0"], ["a1/2"], ["a2/0"]]
        assert merged_calls == [4, 1]  # a2 is one whole one-image prompt: it runs alone in the graph executor

        # Every image is the PNG its prompt makes alone, byte for byte (pixels and the graph in its text chunks).
        for name, entry in entries.items():
            session = ana if name[0] == "a" else bob
            assert entry["status"]["completed"], entry["status"]
            made = [
                await (await session.get("/api/view", params=ref)).read() for ref in entry["outputs"]["9"]["images"]
            ]
            expected = alone(data_dir_with_model(tmp_path / f"alone-{name}", model_file), asked[name][2])
            assert made == expected, name

        # Messages and previews reached their owner only; each prompt had per-step progress and previews.
        for who, mine in (("ana", {"a1", "a2"}), ("bob", {"b1", "b2"})):
            got = heard[who]
            ids_seen = {m[1] for m in got if isinstance(m, tuple)}
            ids_seen |= {
                m["data"]["prompt_id"] for m in got if isinstance(m, dict) and "prompt_id" in m.get("data", {})
            }
            assert {names[i] for i in ids_seen} == mine, who
            for name in mine:
                previews = [m for m in got if m == ("preview", ids[name])]
                progress = [
                    m
                    for m in got
                    if isinstance(m, dict) and m["type"] == "progress" and m["data"]["prompt_id"] == ids[name]
                ]
                assert previews and progress, (who, name)
                done = [
                    m["type"]
                    for m in got
                    if isinstance(m, dict)
                    and m["data"].get("prompt_id") == ids[name]
                    and m["type"].startswith("execution_")
                ]
                assert done[0] == "execution_start" and done[-1] == "execution_success", (name, done)
            waits = [
                m["data"]["status"]["atelier_wait"]
                for m in got
                if isinstance(m, dict) and m["type"] == "status" and "atelier_wait" in m["data"]["status"]
            ]
            assert waits and all({names[i] for i in w["prompts"]} <= mine for w in waits), who

        for ws in sockets.values():
            await ws.close()


@async_test
async def test_the_cap_answers_in_the_learners_language_and_free_is_the_instructors(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with (
        class_server(data, max_waiting_images=4) as client,
        browser(client) as ana,
        browser(client) as teacher,
    ):
        room = client.server.app[STATE].classroom
        await join(ana, room.join_code, "Ana")
        await instructor(teacher, room.instructor_secret)
        big = {"prompt": prompt_of("x", 1, "ana", batch=5), "client_id": "a"}
        resp = await ana.post("/api/prompt", json=big, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
        body = await resp.json()
        assert resp.status == 429 and body["message_key"] == "queue_full_too_big"
        assert body["error"]["message"].startswith("Cette demande compte 5 images et la limite est de 4")
        assert body["error"]["details"].startswith("This asks for 5 images and the limit is 4")
        assert body["params"] == {"asked": 5, "waiting": 0, "limit": 4}
        assert await (await ana.get("/api/jobs")).json() == {
            "jobs": [],
            "pagination": {"offset": 0, "limit": None, "total": 0, "has_more": False},
        }

        refused = await ana.post("/api/free", json={"unload_models": True})
        assert refused.status == 403 and "Only the instructor" in await refused.text()
        assert (await teacher.post("/api/free", json={"free_memory": True})).status == 200


@async_test
async def test_stopping_ones_prompt_in_a_shared_batch_leaves_the_others_image(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with class_server(data, batch_images=4) as client, browser(client) as ana, browser(client) as bob:
        st = client.server.app[STATE]
        await join(ana, st.classroom.join_code, "Ana")
        await join(bob, st.classroom.join_code, "Bob")
        st.queue.pause()
        mine = (await post_prompt(ana, prompt_of("a red circle", 1, "ana", steps=40), client_id="a"))["prompt_id"]
        theirs = (await post_prompt(bob, prompt_of("a blue square", 2, "bob", steps=40), client_id="b"))["prompt_id"]
        st.queue.resume()
        for _ in range(500):  # until their shared batch runs
            if st.queue._batch is not None:
                break
            await asyncio.sleep(0.01)
        assert {p.job_id for p in st.queue._batch.parts} == {mine, theirs}
        assert (await bob.post("/api/interrupt", json={"prompt_id": mine})).status == 200  # not Bob's to stop
        assert (await ana.post("/api/interrupt", json={"prompt_id": mine})).status == 200
        stopped = await wait_history(ana, mine, timeout=240)
        done = await wait_history(bob, theirs, timeout=240)
        assert [m[0] for m in stopped["status"]["messages"]][-1] == "execution_interrupted"
        assert stopped["outputs"] == {} and done["status"]["completed"]
        assert len(done["outputs"]["9"]["images"]) == 1
        assert not list((data / "output").glob("ana*"))  # no file left of the stopped prompt
