"""What a hostile file or request may not do over HTTP (issue 21): be served as a page (stored XSS), reach the server
under a foreign name (DNS rebinding), learn its paths, or make it answer 500.

The stored-XSS check also runs in Chromium (skipped where /usr/bin/chromium or Playwright is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import struct
import time
import tracemalloc
import urllib.request
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from atelier.cli import build_parser
from atelier.errors import AtelierError
from atelier.server import app as app_module
from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from atelier.server.security import FILE_POLICY, image_type, lan_addresses
from tests.browser import CHROMIUM, atelier_server, chromium
from tests.server.harness import async_test, is_type, post_prompt, receive, server, wait_history
from tests.server.stub_nodes import graph, stub_registry
from tests.server.test_safety import png_bytes, upload_form

SCRIPT = (
    b"<script>window.pwned = true;"
    b"fetch('/api/settings', {method: 'POST', body: JSON.stringify({'Atelier.Pwned': true})});</script>"
)
XSS_PNG = png_bytes() + b"<html><body>" + SCRIPT + b"</body></html>"  # a valid PNG: PIL ignores what follows IEND
HTML_PAGE = b"<!doctype html><html><body>" + SCRIPT + b"</body></html>"


def policy(header: str) -> dict[str, str]:
    """'default-src x; sandbox' -> {'default-src': 'x', 'sandbox': ''}"""
    return {d.strip().split(" ")[0]: d.strip().partition(" ")[2] for d in header.split(";") if d.strip()}


def test_image_type_comes_from_magic_numbers_only():
    assert image_type(png_bytes()[:12]) == "image/png"
    assert image_type(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01") == "image/jpeg"
    assert image_type(b"GIF89a\x01\x00\x01\x00\x00\x00") == "image/gif"
    assert image_type(b"RIFF\x24\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_type(b"RIFF\x24\x00\x00\x00WAVEfmt ") is None  # RIFF, but audio
    assert image_type(HTML_PAGE[:12]) is None
    assert image_type(b'<svg xmlns="http://www.w3.org/2000/svg">'[:12]) is None  # SVG can hold scripts


@async_test
async def test_stored_files_are_served_by_content_never_by_name(tmp_path):
    async with server(tmp_path) as client:
        resp = await client.post("/api/upload/image", data=upload_form(XSS_PNG, "gallery.html"))
        assert resp.status == 200 and (await resp.json())["name"] == "gallery.html"  # stored, as the issue says
        for route in ("/view", "/api/view"):
            resp = await client.get(route, params={"filename": "gallery.html", "type": "input"})
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
            assert resp.headers["Content-Disposition"].startswith("inline;")
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            directives = policy(resp.headers["Content-Security-Policy"])
            assert directives["default-src"] == "'none'" and "sandbox" in directives and "script-src" not in directives
            assert directives["frame-ancestors"] == "'self'"
            assert await resp.read() == XSS_PNG

        # A file that is no image, whatever its name, is a download of unknown type.
        for name in ("page.html", "page.png", "drawing.svg"):
            (tmp_path / "output" / name).write_bytes(HTML_PAGE)
            resp = await client.get("/api/view", params={"filename": name})
            assert resp.headers["Content-Type"] == "application/octet-stream", name
            assert resp.headers["Content-Disposition"].startswith("attachment;"), name
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        # A name cannot break out of Content-Disposition.
        (tmp_path / "output" / 'a";b.png').write_bytes(png_bytes())
        resp = await client.get("/api/view", params={"filename": 'a";b.png'})
        assert resp.headers["Content-Disposition"] == "inline; filename=\"a__b.png\"; filename*=UTF-8''a%22%3Bb.png"

        # User files: the same rule; a saved 'workflow' holding HTML comes back as a download.
        assert (await client.post("/api/userdata/evil.html", data=HTML_PAGE)).status == 200
        resp = await client.get("/api/userdata/evil.html")
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"].startswith("attachment;") and await resp.read() == HTML_PAGE
        assert (await client.post("/api/userdata/pic.json", data=png_bytes())).status == 200
        assert (await client.get("/api/userdata/pic.json")).headers["Content-Type"] == "image/png"
        # user.css stays a style sheet (index.html links it); when missing, an empty one (the 1.58 editor asks).
        missing = await client.get("/api/userdata/user.css")
        assert missing.status == 200 and missing.content_type == "text/css" and await missing.read() == b""
        assert (await client.post("/api/userdata/user.css", data=b"body { color: red }")).status == 200
        assert (await client.get("/api/userdata/user.css")).content_type == "text/css"
        # Template thumbnails, by content too.
        resp = await client.get("/templates/atelier_txt2img-1.webp")
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/webp"


@async_test
async def test_every_response_has_nosniff_and_a_policy_with_frame_ancestors(tmp_path):
    async with server(tmp_path) as client:
        pages = {}
        for route in ("/", "/lab/", "/lab/lab.js", "/api/system_stats", "/api/nothing-here", "/view", "/favicon.ico"):
            resp = await client.get(route)
            assert resp.headers["X-Content-Type-Options"] == "nosniff", route
            pages[route] = policy(resp.headers["Content-Security-Policy"])
            assert pages[route]["frame-ancestors"] == "'self'", route
        refused = await client.get("/api/users", headers={"Host": f"rebind.example:{client.port}"})
        assert refused.status == 403 and refused.headers["X-Content-Type-Options"] == "nosniff"
        assert policy(refused.headers["Content-Security-Policy"]) == policy(FILE_POLICY)
        # The editor: scripts from this server and the import map by its hash; WebAssembly compiled (the 1.58
        # bundle has a module), but no JavaScript eval and no other inline script.
        editor = pages["/"]
        sources = editor["script-src"].split()
        assert sources[:2] == ["'self'", "'wasm-unsafe-eval'"] and len(sources) == 3
        assert sources[2].startswith("'sha256-")
        assert "'unsafe-eval'" not in sources and "'unsafe-inline'" not in sources
        assert editor["connect-src"] == "'self'" and editor["object-src"] == "'none'"
        # The lab: its own scripts only; inline styles (the plots colour their lines with style attributes).
        assert pages["/lab/"]["script-src"] == "'self'" and pages["/lab/"]["style-src"] == "'self' 'unsafe-inline'"
        # JSON and errors: sandboxed, nothing may load.
        assert pages["/api/system_stats"] == pages["/api/nothing-here"] == policy(FILE_POLICY)


# ---- --listen on a LAN ----


@async_test
async def test_on_the_network_the_server_answers_only_to_its_own_names(tmp_path):
    async with server(tmp_path, listen_host="0.0.0.0", allowed_hosts=["Atelier.LAN"]) as client:
        port = client.port
        own = ["127.0.0.1", "localhost", "[::1]", socket.gethostname(), "atelier.lan", *lan_addresses()]
        for name in own:
            resp = await client.get("/api/history", headers={"Host": f"{name}:{port}"})
            assert resp.status == 200, (name, await resp.text())
        for host in (f"evil.example:{port}", "evil.example", f"192.0.2.66:{port}"):
            resp = await client.get("/api/history", headers={"Host": host})
            text = await resp.text()
            assert resp.status == 403 and text.startswith("This server only answers to its own names ("), text
            assert text.endswith("is not one of them (start it with --allowed-host NAME to add a name).")
        resp = await client.get("/api/history", headers={"Host": "a b<script>"})
        assert resp.status == 403 and "is not a host name" in await resp.text()
        # The WebSocket upgrade too: a rebound name gets no socket (no Origin needed to be refused).
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers={"Host": f"evil.example:{port}"})
        assert refused.value.status == 403
        ws = await client.ws_connect("/ws", headers={"Host": f"atelier.lan:{port}"})
        await ws.close()


@async_test
async def test_on_loopback_only_local_names_are_answered(tmp_path):
    async with server(tmp_path) as client:
        resp = await client.get("/api/history", headers={"Host": f"{socket.gethostname()}:{client.port}"})
        assert resp.status == 403 and "only answers to localhost" in await resp.text()
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/ws", headers={"Host": f"rebind.example:{client.port}"})
        assert refused.value.status == 403


@contextlib.asynccontextmanager
async def remote_client(data_dir: Path, **kwargs) -> AsyncIterator[TestClient]:
    """The server as seen from another machine: each request is given the peer address 192.168.1.50."""
    app = create_app(stub_registry(OutputFiles(DataDir(data_dir))), data_dir, listen_host="0.0.0.0", **kwargs)

    @web.middleware
    async def from_the_lan(request: web.Request, handler):
        return await handler(request.clone(remote="192.168.1.50"))

    app.middlewares.insert(0, from_the_lan)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@async_test
async def test_other_machines_are_not_told_paths_or_versions(tmp_path):
    argv = ["/opt/venv/bin/atelier", "serve", "--data-dir", str(tmp_path), "--disable-api-nodes"]
    async with remote_client(tmp_path, argv=argv) as client:
        stats_text = await (await client.get("/api/system_stats")).text()
        stats = json.loads(stats_text)
        system = stats["system"]
        # What the editor's schema (zSystemStats) requires is there, with the right types.
        for key, kind in [
            ("os", str),
            ("python_version", str),
            ("embedded_python", bool),
            ("comfyui_version", str),
            ("pytorch_version", str),
            ("argv", list),
            ("ram_total", int),
            ("ram_free", int),
        ]:
            assert isinstance(system[key], kind), key
        assert system["python_version"] == system["pytorch_version"] == system["platform"] == ""
        assert system["argv"] == ["serve", "--data-dir", "--disable-api-nodes"]
        assert str(tmp_path) not in stats_text and "/opt/venv" not in stats_text
        folders = await (await client.get("/internal/folder_paths")).json()
        assert folders["checkpoints"] == ["models/checkpoints"] and str(tmp_path) not in json.dumps(folders)
        models = await (await client.get("/api/experiment/models")).json()
        assert {"name": "vae", "folders": ["models/vae"]} in models
    async with server(tmp_path) as client:  # this machine still sees where its files are
        folders = await (await client.get("/internal/folder_paths")).json()
        assert folders["checkpoints"] == [str(DataDir(tmp_path).models / "checkpoints")]
        assert (await (await client.get("/api/system_stats")).json())["system"]["python_version"]


def test_listen_chooses_the_address_and_prints_the_lan_url(tmp_path, monkeypatch, capsys):
    seen = {}

    def run_app(app, host, port, print):
        seen.update(host=host, port=port)
        print(None)  # what aiohttp does once the socket is bound

    monkeypatch.setattr(app_module.web, "run_app", run_app)
    monkeypatch.setattr(app_module, "lan_addresses", lambda: ["192.168.1.20"])
    registry = stub_registry(OutputFiles(DataDir(tmp_path)))
    app_module.serve(port=9999, data_dir=tmp_path, registry=registry, listen=True)
    out = capsys.readouterr()
    assert seen == {"host": "0.0.0.0", "port": 9999} and "all network interfaces (0.0.0.0:9999)" in out.err
    assert out.out == "Atelier is running at http://192.168.1.20:9999/ (on this machine: http://127.0.0.1:9999/)\n"
    app_module.serve(host="192.168.1.20", port=9999, data_dir=tmp_path, registry=registry)
    out = capsys.readouterr()
    assert seen["host"] == "192.168.1.20" and "listening on the network (192.168.1.20:9999)" in out.err
    assert out.out == "Atelier is running at http://192.168.1.20:9999/\n"
    app_module.serve(host="192.168.1.20,127.0.0.1", port=9999, data_dir=tmp_path, registry=registry)
    assert seen["host"] == ["192.168.1.20", "127.0.0.1"]
    with pytest.raises(AtelierError, match=r"--listen expects IP addresses .*got 'my laptop'\."):
        app_module.serve(host="my laptop", port=9999, data_dir=tmp_path, registry=registry)


def test_cli_listen_takes_an_optional_address_and_allowed_hosts(monkeypatch):
    calls = []
    monkeypatch.setattr(app_module, "serve", lambda **kwargs: calls.append(kwargs))
    for argv, host, allowed in [
        (["serve"], "127.0.0.1", []),
        (["serve", "--listen"], "0.0.0.0", []),
        (
            ["serve", "--listen", "192.168.1.5", "--allowed-host", "atelier.lan", "--allowed-host", "pc"],
            "192.168.1.5",
            ["atelier.lan", "pc"],
        ),
    ]:
        args = build_parser().parse_args(argv)
        assert args.func(args) == 0
        assert (calls[-1]["host"], list(calls[-1]["allowed_hosts"])) == (host, allowed), argv


# ---- files: names, bodies and images that used to answer 500 ----


def png_with_chunk(kind: bytes, data: bytes, after_pixels: bool = False) -> bytes:
    """A small PNG with one more chunk before IDAT (or after it, just before IEND)."""
    png = png_bytes()
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return png[:-12] + chunk + png[-12:] if after_pixels else png[:33] + chunk + png[33:]


MULTIPART = "multipart/form-data; boundary=x"
BROKEN_BODIES = {
    "no boundary": ("multipart/form-data", b"--x\r\n"),
    "no starting boundary": (MULTIPART, b"hello"),
    "cut short": (MULTIPART, b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nabc'),
    "header without colon": (MULTIPART, b"--x\r\nnoheader\r\n\r\nabc\r\n--x--\r\n"),
}


@async_test
async def test_long_names_broken_bodies_and_dot_names_get_a_sentence(tmp_path):
    long_name = "a" * 296 + ".png"
    async with server(tmp_path) as client:
        for method, route, params in [
            ("GET", "/api/view", {"filename": long_name}),
            ("GET", "/view", {"filename": "x.png", "subfolder": "/".join(["b" * 200] * 30)}),
            ("GET", f"/api/userdata/{long_name}", {}),
            ("POST", f"/api/userdata/{long_name}", {}),
            ("GET", "/api/userdata", {"dir": long_name}),
        ]:
            resp = await client.request(method, route, params=params, data=b"{}" if method == "POST" else None)
            text = await resp.text()
            assert resp.status == 400 and "expected at most" in text and "Errno" not in text, (route, text)
        resp = await client.post("/api/upload/image", data=upload_form(png_bytes(), long_name))
        assert resp.status == 400 and await resp.text() == (
            "The file name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' has a name of 300 "
            "characters; expected at most 255 bytes per name."
        )
        # A 250-character name is fine, but its clash rename "name (1).png" would pass 255: refused, not a 500.
        near = "c" * 251 + ".png"
        assert (await client.post("/api/upload/image", data=upload_form(png_bytes(), near))).status == 200
        other = png_bytes(colour=(0, 0, 255, 255))
        resp = await client.post("/api/upload/image", data=upload_form(other, near))
        assert resp.status == 400 and "expected at most 255 bytes per name" in await resp.text()

        for case, (content_type, body) in BROKEN_BODIES.items():
            resp = await client.post("/api/upload/image", data=body, headers={"Content-Type": content_type})
            text = await resp.text()
            assert resp.status == 400 and text.startswith("The upload body is not valid multipart/form-data ("), case
        for name in (".", ".."):
            resp = await client.post("/api/upload/image", data=upload_form(png_bytes(), name, overwrite="true"))
            assert resp.status == 400 and "names no file; expected e.g. 'photo.png'" in await resp.text(), name
        assert (tmp_path / "input").is_dir()  # still a folder, not replaced by a file


@async_test
async def test_a_png_text_chunk_bomb_is_refused_with_bounded_memory(tmp_path):
    deflate = zlib.compressobj(9)  # 200 MB of text in 194 kB, compressed 1 MB at a time
    inflated = b"".join(deflate.compress(b"A" * 1_000_000) for _ in range(200)) + deflate.flush()
    bombs = {
        "ztxt.png": png_with_chunk(b"zTXt", b"prompt\x00\x00" + inflated),
        "itxt.png": png_with_chunk(b"iTXt", b"prompt\x00\x01\x00\x00\x00" + inflated, after_pixels=True),
    }
    async with server(tmp_path) as client:
        for name, bomb in bombs.items():
            tracemalloc.start()
            resp = await client.post("/api/upload/image", data=upload_form(bomb, name))
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert resp.status == 400 and await resp.text() == (
                f"The image {name!r} has metadata that is malformed or too large (PNG text chunks may inflate to "
                "1 MB each); expected an ordinary PNG, JPEG or WebP file."
            )
            assert peak < 20e6, peak  # measured about 3 MB: PIL stops inflating at MAX_TEXT_CHUNK
            assert not (tmp_path / "input" / name).exists()


@async_test
async def test_decoding_a_large_upload_does_not_block_the_event_loop(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 8000), (200, 30, 30)).save(buffer, format="PNG", compress_level=1)
    big = buffer.getvalue()  # 64 megapixels: under the limit, so it is decoded in full
    async with server(tmp_path) as client:
        upload = asyncio.create_task(client.post("/api/upload/image", data=upload_form(big, "big.png")))
        await asyncio.sleep(0.05)
        pings = []
        while not upload.done():
            start = time.perf_counter()
            assert (await client.get("/api/features")).status == 200
            pings.append(time.perf_counter() - start)
            await asyncio.sleep(0.01)
        resp = await upload
        assert resp.status == 200 and (await resp.json())["name"] == "big.png"
        # Many answers while it decoded, each quick (on the loop it was one stall of ~0.8 s and no answer).
        assert len(pings) >= 3 and max(pings) < 0.25, pings


@async_test
async def test_an_upload_cannot_replace_a_generated_image(tmp_path):
    async with server(tmp_path) as client:
        ref = (await wait_history(client, (await post_prompt(client, graph()))["prompt_id"]))["outputs"]["3"]
        made = tmp_path / "output" / ref["images"][0]["filename"]
        before = made.read_bytes()
        form = upload_form(png_bytes(), made.name, type="output", overwrite="true")
        resp = await client.post("/api/upload/image", data=form)
        assert resp.status == 403 and await resp.text() == (
            f"The output file {made.name!r} was made by a prompt; an upload may not replace it (use another name)."
        )
        assert made.read_bytes() == before
        # Without overwrite it is stored next to it; a new name in output/ is fine.
        resp = await client.post("/api/upload/image", data=upload_form(png_bytes(), made.name, type="output"))
        assert resp.status == 200 and (await resp.json())["name"] == made.stem + " (1).png"
        assert made.read_bytes() == before


@async_test
async def test_execution_errors_reach_the_client_without_traceback_or_paths(tmp_path, caplog):
    secret = str(tmp_path / "models" / "checkpoints" / "secret.ckpt")
    prompt = graph(fail=True)
    prompt["4"]["inputs"]["message"] = f"[Errno 2] No such file or directory: '{secret}'"
    async with server(tmp_path) as client:
        ws = await client.ws_connect("/ws?clientId=tester")
        with caplog.at_level(logging.ERROR, logger="atelier.server"):
            queued = await post_prompt(client, prompt)
            messages = await receive(ws, is_type("execution_error"))
            history = await wait_history(client, queued["prompt_id"])
        await ws.close()
        sent = messages[-1]["data"]
        assert sent["exception_message"] == "[Errno 2] No such file or directory: '.../secret.ckpt'"
        assert sent["traceback"] == [] and sent["node_id"] == "4" and sent["exception_type"] == "RuntimeError"
        assert str(tmp_path) not in json.dumps([m for m in messages if isinstance(m, dict)])
        assert str(tmp_path) not in json.dumps(history["status"])  # (its "prompt" is the client's own text)
        jobs = await (await client.get("/api/jobs", params={"status": "failed"})).text()
        assert str(tmp_path) not in jobs
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret in logged and "Traceback" not in logged and "stub_nodes.py" in logged  # the frames, in the log


# ---- in Chromium ----


def _settings(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/settings", timeout=10) as resp:
        return json.loads(resp.read())


def test_the_xss_upload_runs_no_script_in_chromium(tmp_path):
    pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("This check needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium).")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with atelier_server(data_dir) as url, chromium() as browser:
        boundary = "----atelier-test"  # the multipart body by hand: urllib has no encoder
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="gallery.html"\r\n'.encode(),
                b"Content-Type: image/png\r\n\r\n" + XSS_PNG + b"\r\n",
                f"--{boundary}--\r\n".encode(),
            ]
        )
        request = urllib.request.Request(
            url + "/api/upload/image", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["name"] == "gallery.html"
        (data_dir / "input" / "page.html").write_bytes(HTML_PAGE)
        (data_dir / "user" / "default" / "evil.html").write_bytes(HTML_PAGE)

        context = browser.new_context()
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda msg: console.append(msg.text))
        # The PNG with a script, named .html: Chromium shows an image; the script never runs.
        page.goto(f"{url}/view?filename=gallery.html&type=input")
        page.wait_for_timeout(500)
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert "Atelier.Pwned" not in _settings(url)
        assert page.evaluate("document.contentType") == "image/png"
        assert page.evaluate("document.querySelectorAll('script').length") == 0
        # A plain HTML file in input/ or in the user folder: a download, never a page.
        for path in ("/view?filename=page.html&type=input", "/api/userdata/evil.html"):
            with page.expect_download() as download:
                try:
                    page.goto(url + path)
                except Exception as ex:  # Playwright reports a navigation that became a download as an error
                    assert "Download is starting" in str(ex), ex
            assert download.value.suggested_filename.endswith(".html")
        # Framed by our own page (the editor's origin), the file still runs nothing: its policy sandboxes it.
        page.goto(f"{url}/lab/")
        page.evaluate(
            """src => new Promise(done => {
                const frame = document.createElement('iframe');
                frame.onload = () => done();
                frame.src = src;
                document.body.append(frame);
            })""",
            "/view?filename=gallery.html&type=input",
        )
        page.wait_for_timeout(500)
        assert "Atelier.Pwned" not in _settings(url)
        assert not [m for m in console if "Content Security Policy" in m and "/view" not in m], console
        context.close()
