"""Every route the editor calls answers bare and under /api, in ComfyUI's shapes."""

from __future__ import annotations

import json
import struct

from atelier.server.frontend import frontend_root
from atelier.server.state import STATE
from tests.server.harness import async_test, post_prompt, server, wait_history
from tests.server.stub_nodes import graph


async def get_json(client, route: str, expect: int = 200, same: bool = True, **params):
    """GET both `route` and `/api` + `route`; both must give the same status and JSON."""
    results = []
    for prefix in ("", "/api"):
        resp = await client.get(prefix + route, params=params)
        assert resp.status == expect, (prefix + route, resp.status, await resp.text())
        results.append(await resp.json() if expect == 200 else await resp.text())
    assert results[0] == results[1] or not same  # system_stats: free memory moves between two calls
    return results[0]


@async_test
async def test_startup_routes(tmp_path):
    async with server(tmp_path) as client:
        assert await get_json(client, "/users") == {"storage": "server", "migrated": True}
        settings = await get_json(client, "/settings")
        assert settings["Comfy.Notification.ShowVersionUpdates"] is False
        assert await get_json(client, "/settings/Comfy.Workflow.ShowMissingNodesWarning") is False
        assert await get_json(client, "/settings/Not.A.Setting") is None
        assert await get_json(client, "/extensions") == [
            "/extensions/atelier/offline.js",
            "/extensions/atelier/default_graph.js",
        ]
        assert await get_json(client, "/embeddings") == []
        assert await get_json(client, "/workflow_templates") == {}
        assert await get_json(client, "/features") == {
            "supports_preview_metadata": True,
            "supports_progress_text_metadata": True,
            "max_upload_size": 52428800,
        }
        assert await get_json(client, "/prompt") == {"exec_info": {"queue_remaining": 0}}
        assert await get_json(client, "/queue") == {"queue_running": [], "queue_pending": []}
        assert await get_json(client, "/history") == {}
        for language, start in (("fr-FR,fr;q=0.9", "un grand"), ("de-DE", "a big"), ("en-US", "a big")):
            resp = await client.get("/api/atelier/default_graph", headers={"Accept-Language": language})
            graph = await resp.json()
            prompt = next(n for n in graph["nodes"] if n["id"] == 6)["widgets_values"][0]
            assert prompt.startswith(start), (language, prompt)
        # Translations of Atelier's teaching nodes (none in this stub registry); no shared subgraph blueprints.
        assert await get_json(client, "/i18n") == {"en": {"nodeDefs": {}}, "fr": {"nodeDefs": {}}}
        assert await get_json(client, "/global_subgraphs") == {}
        await get_json(client, "/global_subgraphs/some-id", expect=404)
        assert (await client.get("/internal/logs/raw")).status == 200

        info = await get_json(client, "/object_info")
        assert sorted(info) == ["Fail", "MakeImage", "SaveStub", "SlowImage"]
        one = await get_json(client, "/object_info/MakeImage")
        assert list(one) == ["MakeImage"]
        assert one["MakeImage"]["input"]["required"]["colour"] == [["red", "green", "blue"]]
        assert one["MakeImage"]["output"] == ["IMAGE"] and one["MakeImage"]["output_node"] is False
        for key in ("name", "display_name", "description", "category", "output_node", "python_module"):
            assert key in one["MakeImage"]
        assert await get_json(client, "/object_info/Nope") == {}

        stats = await get_json(client, "/system_stats", same=False)
        assert "--disable-api-nodes" in stats["system"]["argv"]
        for key in ("os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version"):
            assert key in stats["system"]
        device = stats["devices"][0]
        assert {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"} <= set(
            device
        )


@async_test
async def test_settings_are_stored_and_override_defaults(tmp_path):
    async with server(tmp_path) as client:
        resp = await client.post("/api/settings/Comfy.Notification.ShowVersionUpdates", data=json.dumps(True))
        assert resp.status == 200
        resp = await client.post("/settings", data=json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Locale": "fr"}))
        assert resp.status == 200
        settings = await get_json(client, "/settings")
        assert settings["Comfy.Notification.ShowVersionUpdates"] is True  # the user's choice wins
        assert settings["Comfy.Workflow.ShowMissingNodesWarning"] is False  # untouched default
        assert settings["Comfy.Locale"] == "fr" and settings["Comfy.TutorialCompleted"] is True
        # The editor's default graph follows the chosen language, over the browser's.
        graph = await get_json(client, "/atelier/default_graph")
        prompt = next(n for n in graph["nodes"] if n["type"] == "CLIPTextEncode")["widgets_values"][0]
        assert prompt.startswith("un grand cercle rouge") and "ds" not in graph["extra"]
        stored = json.loads((tmp_path / "user" / "default" / "comfy.settings.json").read_text())
        assert stored == {
            "Comfy.Notification.ShowVersionUpdates": True,
            "Comfy.TutorialCompleted": True,
            "Comfy.Locale": "fr",
        }
        assert (await client.post("/api/settings", data="not json")).status == 400


@async_test
async def test_userdata_routes(tmp_path):
    async with server(tmp_path) as client:
        assert (
            await get_json(client, "/userdata", dir="workflows", recurse="true", split="false", full_info="true") == []
        )
        await get_json(client, "/userdata", expect=404, dir="nothing-here")
        body = json.dumps({"nodes": [], "links": []})
        resp = await client.post("/api/userdata/workflows%2Fcat.json?overwrite=true&full_info=false", data=body)
        assert resp.status == 200 and await resp.json() == "workflows/cat.json"
        resp = await client.post("/api/userdata/workflows%2Fcat.json?overwrite=false", data=body)
        assert resp.status == 409
        resp = await client.post("/api/userdata/workflows%2Fsub%2Fdog.json?full_info=true", data="{}")
        info = await resp.json()
        assert info["path"] == "workflows/sub/dog.json" and info["size"] == 2 and info["modified"] > 0

        listing = await get_json(client, "/userdata", dir="workflows", recurse="true", full_info="true")
        assert [e["path"] for e in listing] == ["cat.json", "sub/dog.json"]
        assert await get_json(client, "/userdata", dir="workflows", recurse="false") == ["cat.json"]
        split = await get_json(client, "/userdata", dir="workflows", recurse="true", split="true")
        assert split == [["cat.json", "cat.json"], ["sub/dog.json", "sub", "dog.json"]]
        v2 = await get_json(client, "/v2/userdata", path="workflows")
        assert [(e["name"], e["type"]) for e in v2] == [("cat.json", "file"), ("sub", "directory")]

        resp = await client.get("/api/userdata/workflows%2Fcat.json")
        assert resp.status == 200 and await resp.text() == body
        # The editor's own start-up files read as empty before they exist (no 404 in its console); others 404.
        resp = await client.get("/api/userdata/user.css")
        assert resp.status == 200 and resp.content_type == "text/css" and await resp.text() == ""
        assert await get_json(client, "/userdata/comfy.templates.json") == []
        assert await get_json(client, "/userdata", dir="subgraphs", recurse="true") == []
        assert (await client.get("/api/userdata/other.css")).status == 404
        resp = await client.post("/api/userdata/workflows%2Fcat.json/move/workflows%2Flion.json")
        assert resp.status == 200 and await resp.json() == "workflows/lion.json"
        resp = await client.post("/api/userdata/workflows%2Flion.json/move/workflows%2Fsub%2Fdog.json")
        assert resp.status == 409
        assert (await client.delete("/api/userdata/workflows%2Flion.json")).status == 204
        assert (await client.delete("/api/userdata/workflows%2Flion.json")).status == 404


@async_test
async def test_models_routes(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "checkpoints").mkdir()
    header = json.dumps({"__metadata__": {"modelspec.title": "tiny"}}).encode()
    (models / "checkpoints" / "tiny.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (models / "checkpoints" / "notes.txt").write_text("not a model")
    (models / "embeddings").mkdir()
    (models / "embeddings" / "style.pt").write_bytes(b"x")
    async with server(tmp_path) as client:
        assert await get_json(client, "/models") == [
            "checkpoints",
            "vae",
            "loras",
            "embeddings",
            "diffusion_models",
            "text_encoders",
            "upscale_models",
            "controlnet",
        ]
        assert await get_json(client, "/models/checkpoints") == ["tiny.safetensors"]
        await get_json(client, "/models/unknown", expect=404)
        assert await get_json(client, "/embeddings") == ["style"]
        folders = await get_json(client, "/experiment/models")
        assert folders[0]["name"] == "checkpoints" and folders[0]["folders"] == [str(models.resolve() / "checkpoints")]
        files = await get_json(client, "/experiment/models/checkpoints")
        assert [(f["name"], f["pathIndex"], f["size"]) for f in files] == [("tiny.safetensors", 0, 8 + len(header))]
        meta = await get_json(client, "/view_metadata/checkpoints", filename="tiny.safetensors")
        assert meta == {"modelspec.title": "tiny"}
        await get_json(client, "/view_metadata/checkpoints", expect=404, filename="missing.safetensors")


@async_test
async def test_jobs_routes(tmp_path):
    async with server(tmp_path) as client:
        ids = []
        for colour in ("red", "green", "blue"):
            ids.append((await post_prompt(client, graph(colour=colour)))["prompt_id"])
            await wait_history(client, ids[-1])
        page = await get_json(client, "/jobs", limit="2", offset="0")
        assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
        assert page["pagination"] == {"offset": 0, "limit": 2, "total": 3, "has_more": True}
        job = page["jobs"][0]
        assert job["status"] == "completed" and job["outputs_count"] == 1 and job["previewable_outputs_count"] == 1
        assert job["preview_output"] == {
            "filename": "stub_00003_.png",
            "subfolder": "",
            "type": "output",
            "nodeId": "3",
            "mediaType": "images",
        }
        assert job["execution_end_time"] >= job["execution_start_time"] >= job["create_time"] > 0
        asc = await get_json(client, "/jobs", sort_order="asc", sort_by="execution_duration", status="completed")
        assert sorted(j["id"] for j in asc["jobs"]) == sorted(ids)
        assert (await get_json(client, "/jobs", status="failed"))["jobs"] == []
        await get_json(client, "/jobs", expect=400, status="weird")
        detail = await get_json(client, f"/jobs/{ids[0]}")
        assert detail["outputs"]["3"]["images"][0]["filename"] == "stub_00001_.png"
        assert detail["workflow"]["prompt"]["1"]["inputs"]["colour"] == "red"
        assert detail["execution_status"]["status_str"] == "success"
        await get_json(client, "/jobs/unknown-id", expect=404)


@async_test
async def test_validation_errors_in_comfyui_format(tmp_path):
    async with server(tmp_path) as client:
        resp = await client.post("/api/prompt", data="{not json", headers={"Content-Type": "application/json"})
        assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_prompt"
        resp = await client.post("/prompt", json={"client_id": "x"})
        body = await resp.json()
        assert resp.status == 400 and body["error"]["type"] == "no_prompt" and body["node_errors"] == {}

        unknown = graph()
        unknown["9"] = {"class_type": "Teleporter", "inputs": {}, "_meta": {"title": "Beam me up"}}
        body = await (await client.post("/api/prompt", json={"prompt": unknown})).json()
        assert body["error"]["type"] == "missing_node_type"
        assert body["error"]["extra_info"] == {"node_id": "9", "class_type": "Teleporter", "node_title": "Beam me up"}

        too_big = graph()
        too_big["1"]["inputs"]["width"] = 4096
        resp = await client.post("/api/prompt", json={"prompt": too_big})
        body = await resp.json()
        assert resp.status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
        error = body["node_errors"]["1"]["errors"][0]
        assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "width"
        assert (
            body["node_errors"]["1"]["dependent_outputs"] == ["3"]
            and body["node_errors"]["1"]["class_type"] == "MakeImage"
        )

        bad_link = graph()
        bad_link["2"]["inputs"]["image"] = ["1", 5]
        body = await (await client.post("/api/prompt", json={"prompt": bad_link})).json()
        assert body["node_errors"]["2"]["errors"][0]["type"] == "bad_linked_input"

        no_outputs = {"1": graph()["1"]}
        body = await (await client.post("/api/prompt", json={"prompt": no_outputs})).json()
        assert body["error"]["type"] == "prompt_no_outputs"
        assert await get_json(client, "/queue") == {"queue_running": [], "queue_pending": []}


@async_test
async def test_frontend_and_templates_are_served(tmp_path):
    async with server(tmp_path) as client:
        resp = await client.get("/")
        html = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html" and '<div id="vue-app">' in html
        assert "no-cache" in resp.headers["Cache-Control"]
        policy = dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))
        assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'self'"  # 'self' covers ws:
        script = html.split('<script type="module" crossorigin src="./')[1].split('"')[0]
        resp = await client.get("/" + script)
        assert resp.status == 200 and resp.content_type == "application/javascript"
        assert len(await resp.read()) == (frontend_root() / script).stat().st_size
        assert "'wasm-unsafe-eval'" in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
        for name in ("offline.js", "default_graph.js"):  # Atelier's editor extensions
            resp = await client.get(f"/extensions/atelier/{name}")
            assert resp.status == 200 and resp.content_type == "application/javascript"
        css = next(p for p in (frontend_root() / "assets").glob("*.css"))
        assert (await client.get(f"/assets/{css.name}")).content_type == "text/css"
        user_css = await client.get("/user.css")  # an empty style sheet, not a console error
        assert user_css.status == 200 and user_css.content_type == "text/css" and await user_css.text() == ""
        favicon = await client.get("/favicon.ico")
        assert favicon.status == 200 and (await favicon.read()).startswith(b"\x89PNG")
        assert (await client.get("/assets/..%2F..%2F..%2Fsetup.py")).status in (400, 404)

        resp = await client.get("/templates/index.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        index = await resp.json()
        assert index[0]["moduleName"] == "default" and index[0]["title"] == "Atelier"
        entry = index[0]["templates"][0]
        assert entry["name"] == "atelier_txt2img" and entry["mediaType"] == "image" and entry["mediaSubtype"] == "webp"
        workflow = await (await client.get("/templates/atelier_txt2img.json")).json()
        assert len(workflow["nodes"]) == 7 and workflow["version"] == 0.4
        resp = await client.get("/templates/atelier_txt2img-1.webp")
        assert resp.status == 200 and resp.content_type == "image/webp"
        assert (await client.get("/templates/templates.json")).status == 404
        assert (await client.get("/templates/missing.json")).status == 404
        assert (await client.get("/templates/missing.fr.json")).status == 404
        assert await (await client.get("/templates/index_logo.json")).json() == {}

        # The template browser in French asks for index.fr.json: French titles, templates named <name>.fr.
        french = (await (await client.get("/templates/index.fr.json")).json())[0]["templates"][0]
        assert french["name"] == "atelier_txt2img.fr" and french["title"] == "Texte vers image"
        workflow = await (await client.get("/templates/atelier_txt2img.fr.json")).json()
        prompt = next(n for n in workflow["nodes"] if n["id"] == 6)
        assert prompt["widgets_values"] == ["un grand cercle rouge à gauche d'une petite maison bleue"]
        resp = await client.get("/templates/atelier_txt2img.fr-1.webp")
        assert resp.status == 200 and resp.content_type == "image/webp"
        # A locale without translations gets the English list (a 404 would be a console error).
        other = await (await client.get("/templates/index.zh-TW.json")).json()
        assert other[0]["templates"][0]["name"] == "atelier_txt2img"


@async_test
async def test_api_only_server_without_frontend(tmp_path):
    async with server(tmp_path, static_root=None) as client:
        resp = await client.get("/")
        assert resp.status == 404 and "comfyui-frontend-package" in await resp.text()
        assert (await client.get("/api/users")).status == 200


@async_test
async def test_free_and_interrupt_routes(tmp_path):
    calls = []
    async with server(tmp_path, on_free=lambda unload, free: calls.append((unload, free))) as client:
        await wait_history(client, (await post_prompt(client, graph()))["prompt_id"])
        executor = client.server.app[STATE].queue.executor
        assert len(executor.cache) == 3
        assert (await client.post("/api/free", json={"unload_models": True})).status == 200
        assert len(executor.cache) == 3  # unloading models keeps the node outputs
        assert (await client.post("/free", json={"unload_models": True, "free_memory": True})).status == 200
        assert len(executor.cache) == 0 and calls == [(True, False), (True, True)]
        assert (await client.post("/api/interrupt")).status == 200  # nothing running: nothing happens
