"""Classroom mode (server/classroom.py): the join code, learners' identity, what each learner sees, and that the
class survives a restart. Learners are aiohttp sessions with their own cookie jars, like two browsers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import re
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.test_utils import TestClient
from PIL import Image

from atelier.server.classroom import (
    COOKIE,
    INSTRUCTOR,
    JOIN_ALPHABET,
    REFUSED,
    Classroom,
    Who,
    announcement,
    display_name,
    hide_others_files,
    join_qr,
    new_join_code,
)
from atelier.server.files import DataDir, OutputFiles
from atelier.server.state import STATE
from atelier.server.store import PromptStore
from tests.browser import free_port
from tests.server.harness import async_test, is_type, post_prompt, receive, server, text_types, wait_history
from tests.server.stub_nodes import graph, stub_registry


def classroom(client: TestClient) -> Classroom:
    room = client.server.app[STATE].classroom
    assert room is not None
    return room


@contextlib.asynccontextmanager
async def browser(client: TestClient) -> AsyncIterator[aiohttp.ClientSession]:
    """A browser of its own (its own cookies) on the test server. unsafe=True: cookies for the IP 127.0.0.1."""
    base = str(client.make_url("/"))
    async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def join(session: aiohttp.ClientSession, code: str, name: str) -> str:
    """Open the class link, give a name; returns the learner's id (from their cookie)."""
    page = await session.get(f"/lab/?join={code}")
    assert page.status == 200 and "Votre nom" in await page.text()
    resp = await session.post(
        "/classroom/join", data={"code": code, "name": name, "next": "/lab/"}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/lab/", await resp.text()
    return resp.cookies[COOKIE].value.partition(".")[0]


async def instructor(session: aiohttp.ClientSession, secret: str) -> None:
    resp = await session.get(f"/?instructor={secret}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"


def test_codes_are_short_and_readable():
    codes = {new_join_code() for _ in range(200)}
    assert len(codes) > 190  # random
    assert all(len(c) == 6 and set(c) <= set(JOIN_ALPHABET) for c in codes)
    assert not set("0O1IL") & set(JOIN_ALPHABET)
    assert display_name("  Zoé   Martin ") == "Zoé Martin"
    for bad in ("   ", "x" * 41, "\x00\x01"):
        try:
            display_name(bad)
        except ValueError as ex:
            assert " / " in str(ex)  # French, then English
        else:
            raise AssertionError(f"{bad!r} was accepted")


@async_test
async def test_everything_is_refused_without_the_code(tmp_path):
    async with server(tmp_path, classroom=True) as client:
        room = classroom(client)
        for method, path in [
            ("GET", "/"),
            ("GET", "/lab/"),
            ("GET", "/api/history"),
            ("GET", "/api/queue"),
            ("GET", "/api/view?filename=x.png"),
            ("GET", "/api/object_info"),
            ("POST", "/api/prompt"),
            ("POST", "/api/interrupt"),
            ("GET", "/lab/?join=WRONG1"),
            ("GET", "/?instructor=" + room.join_code),  # the join code is not the instructor's secret
            ("GET", "/ws"),
        ]:
            resp = await client.request(method, path)
            assert resp.status == 403, (method, path, resp.status)
            assert await resp.text() == REFUSED, (method, path)
            assert COOKIE not in resp.cookies
        resp = await client.post("/classroom/join", data={"code": "WRONG1", "name": "Eve"})
        assert resp.status == 403 and await resp.text() == REFUSED
        forged = await client.get("/api/history", headers={"Cookie": f"{COOKIE}=instructor.0123456789abcdef"})
        assert forged.status == 403
        assert room.join_code not in REFUSED and room.instructor_secret not in REFUSED
        assert room.instructor_secret != room.join_code


@async_test
async def test_joining_sets_a_cookie_that_keeps_the_learner(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as zoe:
        room = classroom(client)
        page = await zoe.get(f"/api/history?join={room.join_code.lower()}")  # typed in lower case: still the code
        text = await page.text()
        assert page.status == 200 and text.index("Votre nom") < text.index("Your name")
        assert "no-store" in page.headers["Cache-Control"]

        empty = await zoe.post("/classroom/join", data={"code": room.join_code, "name": "  ", "next": "/lab/"})
        assert empty.status == 400 and "Écrivez un nom" in await empty.text()
        resp = await zoe.post(
            "/classroom/join",
            data={"code": room.join_code, "name": "Zoé", "next": "//evil.example/"},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/lab/"  # only a path on this server
        header = resp.headers["Set-Cookie"]
        assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
        learner = resp.cookies[COOKIE].value.partition(".")[0]
        assert room.learners[learner].name == "Zoé"

        assert (await zoe.get("/api/history")).status == 200
        again = await zoe.get(f"/lab/?join={room.join_code}&x=1", allow_redirects=False)
        assert again.status == 303 and again.headers["Location"] == "/lab/?x=1"  # already in: the code is dropped
        # A second tab is the same browser, the same cookie: the same learner, not a new one.
        assert (await zoe.get("/api/queue")).status == 200
        assert list(room.learners) == [learner]


@async_test
async def test_learners_see_only_their_own_work(tmp_path):
    async with (
        server(tmp_path, classroom=True) as client,
        browser(client) as ana,
        browser(client) as ben,
        browser(client) as teacher,
    ):
        room = classroom(client)
        await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        await instructor(teacher, room.instructor_secret)

        a = (await post_prompt(ana, graph("red", prefix="ana"), client_id="a-tab"))["prompt_id"]
        b = (await post_prompt(ben, graph("blue", prefix="ben"), client_id="b-tab"))["prompt_id"]
        a_entry = await wait_history(ana, a)
        b_entry = await wait_history(ben, b)

        assert list(await (await ana.get("/api/history")).json()) == [a]
        assert list(await (await ben.get("/api/history")).json()) == [b]
        assert await (await ana.get(f"/api/history/{b}")).json() == {}
        assert sorted(await (await teacher.get("/api/history")).json()) == sorted([a, b])
        assert [j["id"] for j in (await (await ana.get("/api/jobs")).json())["jobs"]] == [a]
        assert (await ana.get(f"/api/jobs/{b}")).status == 404
        assert (await teacher.get(f"/api/jobs/{b}")).status == 200

        [a_image] = a_entry["outputs"]["3"]["images"]
        [b_image] = b_entry["outputs"]["3"]["images"]
        assert (await ana.get("/api/view", params=a_image)).status == 200
        theirs = await ana.get("/api/view", params=b_image)  # by URL, knowing the file name
        assert theirs.status == 404 and "does not exist" in await theirs.text()
        assert (await teacher.get("/api/view", params=b_image)).status == 200

        # Ana's history cleared: Ben's is still there.
        assert (await ana.post("/api/history", json={"clear": True})).status == 200
        assert await (await ana.get("/api/history")).json() == {}
        assert list(await (await ben.get("/api/history")).json()) == [b]
        assert (await ana.post("/api/history", json={"delete": [b]})).status == 200
        assert list(await (await ben.get("/api/history")).json()) == [b]


@async_test
async def test_queue_cancel_and_interrupt_act_on_ones_own_prompts(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        running = (await post_prompt(ana, graph(steps=200, delay=0.02), client_id="a"))["prompt_id"]
        waiting = (await post_prompt(ana, graph("green"), client_id="a"))["prompt_id"]
        bens = (await post_prompt(ben, graph("blue"), client_id="b"))["prompt_id"]
        for _ in range(200):  # until Ana's first prompt runs
            if (await (await ana.get("/api/queue")).json())["queue_running"]:
                break
            await asyncio.sleep(0.02)

        a_queue = await (await ana.get("/api/queue")).json()
        b_queue = await (await ben.get("/api/queue")).json()
        assert [r[1] for r in a_queue["queue_running"]] == [running]
        assert [r[1] for r in a_queue["queue_pending"]] == [waiting]
        assert b_queue["queue_running"] == [] and [r[1] for r in b_queue["queue_pending"]] == [bens]
        assert await (await ana.get("/api/prompt")).json() == {"exec_info": {"queue_remaining": 2}}
        assert await (await ben.get("/api/prompt")).json() == {"exec_info": {"queue_remaining": 1}}

        # Ben tries everything on Ana's prompts: nothing happens to them.
        assert (await ben.post("/api/interrupt", json={})).status == 200
        assert (await ben.post("/api/interrupt", json={"prompt_id": running})).status == 200
        assert await (await ben.post(f"/api/jobs/{running}/cancel")).json() == {"cancelled": False}
        assert await (await ben.post("/api/jobs/cancel", json={"job_ids": [waiting]})).json() == {"cancelled": False}
        assert (await ben.post("/api/queue", json={"delete": [waiting]})).status == 200
        assert (await ben.post("/api/queue", json={"clear": True})).status == 200  # clears Ben's own
        a_queue = await (await ana.get("/api/queue")).json()
        assert [r[1] for r in a_queue["queue_running"]] == [running]
        assert [r[1] for r in a_queue["queue_pending"]] == [waiting]
        assert (await (await ben.get("/api/queue")).json())["queue_pending"] == []

        # Ana cancels and stops her own.
        assert await (await ana.post(f"/api/jobs/{waiting}/cancel")).json() == {"cancelled": True}
        assert (await ana.post("/api/interrupt", json={})).status == 200
        stopped = await wait_history(ana, running)
        assert stopped["status"]["messages"][-1][0] == "execution_interrupted"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (10, 20, 30, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


@async_test
async def test_uploads_go_to_the_learners_folder(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        ana_id = await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        form = aiohttp.FormData()
        form.add_field("image", _png(), filename="photo.png", content_type="image/png")
        uploaded = await (await ana.post("/api/upload/image", data=form)).json()
        assert uploaded == {"name": "photo.png", "subfolder": f"classroom/{ana_id}", "type": "input"}
        assert (tmp_path / "input" / "classroom" / ana_id / "photo.png").is_file()
        ref = {"filename": "photo.png", "subfolder": uploaded["subfolder"], "type": "input"}
        assert (await ana.get("/api/view", params=ref)).status == 200
        assert (await ben.get("/api/view", params=ref)).status == 404

        mask = aiohttp.FormData()  # the mask editor, on Ana's image: Ben may not read it this way either
        mask.add_field("image", _png(), filename="mask.png", content_type="image/png")
        mask.add_field("original_ref", json.dumps(ref))
        assert (await ben.post("/api/upload/mask", data=mask)).status == 404

        # A graph that names Ana's file (LoadImage would read it) is refused for Ben.
        named = graph(prefix=f"classroom/{ana_id}/photo.png")
        resp = await ben.post("/api/prompt", json={"prompt": named, "client_id": "b"})
        assert resp.status == 403 and "another learner" in (await resp.json())["error"]["message"]


@async_test
async def test_saved_workflows_and_settings_are_each_learners_own(tmp_path):
    async with (
        server(tmp_path, classroom=True) as client,
        browser(client) as ana,
        browser(client) as ben,
        browser(client) as teacher,
    ):
        room = classroom(client)
        ana_id = await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        await instructor(teacher, room.instructor_secret)
        assert (await ana.post("/api/userdata/workflows%2Fcat.json", data=b'{"nodes": []}')).status == 200
        assert (tmp_path / "user" / "classroom" / ana_id / "workflows" / "cat.json").is_file()
        assert (await ana.get("/api/userdata/workflows%2Fcat.json")).status == 200
        assert (await ben.get("/api/userdata/workflows%2Fcat.json")).status == 404
        assert await (await ben.get("/api/userdata", params={"dir": "workflows"})).json() == []
        assert (await teacher.get("/api/userdata/workflows%2Fcat.json")).status == 404  # user/default: the instructor's

        assert (await ana.post("/api/settings/Comfy.Locale", json="fr")).status == 200
        assert await (await ana.get("/api/settings/Comfy.Locale")).json() == "fr"
        assert await (await ben.get("/api/settings/Comfy.Locale")).json() is None
        defaults = await (await ben.get("/api/settings")).json()
        assert defaults["Comfy.Notification.ShowVersionUpdates"] is False  # the same private defaults for all


@async_test
async def test_websocket_messages_reach_only_the_owner(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        async with ana.ws_connect("/ws?clientId=ana-sid") as a_ws, ben.ws_connect("/ws?clientId=ana-sid") as b_ws:
            [a_status] = await receive(a_ws, is_type("status"))
            [b_status] = await receive(b_ws, is_type("status"))
            assert a_status["data"]["sid"] == "ana-sid"
            assert b_status["data"]["sid"] not in ("ana-sid", "")  # Ben cannot take Ana's socket by its id
            b_sid = b_status["data"]["sid"]

            queued = await post_prompt(ana, graph(steps=3), client_id="ana-sid", extra_data={"preview_method": "auto"})
            a = queued["prompt_id"]
            got = await receive(
                a_ws, lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None
            )
            assert {"execution_start", "progress", "executed", "execution_success"} <= set(text_types(got))
            assert sum(isinstance(m, bytes) for m in got) == 3  # one preview per step, as asked
            # Ben posts with Ana's socket id and with none: his messages go to neither Ana nor anyone.
            b1 = (await post_prompt(ben, graph("blue"), client_id="ana-sid"))["prompt_id"]
            b2 = (await post_prompt(ben, graph("green"), client_id=None))["prompt_id"]
            b3 = (await post_prompt(ben, graph("red", steps=2), client_id=b_sid))["prompt_id"]
            for prompt_id in (b1, b2, b3):
                await wait_history(ben, prompt_id)
            mine = await receive(b_ws, lambda m: isinstance(m, dict) and m["type"] == "execution_success")
            await asyncio.sleep(0.2)  # let anything misrouted arrive
            ids = {m["data"].get("prompt_id") for m in mine if isinstance(m, dict)} - {None}
            assert ids == {b3}, ids  # not Ana's prompt, not Ben's own without his socket
            while True:  # what else reached Ana's socket: status only, none of Ben's prompts
                try:
                    message = await a_ws.receive_json(timeout=0.2)
                except TimeoutError:
                    break
                assert message["type"] == "status", message
            assert a not in ids


@async_test
async def test_a_restart_keeps_the_class(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana:
        room = classroom(client)
        code, secret = room.join_code, room.instructor_secret
        ana_id = await join(ana, code, "Ana")
        a = (await post_prompt(ana, graph(), client_id="a"))["prompt_id"]
        await wait_history(ana, a)
        cookie = ana.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value

    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        assert (room.join_code, room.instructor_secret) == (code, secret)  # the printed links still work
        assert room.learners[ana_id].name == "Ana"
        ana.cookie_jar.update_cookies({COOKIE: cookie}, client.make_url("/"))
        assert list(await (await ana.get("/api/history")).json()) == [a]
        await join(ben, code, "Ben")
        assert await (await ben.get("/api/history")).json() == {}


@async_test
async def test_without_classroom_nothing_changes(tmp_path):
    async with server(tmp_path) as client:
        assert client.server.app[STATE].classroom is None
        assert (await client.get("/api/history")).status == 200
        assert (await client.get("/classroom/join")).status != 403
        form = aiohttp.FormData()
        form.add_field("image", _png(), filename="photo.png", content_type="image/png")
        assert (await (await client.post("/api/upload/image", data=form)).json())["subfolder"] == ""


def test_object_info_hides_other_learners_uploads():
    ana = Who("aaaa1111", "Ana", sees_all=False)
    choices = ["example.png", "classroom/aaaa1111/me.png", "classroom/bbbb2222/you.png", "./classroom/bbbb2222/x.png"]
    info = {"LoadImage": {"input": {"required": {"image": [choices, {"image_upload": True}]}, "optional": {}}}}
    seen = hide_others_files(copy.deepcopy(info), ana)
    assert seen["LoadImage"]["input"]["required"]["image"] == [
        ["example.png", "classroom/aaaa1111/me.png"],
        {"image_upload": True},
    ]
    assert hide_others_files(copy.deepcopy(info), INSTRUCTOR) == info


def test_announcement_names_both_links(tmp_path):
    store = PromptStore(tmp_path / "atelier.sqlite")
    room = Classroom(store)
    text = announcement(room, "http://192.168.1.20:8188/")
    assert f"http://192.168.1.20:8188/lab/?join={room.join_code}" in text
    assert f"http://192.168.1.20:8188/?instructor={room.instructor_secret}" in text
    qr = join_qr(f"http://192.168.1.20:8188/lab/?join={room.join_code}")
    assert qr in text and qr.count("\n") >= 15  # version 3 or more: 29+ modules, two rows per line
    store.close()


# A classroom server with the stub nodes in a process of its own, so that the test can kill -9 it.
SERVER_SCRIPT = """
import sys
from aiohttp import web
from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from tests.server.stub_nodes import stub_registry
data_dir, port = sys.argv[1], int(sys.argv[2])
app = create_app(stub_registry(OutputFiles(DataDir(data_dir))), data_dir, static_root=None, classroom=True)
web.run_app(app, host="127.0.0.1", port=port, print=None)
"""


@contextlib.asynccontextmanager
async def killable_server(data_dir) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", SERVER_SCRIPT, str(data_dir), str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as probe:
            for _ in range(300):
                try:
                    async with probe.get(url + "/api/queue") as resp:
                        assert resp.status == 403  # up, and closed to strangers
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        yield url, process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@async_test
async def test_kill_9_keeps_learners_histories_and_pending_prompts(tmp_path):
    jar = aiohttp.CookieJar(unsafe=True)
    async with killable_server(tmp_path) as (url, process):
        async with aiohttp.ClientSession(base_url=url, cookie_jar=jar) as ana:
            store = PromptStore(tmp_path / "atelier.sqlite")
            code = Classroom(store).join_code  # what the terminal printed
            store.close()
            await join(ana, code, "Ana")
            done = (await post_prompt(ana, graph(), client_id="a"))["prompt_id"]
            await wait_history(ana, done)
            running = (await post_prompt(ana, graph(steps=500, delay=0.02), client_id="a"))["prompt_id"]
            waiting = (await post_prompt(ana, graph("blue"), client_id="a"))["prompt_id"]
            for _ in range(200):
                if (await (await ana.get("/api/queue")).json())["queue_running"]:
                    break
                await asyncio.sleep(0.02)
        process.kill()  # SIGKILL: no shutdown handler runs
        await process.wait()

    async with killable_server(tmp_path) as (url, _), aiohttp.ClientSession(base_url=url, cookie_jar=jar) as ana:
        assert (await ana.get("/api/history")).status == 200  # the same cookie: still Ana
        await wait_history(ana, waiting)  # queued again and run after the restart, still hers
        history = await (await ana.get("/api/history")).json()
        assert set(history) == {done, running, waiting}
        failed = history[running]["status"]
        assert not failed["completed"] and failed["messages"][-1][1]["exception_type"] == "ServerRestart"


def test_serve_classroom_listens_on_the_lan_and_prints_both_links(tmp_path, monkeypatch, capsys):
    import atelier.server.app as app_module
    from atelier import cli

    passed: dict = {}
    monkeypatch.setattr(app_module, "run_server", lambda **kwargs: passed.update(kwargs) or 0)
    assert cli.main(["serve", "--classroom", "--port", "8190"]) == 0
    assert passed["classroom"] is True and passed["port"] == 8190
    monkeypatch.undo()

    bound: dict = {}

    def run_app(app, host, port, print):  # what web.run_app would do, without serving
        bound.update(host=host, port=port)
        print("")

    monkeypatch.setattr(app_module.web, "run_app", run_app)
    monkeypatch.setattr(app_module, "lan_addresses", lambda: ["192.168.1.20"])
    registry = stub_registry(OutputFiles(DataDir(tmp_path)))
    app_module.serve(host="0.0.0.0", port=8190, data_dir=tmp_path, registry=registry, classroom=True)
    out = capsys.readouterr().out
    assert bound == {"host": "0.0.0.0", "port": 8190}
    [code] = re.findall(r"http://192\.168\.1\.20:8190/lab/\?join=([A-Z2-9]{6})", out)
    [secret] = re.findall(r"http://192\.168\.1\.20:8190/\?instructor=(\S+)", out)
    assert code != secret and f"code {code}" in out
    assert "█" in out and "Anyone who can reach" not in capsys.readouterr().err  # the QR code, not the warning


def test_classroom_binds_every_interface_unless_told_an_address(monkeypatch):
    import atelier.server.app as app_module

    bound: list[str] = []
    monkeypatch.setattr(app_module, "serve", lambda host, **kwargs: bound.append(host))
    app_module.run_server(classroom=True)
    app_module.run_server(classroom=True, listen="192.168.1.5")
    app_module.run_server()
    assert bound == ["0.0.0.0", "192.168.1.5", "127.0.0.1"]
