"""What a hostile file or request may not do over HTTP (issue 21): be served as a page (stored XSS), reach the server
under a foreign name (DNS rebinding), learn its paths, or make it answer 500.

The stored-XSS check also runs in Chromium (skipped where /usr/bin/chromium or Playwright is missing).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from atelier.server.security import FILE_POLICY, image_type
from tests.browser import CHROMIUM, atelier_server, chromium
from tests.server.harness import async_test, server
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
        # user.css stays a style sheet (index.html links it); when missing, its 404 is CSS too.
        missing = await client.get("/api/userdata/user.css")
        assert missing.status == 404 and missing.content_type == "text/css"
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
        # The editor: scripts from this server and the import map by its hash; no eval, no other inline script.
        editor = pages["/"]
        sources = editor["script-src"].split()
        assert sources[0] == "'self'" and len(sources) == 2 and sources[1].startswith("'sha256-")
        assert editor["connect-src"] == "'self'" and editor["object-src"] == "'none'"
        # The lab: its own scripts only; inline styles (the plots colour their lines with style attributes).
        assert pages["/lab/"]["script-src"] == "'self'" and pages["/lab/"]["style-src"] == "'self' 'unsafe-inline'"
        # JSON and errors: sandboxed, nothing may load.
        assert pages["/api/system_stats"] == pages["/api/nothing-here"] == policy(FILE_POLICY)


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
