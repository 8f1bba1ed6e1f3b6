"""`atelier serve --classroom --ray --workers 2` (issue 13): the real server, the real nodes and a tiny random model,
its txt2img batches on two Ray actors of a local Ray instance (two CPU worker processes on this machine).

What is proved at the server's level (tests/server/test_ray_workers.py proves the pool's own rules with a stub):
- two learners' prompts run on both workers at once, and every PNG is byte for byte the one the graph executor
  writes alone (so: the one the in-process worker writes; the server writes them, not the workers), on as many
  torch threads as a CPU worker has: one (a GEMM split over 2 threads adds in another order: other last bits);
- a worker process killed in the middle of a batch costs nothing: the batch runs again on the other worker, the
  learner reads "re-running on another worker", and exactly one image reaches them (one PNG on disk, one
  `executed`, one `execution_success`);
- a prompt whose worker is killed twice ends in execution_error with the reason, in the lab's two languages;
- the instructor's page lists both workers: device, models loaded, busy or idle, images done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from atelier.server.app import create_app, default_registry
from atelier.server.files import DataDir
from atelier.server.state import STATE
from tests.server.harness import post_prompt, wait_history
from tests.server.test_classroom import browser, instructor, join
from tests.server.test_classroom_batch import alone as alone_here
from tests.server.test_classroom_batch import async_test, data_dir_with_model, listen, prompt_of

ray = pytest.importorskip("ray", reason="Ray is the cluster extra: pip install atelier[cluster]")


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    yield
    ray.shutdown()  # the local instance `--ray` started in this process


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from tests.test_pipeline import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def alone(data_dir: Path, prompt: dict) -> list[bytes]:
    """The PNGs the graph executor writes alone, on one torch thread as each Ray CPU worker (cluster.py)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return alone_here(data_dir, prompt)
    finally:
        torch.set_num_threads(threads)


@contextlib.asynccontextmanager
async def ray_class(data_dir: Path, workers: int = 2) -> AsyncIterator[TestClient]:
    """A classroom server whose txt2img batches run on `workers` Ray CPU workers, one image per batch (so that
    several batches are in flight at once)."""
    app = create_app(default_registry(DataDir(data_dir)), data_dir, static_root=None, classroom=True,
                     batch_images=1, ray="local", workers=workers)  # fmt: skip
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def kill_on_step(st, times: int) -> list[int]:
    """Kill (SIGKILL) the busy worker's process at the first step of the next `times` batches; the pids killed."""
    queue, killed = st.queue, []
    step = queue.on_member_step

    def on_step(row, value, total, preview, batch=None):
        if value == 1 and len(killed) < times:
            busy = [w["pid"] for w in queue.workers() if w["busy"] and w["pid"] not in killed]
            if busy:
                killed.append(busy[0])
                os.kill(busy[0], signal.SIGKILL)
                return
        step(row, value, total, preview, batch)

    queue.on_member_step = on_step
    return killed


@async_test
async def test_two_learners_on_two_ray_workers_get_the_pngs_the_executor_makes_alone(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with ray_class(data) as client, browser(client) as ana, browser(client) as bob, browser(client) as boss:
        st = client.server.app[STATE]
        await join(ana, st.classroom.join_code, "Ana")
        await join(bob, st.classroom.join_code, "Bob")
        await instructor(boss, st.classroom.instructor_secret)
        in_flight: list[int] = []  # batches running when each batch starts
        st.queue.on_batch = lambda batch: in_flight.append(len(st.queue.running_batches()))
        st.queue.pause()
        asked = {
            "a1": (ana, prompt_of("a red circle", 1, "ana", batch=2, steps=6)),  # two parts, maybe on two workers
            "b1": (bob, prompt_of("un carré bleu", 3, "bob", steps=6)),
            "b2": (bob, prompt_of("une étoile jaune", 4, "bob", steps=6)),
        }
        ids = {name: (await post_prompt(s, p, client_id=f"{name}-tab"))["prompt_id"] for name, (s, p) in asked.items()}
        st.queue.resume()
        entries = {name: await wait_history(asked[name][0], pid, timeout=240) for name, pid in ids.items()}

        for name, entry in entries.items():
            session = asked[name][0]
            assert entry["status"]["completed"], entry["status"]
            made = [await (await session.get("/api/view", params=r)).read() for r in entry["outputs"]["9"]["images"]]
            expected = alone(data_dir_with_model(tmp_path / f"alone-{name}", model_file), asked[name][1])
            assert made == expected, name
        assert max(in_flight) == 2, f"two batches ran at once ({in_flight})"
        workers = (await (await boss.get("/atelier/classroom/state")).json())["workers"]
        assert [(w["device"], w["loaded"], w["busy"]) for w in workers] == [("cpu", ["tiny.safetensors"], False)] * 2
        assert sorted(w["images_done"] for w in workers) in ([2, 2], [1, 3]) and len({w["pid"] for w in workers}) == 2


@async_test
async def test_a_worker_killed_mid_batch_loses_no_image_and_sends_none_twice(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with ray_class(data) as client, browser(client) as ana:
        st = client.server.app[STATE]
        await join(ana, st.classroom.join_code, "Ana")
        ws = await ana.ws_connect("/ws?clientId=ana-tab")
        heard: list = []
        stop = asyncio.Event()
        listening = asyncio.ensure_future(listen(ws, heard, stop))
        killed = kill_on_step(st, times=1)
        prompt = prompt_of("a red circle", 5, "ana", steps=12)
        prompt_id = (await post_prompt(ana, prompt, client_id="ana-tab"))["prompt_id"]
        entry = await wait_history(ana, prompt_id, timeout=240)
        await asyncio.sleep(0.5)  # anything late would reach the socket by now
        stop.set()
        await listening
        await ws.close()

        assert len(killed) == 1 and entry["status"]["completed"], entry["status"]
        mine = [m for m in heard if isinstance(m, dict) and m.get("data", {}).get("prompt_id") == prompt_id]
        kinds = [m["type"] for m in mine]
        assert kinds.count("atelier_retry") == 1 and kinds.count("executed") == 1, kinds
        assert kinds.count("execution_success") == 1 and "execution_error" not in kinds, kinds
        retry = next(m["data"] for m in mine if m["type"] == "atelier_retry")
        assert retry["message_key"] == "worker_retry" and "lost" in retry["reason"]
        images = entry["outputs"]["9"]["images"]
        assert len(images) == 1 and len(list((data / "output").glob("ana_*.png"))) == 1
        made = await (await ana.get("/api/view", params=images[0])).read()
        assert [made] == alone(data_dir_with_model(tmp_path / "alone", model_file), prompt)


@pytest.mark.slow  # ~60 s on the shared 2 cores (two restarts); the pool's own test covers the rule in 10 s
@async_test
async def test_a_prompt_whose_worker_is_killed_twice_fails_with_the_reason(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with ray_class(data) as client, browser(client) as ana:
        st = client.server.app[STATE]
        await join(ana, st.classroom.join_code, "Ana")
        killed = kill_on_step(st, times=2)
        prompt_id = (await post_prompt(ana, prompt_of("a red circle", 6, "ana", steps=12), client_id="ana-tab"))[
            "prompt_id"
        ]
        entry = await wait_history(ana, prompt_id, timeout=240)
        assert len(killed) == 2 and not entry["status"]["completed"]
        [error] = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
        assert "lost twice" in error["exception_message"] and error["message_key"] == "worker_lost"
        assert "lost" in error["params"]["reason"]
        assert list((data / "output").glob("ana_*.png")) == []


@async_test
async def test_a_worker_added_while_the_class_runs_takes_waiting_work(tmp_path, model_file):
    data = data_dir_with_model(tmp_path / "class", model_file)
    async with ray_class(data, workers=1) as client, browser(client) as ana, browser(client) as boss:
        st = client.server.app[STATE]
        await join(ana, st.classroom.join_code, "Ana")
        await instructor(boss, st.classroom.instructor_secret)
        in_flight: list[int] = []
        st.queue.on_batch = lambda batch: in_flight.append(len(st.queue.running_batches()))
        st.queue.pause()
        prompts = [prompt_of(f"a red circle {i}", i, "ana", steps=6) for i in range(4)]
        ids = [(await post_prompt(ana, p))["prompt_id"] for p in prompts]
        state = await (await boss.get("/atelier/classroom/state")).json()
        assert state["can_add_worker"] is True and len(state["workers"]) == 1
        added = await boss.post("/atelier/classroom/workers")
        assert added.status == 200, await added.text()
        assert len((await added.json())["workers"]) == 2
        st.queue.resume()
        for prompt_id in ids:
            assert (await wait_history(ana, prompt_id, timeout=240))["status"]["completed"]
        workers = (await (await boss.get("/atelier/classroom/state")).json())["workers"]
        assert len({w["pid"] for w in workers}) == 2 and all(w["images_done"] >= 1 for w in workers), workers
        assert max(in_flight) == 2, f"the added worker ran a batch beside the first ({in_flight})"
