"""The instructor's page and routes (server/instructor.py): who may open them, the wall, exercises pushed to every
lab, removing a learner, and the session's zip. Learners are aiohttp sessions with their own cookies."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from atelier.server.classroom import REFUSED
from atelier.server.instructor import NOT_CLASSROOM, NOT_INSTRUCTOR, contact_sheet, folder_name
from atelier.server.state import STATE
from tests.server.harness import async_test, is_type, post_prompt, receive, server, wait_history
from tests.server.stub_nodes import graph
from tests.server.test_classroom import browser, classroom, instructor, join

API = "/atelier/classroom"
INSTRUCTOR_ROUTES = [
    ("GET", "/classroom/"),
    ("GET", "/classroom/classroom.js"),
    ("GET", f"{API}/state"),
    ("GET", f"{API}/join.svg"),
    ("POST", f"{API}/pause"),
    ("POST", f"{API}/resume"),
    ("POST", f"{API}/workers"),
    ("POST", f"{API}/exercise"),
    ("DELETE", f"{API}/exercise"),
    ("POST", f"{API}/remove"),
    ("GET", f"{API}/export.zip"),
]


def lab_extra(params: dict, **record) -> dict:
    """extra_data as the lab queues it (web/lab/runner.js): what it ran, and the exercise when it is one."""
    return {"atelier_lab": {"kind": "generate", "params": params, "roles": {"image": "3"}, **record}}


@async_test
async def test_only_the_instructor_opens_the_page_and_its_routes(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as teacher:
        room = classroom(client)
        await join(ana, room.join_code, "Ana")
        await instructor(teacher, room.instructor_secret)
        for method, path in INSTRUCTOR_ROUTES:
            stranger = await client.request(method, path)
            assert stranger.status == 403 and await stranger.text() == REFUSED, (method, path)
            learner = await ana.request(method, path, json={})
            assert learner.status == 403 and await learner.text() == NOT_INSTRUCTOR, (method, path)
        for method, path in INSTRUCTOR_ROUTES:
            if method == "GET":
                resp = await teacher.get(path)
                assert resp.status == 200, (path, resp.status)
        page = await teacher.get("/classroom/")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert '<script type="module" src="classroom.js">' in await page.text()  # no inline script
        for lang in ("en", "fr"):
            strings = await (await teacher.get(f"/classroom/i18n/{lang}.json")).json()
            assert "wall.title" in strings
        svg = await (await teacher.get(f"{API}/join.svg")).text()
        assert svg.startswith("<svg") and "<path" in svg
        state = await (await teacher.get(f"{API}/state")).json()
        assert state["join_url"].endswith(f"/lab/?join={room.join_code}")
        assert [learner["name"] for learner in state["learners"]] == ["Ana"]
        # The instructor link now lands on this page, the secret dropped from the address.
        resp = await teacher.get(f"/classroom/?instructor={room.instructor_secret}", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/classroom/"
        # A learner may read the current exercise (their lab does), nothing else.
        assert (await ana.get(f"{API}/exercise")).status == 200


@async_test
async def test_without_classroom_mode_there_is_no_instructor_page(tmp_path):
    async with server(tmp_path) as client:
        for method, path in [*INSTRUCTOR_ROUTES, ("GET", f"{API}/exercise")]:
            resp = await client.request(method, path)
            assert resp.status == 404 and await resp.text() == NOT_CLASSROOM, (method, path)


@async_test
async def test_the_wall_shows_each_learners_latest_image_and_its_parameters(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        ana_id = await join(ana, room.join_code, "Ana")
        ben_id = await join(ben, room.join_code, "Ben")
        async with browser(client) as teacher:
            await instructor(teacher, room.instructor_secret)
            params = {"prompt": "a red circle", "seed": 42, "cfg": 7.0, "steps": 3, "sampler": "euler"}
            first = (await post_prompt(ana, graph("green"), extra_data=lab_extra({**params, "seed": 1})))["prompt_id"]
            await wait_history(ana, first)
            last = (await post_prompt(ana, graph("red"), extra_data=lab_extra(params)))["prompt_id"]
            await wait_history(ana, last)
            editor = (await post_prompt(ben, graph("blue")))["prompt_id"]  # from the node editor: no lab record
            await wait_history(ben, editor)
            state = await (await teacher.get(f"{API}/state")).json()
        walls = {learner["id"]: learner for learner in state["learners"]}
        assert walls[ana_id]["latest"]["prompt_id"] == last
        assert walls[ana_id]["latest"]["params"] == params
        assert walls[ben_id]["latest"]["prompt_id"] == editor and walls[ben_id]["latest"]["params"] == {}
        image = walls[ana_id]["latest"]["image"]
        path = client.server.app[STATE].files.path(image)
        with Image.open(path) as img:
            assert img.getpixel((0, 0))[:3] == (255, 0, 0)  # the red one, the last she made
        assert state["queue"]["running"] == [] and state["queue"]["waiting"] == []


@async_test
async def test_the_queue_lists_who_waits_for_what(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as teacher:
        room = classroom(client)
        ana_id = await join(ana, room.join_code, "Ana")
        await instructor(teacher, room.instructor_secret)
        slow = (await post_prompt(ana, graph(steps=40, delay=0.05)))["prompt_id"]
        waits = await post_prompt(ana, graph("blue"), extra_data=lab_extra({"prompt": "blue", "seed": 3}))
        state = await (await teacher.get(f"{API}/state")).json()
        queue = state["queue"]
        assert [e["prompt_id"] for e in queue["running"] + queue["waiting"]] == [slow, waits["prompt_id"]]
        assert queue["waiting"][0]["name"] == "Ana" and queue["waiting"][0]["params"]["seed"] == 3
        assert {learner["id"]: learner["queued"] for learner in state["learners"]} == {ana_id: 2}
        await teacher.post("/api/interrupt", json={})
        await teacher.post("/api/queue", json={"clear": True})


@async_test
async def test_without_ray_adding_a_worker_is_refused_in_one_sentence(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as teacher:
        await instructor(teacher, classroom(client).instructor_secret)
        assert (await (await teacher.get(f"{API}/state")).json())["can_add_worker"] is False
        resp = await teacher.post(f"{API}/workers")
        body = await resp.json()
        assert resp.status == 409 and body["message_key"] == "err.no_ray" and "--ray" in body["error"]
        for lang in ("en", "fr"):
            strings = await (await teacher.get(f"/classroom/i18n/{lang}.json")).json()
            assert "--ray" in strings["server.err.no_ray"] and strings["workers.add"]


@async_test
async def test_pause_and_resume(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as teacher:
        if client.server.app[STATE].queue.scheduler is None:
            pytest.skip("this queue has no scheduler to pause (it comes with branch classroom-batch)")
        room = classroom(client)
        await join(ana, room.join_code, "Ana")
        await instructor(teacher, room.instructor_secret)
        assert (await (await teacher.post(f"{API}/pause")).json()) == {"paused": True}
        prompt_id = (await post_prompt(ana, graph()))["prompt_id"]
        await asyncio.sleep(0.5)
        state = await (await teacher.get(f"{API}/state")).json()
        assert state["queue"]["paused"] and [e["prompt_id"] for e in state["queue"]["waiting"]] == [prompt_id]
        assert (await (await teacher.post(f"{API}/resume")).json()) == {"paused": False}
        await wait_history(ana, prompt_id)


@async_test
async def test_an_exercise_reaches_every_lab_and_its_results_line_up(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        async with browser(client) as teacher, ana.ws_connect("/ws?clientId=a") as a_ws:
            await instructor(teacher, room.instructor_secret)
            await receive(a_ws, is_type("status"))
            for bad, key in [
                ({"settings": {"seed": -5}}, "err.range"),
                ({"settings": {"cfg": "x"}}, "err.range"),
                ({"settings": {"sampler": "nope"}}, "err.choice"),
                ({"settings": {"lora": 1}}, "err.unknown"),
                ({"settings": {}}, "err.empty"),
                ({"vary": {"param": "cfg", "values": list(range(9))}}, "err.values"),
                ({"vary": {"param": "model", "values": [1]}}, "err.vary"),
            ]:
                resp = await teacher.post(f"{API}/exercise", json=bad)
                body = await resp.json()
                assert resp.status == 400 and body["message_key"] == key, (bad, body)
            pushed = {
                "title": "CFG",
                "settings": {"seed": 42, "steps": 3},
                "vary": {"param": "cfg", "values": [1, 7, 30]},
            }
            resp = await teacher.post(f"{API}/exercise", json=pushed)
            exercise = await resp.json()
            assert resp.status == 200 and exercise["values"] == [1.0, 7.0, 30.0] and exercise["vary"] == "cfg"
            [message] = await receive(a_ws, is_type("atelier_exercise"))
            assert message["data"] == exercise  # pushed on the learner's socket
            assert (await (await ben.get(f"{API}/exercise")).json())["exercise"] == exercise  # and readable

            # Ana runs two of the values (the second one twice: the latest counts), Ben one.
            runs = [(ana, 30.0, "red"), (ana, 1, "green"), (ana, 1.0, "blue"), (ben, 7, "green")]  # 7 is 7.0
            ids = []
            for person, value, colour in runs:
                params = {"seed": 42, "steps": 3, "cfg": value}
                extra = lab_extra(params, kind="class", exercise=exercise["id"], value=value)
                ids.append((await post_prompt(person, graph(colour), extra_data=extra))["prompt_id"])
            for (person, _, _), prompt_id in zip(runs, ids, strict=True):
                await wait_history(person, prompt_id)
            state = await (await teacher.get(f"{API}/state")).json()
            assert state["exercise"] == exercise
            rows = {row["name"]: row["cells"] for row in state["results"]}
            assert [c and c["prompt_id"] for c in rows["Ana"]] == [ids[2], None, ids[0]]  # values 1, 7, 30
            assert [c and c["prompt_id"] for c in rows["Ben"]] == [None, ids[3], None]

            # It is stored (a restart keeps it), until the instructor takes it back.
            assert json.loads(client.server.app[STATE].store.class_value("exercise")) == exercise
            assert (await (await teacher.delete(f"{API}/exercise")).json()) == {"exercise": None}
            cleared = (await receive(a_ws, is_type("atelier_exercise")))[-1]
            assert cleared["data"] is None and client.server.app[STATE].store.class_value("exercise") is None


@async_test
async def test_a_removed_learner_is_out_and_their_waiting_prompts_are_cancelled(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        ana_id = await join(ana, room.join_code, "Ana")
        await join(ben, room.join_code, "Ben")
        done = (await post_prompt(ana, graph("red")))["prompt_id"]
        await wait_history(ana, done)
        async with browser(client) as teacher, ana.ws_connect("/ws?clientId=ana-socket") as a_ws:
            await instructor(teacher, room.instructor_secret)
            await receive(a_ws, is_type("status"))
            running = (await post_prompt(ana, graph(steps=200, delay=0.05), client_id="ana-socket"))["prompt_id"]
            waiting = (await post_prompt(ana, graph("blue")))["prompt_id"]
            await receive(a_ws, is_type("execution_start"))
            resp = await teacher.post(f"{API}/remove", json={"learner": ana_id})
            body = await resp.json()
            assert resp.status == 200 and body["cancelled"] == [waiting] and body["interrupted"] == [running]
            while (message := await a_ws.receive(timeout=5)).type.name == "TEXT":  # what was on its way, then
                pass
            assert message.type.name in ("CLOSE", "CLOSED", "CLOSING")  # her socket is closed
            assert (await ana.get("/api/history")).status == 403  # her cookie opens nothing any more
            assert (await ana.get("/lab/")).status == 403
            ended = await wait_history(teacher, running)
            assert ended["status"]["status_str"] != "success"
            history = await (await teacher.get("/api/history")).json()
            assert done in history and waiting not in history  # her finished work is kept, the waiting one is not
            state = await (await teacher.get(f"{API}/state")).json()
            assert [learner["name"] for learner in state["learners"]] == ["Ben"]
            assert state["removed"] == [{"id": ana_id, "name": "Ana"}]
            again = await teacher.post(f"{API}/remove", json={"learner": ana_id})
            assert again.status == 404 and (await again.json())["message_key"] == "err.no_learner"
            cookie = next(c for c in ana.cookie_jar).value
    async with server(tmp_path, classroom=True) as client:  # a restart: she is still out
        resp = await client.get("/api/history", headers={"Cookie": f"atelier_who={cookie}"})
        assert resp.status == 403
        assert classroom(client).removed == {ana_id: "Ana"}


@async_test
async def test_the_export_zip_holds_the_contact_sheet_the_pngs_and_their_metadata(tmp_path):
    async with server(tmp_path, classroom=True) as client, browser(client) as zoe, browser(client) as ben:
        room = classroom(client)
        zoe_id = await join(zoe, room.join_code, "<b>Zoé</b>")
        ben_id = await join(ben, room.join_code, "Ben")
        hostile = {"prompt": '<img src=x onerror="alert(1)">', "seed": 7, "cfg": 7.5, "steps": 3}
        ids = [
            (await post_prompt(zoe, graph("red"), extra_data=lab_extra(hostile)))["prompt_id"],
            (await post_prompt(ben, graph("blue")))["prompt_id"],
        ]
        for person, prompt_id in zip((zoe, ben), ids, strict=True):
            await wait_history(person, prompt_id)
        async with browser(client) as teacher:
            await instructor(teacher, room.instructor_secret)
            resp = await teacher.get(f"{API}/export.zip")
            assert resp.status == 200 and resp.content_type == "application/zip"
            assert "attachment" in resp.headers["Content-Disposition"]
            data = await resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        sheet = zf.read("index.html").decode()
        metadata = json.loads(zf.read("metadata.json"))
        pngs = {name: zf.read(name) for name in names if name.endswith(".png")}
    assert len(pngs) == 2 and set(names) == {"index.html", "metadata.json", *pngs}
    files = client.server.app[STATE].files
    by_owner = {entry["learner"]: entry for entry in metadata}
    assert set(by_owner) == {zoe_id, ben_id}
    zoe_entry = by_owner[zoe_id]
    assert zoe_entry["name"] == "<b>Zoé</b>" and zoe_entry["params"] == hostile and zoe_entry["prompt_id"] == ids[0]
    assert zoe_entry["file"].startswith(f"images/{folder_name('<b>Zoé</b>', zoe_id)}/")
    history = await_history_files(files, tmp_path, metadata)
    for entry in metadata:  # each PNG is the file the server wrote, byte for byte, its text chunks included
        assert pngs[entry["file"]] == history[entry["prompt_id"]]
        with Image.open(io.BytesIO(pngs[entry["file"]])) as img:
            assert img.text.get("node") == "3"  # the stub SaveImage's metadata; the real one keeps the graph
    # The sheet: every text escaped, no script, each image by its path in the zip.
    assert "<script" not in sheet and "<b>Zoé" not in sheet and "<img src=x" not in sheet
    assert "&lt;b&gt;Zoé&lt;/b&gt;" in sheet and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in sheet
    assert all(f'src="{name}"' in sheet for name in pngs)
    assert "seed 7 · CFG 7.5 · steps 3" in sheet


def await_history_files(files, tmp_path, metadata) -> dict[str, bytes]:
    """prompt id -> the bytes of the PNG it saved in output/ (from the stored history)."""
    from atelier.server.store import PromptStore

    store = PromptStore(tmp_path / "atelier.sqlite")
    found = {}
    for entry in metadata:
        rec = store.get(entry["prompt_id"])
        [ref] = rec.outputs["3"]["images"]
        found[entry["prompt_id"]] = files.path(ref).read_bytes()
    store.close()
    return found


def test_contact_sheet_escapes_and_names():
    sheet = contact_sheet([("A & B", [{"file": 'images/a/x".png', "params": {"prompt": "</figure>"}}])], "<t>")
    assert "A &amp; B" in sheet and 'src="images/a/x&quot;.png"' in sheet and "&lt;/figure&gt;" in sheet
    assert "<title>&lt;t&gt;</title>" in sheet
    assert folder_name("Zoé Martin", "1a2b") == "zoe-martin-1a2b" and folder_name("图", "9f") == "learner-9f"
    assert folder_name("x", None) == "instructor"


def test_both_languages_have_every_key_the_page_and_the_routes_use():
    import re

    from atelier.lessons.parcours import STEPS
    from atelier.server import instructor as module

    root = module.PAGE_ROOT
    en = json.loads((root / "i18n" / "en.json").read_text(encoding="utf-8"))
    fr = json.loads((root / "i18n" / "fr.json").read_text(encoding="utf-8"))
    assert set(en) == set(fr)
    used = set(re.findall(r'data-i18n(?:-title|-placeholder)?="([\w.]+)"', (root / "index.html").read_text()))
    script = (root / "classroom.js").read_text()
    used |= set(re.findall(r'\bt\(\s*"([\w.]+)"', script))
    used |= {f"field.{name}" for name in (*module.TEXT_FIELDS, *module.NUMBER_FIELDS, *module.CHOICE_FIELDS)}
    used |= {"queue.from_lab", "queue.from_editor", "ex.vary_none"}  # keys the script builds
    used |= set(re.findall(r'"(parcours\.\w+)"', script))  # the parcours table's headers, in a list
    used |= {f"step.{step}" for step in STEPS}
    source = Path(module.__file__).read_text()
    used |= {f"server.{key}" for key in re.findall(r'"(err\.\w+)"', source)}  # every ExerciseError's key
    assert used - set(en) == set(), sorted(used - set(en))
    assert not [k for k in en if en[k] == fr[k] and len(en[k]) > 12 and "{" not in en[k]]


@async_test
async def test_the_instructor_follows_each_learners_parcours_and_a_restart_keeps_it(tmp_path):
    from atelier.lessons.parcours import STEPS

    progress = "/atelier/lab/parcours/progress"
    async with server(tmp_path, classroom=True) as client, browser(client) as ana, browser(client) as ben:
        room = classroom(client)
        ana_id = await join(ana, room.join_code, "Ana")
        ben_id = await join(ben, room.join_code, "Ben")
        assert await (await ana.get(progress)).json() == {"steps": {}, "owner": ana_id}  # nothing done yet
        ana_steps = {"th-noise": {"done": True}, "th-latent": {"done": True}, "th-clip": {"done": False, "opened": 5}}
        resp = await ana.put(progress, json={"steps": ana_steps})
        assert resp.status == 200 and (await resp.json())["steps"] == ana_steps
        await ben.put(progress, json={"steps": {s: {"done": True} for s in STEPS}})
        # A learner reads their own record only, whatever they send along.
        assert (await (await ana.get(progress)).json())["steps"] == ana_steps
        assert len((await (await ben.get(f"{progress}?owner={ana_id}")).json())["steps"]) == len(STEPS)
        # What the lab cannot send is refused with one sentence, and nothing is stored.
        for bad in [{"steps": {"th-nope": {"done": True}}}, {"steps": {"th-noise": {"done": "yes"}}}, {"steps": []}]:
            resp = await ana.put(progress, json=bad)
            assert resp.status == 400 and (await resp.json())["error"].endswith("."), bad
        assert (await (await ana.get(progress)).json())["steps"] == ana_steps
        async with browser(client) as teacher:
            await instructor(teacher, room.instructor_secret)
            state = await (await teacher.get(f"{API}/state")).json()
    walls = {learner["id"]: learner["parcours"] for learner in state["learners"]}
    assert walls[ana_id]["done"] == 2 and walls[ana_id]["total"] == len(STEPS) == 13
    assert walls[ana_id]["current"] == "th-clip" and walls[ana_id]["steps"] == ["th-noise", "th-latent"]
    assert walls[ben_id]["done"] == 13 and walls[ben_id]["current"] is None

    async with server(tmp_path, classroom=True) as client, browser(client) as teacher:
        room = classroom(client)
        await instructor(teacher, room.instructor_secret)
        state = await (await teacher.get(f"{API}/state")).json()
    assert {learner["id"]: learner["parcours"]["done"] for learner in state["learners"]} == {ana_id: 2, ben_id: 13}


def test_the_servers_steps_are_the_labs_steps_and_the_instructors_page_names_each_in_both_languages():
    import re

    from atelier.lessons.parcours import STEPS
    from atelier.server import instructor as module

    script = (module.PAGE_ROOT.parent / "lab" / "parcours.js").read_text()
    assert tuple(re.findall(r'\{ id: "([\w-]+)", part:', script)) == STEPS
    for lang in ("en", "fr"):
        strings = json.loads((module.PAGE_ROOT / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
        assert all(strings.get(f"step.{step}") for step in STEPS), lang
