"""Paths that try to leave their folder, uploads that are too big, not images or bombs, cross-origin writes."""

from __future__ import annotations

import io
import json
import struct
import zlib
from importlib.metadata import version

from aiohttp import FormData, WSServerHandshakeError
from PIL import Image

from atelier.server import app as app_module
from atelier.server.files import DataDir, OutputFiles, UnsafePathError, safe_join
from atelier.server.frontend import frontend_root
from atelier.server.settings import PRIVATE_DEFAULTS
from atelier.server.state import Limits
from tests.server.harness import async_test, server
from tests.server.stub_nodes import stub_registry


def png_bytes(size=(8, 8), colour=(255, 0, 0, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def with_claimed_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims another size (a decompression bomb announces itself this way)."""
    ihdr = struct.pack(">II", width, height) + png[24:29]
    chunk = b"IHDR" + ihdr
    return png[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def upload_form(data: bytes, filename: str, **fields: str) -> FormData:
    form = FormData()
    form.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


def test_safe_join_refuses_absolute_dotdot_and_symlinks_out(tmp_path):
    base = tmp_path / "output"
    base.mkdir()
    (tmp_path / "secret").mkdir()
    (base / "escape").symlink_to(tmp_path / "secret")
    assert safe_join(base, "a/b", "c.png") == base / "a" / "b" / "c.png"
    for bad, status, words in [
        ("/etc/passwd", 400, "is an absolute path"),
        ("C:\\Windows\\win.ini", 400, "is an absolute path"),
        ("../atelier.sqlite", 400, "contains '..'"),
        ("a/../../b", 400, "contains '..'"),
        ("escape/x.png", 403, "leads outside its folder through a symbolic link"),
    ]:
        try:
            safe_join(base, bad, what="file")
        except UnsafePathError as ex:
            assert ex.status == status and words in str(ex), (bad, str(ex))
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_output_files_number_and_never_overwrite(tmp_path):
    files = OutputFiles(DataDir(tmp_path))
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert files.save_image(red, "cats/tabby") == {
        "filename": "tabby_00001_.png",
        "subfolder": "cats",
        "type": "output",
    }
    (tmp_path / "output" / "cats" / "tabby_00007_.png").write_bytes(b"older file")
    assert files.save_image(red, "cats/tabby")["filename"] == "tabby_00008_.png"
    assert (tmp_path / "output" / "cats" / "tabby_00007_.png").read_bytes() == b"older file"
    assert files.write(b"x", "preview", "txt", kind="temp") == {
        "filename": "preview_00001_.txt",
        "subfolder": "",
        "type": "temp",
    }
    assert not list((tmp_path / "output" / "cats").glob(".tmp-*"))  # no temporary file left behind
    try:
        files.save_image(red, "../outside")
    except UnsafePathError as ex:
        assert "contains '..'" in str(ex)
    else:
        raise AssertionError("a prefix with '..' was accepted")


@async_test
async def test_view_refuses_paths_out_of_its_folder(tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes())
    async with server(tmp_path) as client:
        (tmp_path / "output" / "link").symlink_to(outside)
        (tmp_path / "output" / "ok.png").write_bytes(png_bytes())
        cases = [
            ({"filename": "../atelier.sqlite"}, 400, "contains '..'"),
            ({"filename": "/etc/passwd"}, 400, "is an absolute path"),
            ({"filename": "x.png", "subfolder": "../../"}, 400, "contains '..'"),
            ({"filename": "secret.png", "subfolder": "link"}, 403, "symbolic link"),
            ({"filename": "ok.png", "type": "models"}, 400, "not known"),
            ({"filename": "missing.png"}, 404, "does not exist"),
        ]
        for params, status, words in cases:
            resp = await client.get("/api/view", params=params)
            assert resp.status == status and words in await resp.text(), (params, resp.status)
        resp = await client.get("/api/view", params={"filename": "ok.png [output]", "type": "input"})
        assert resp.status == 200
        resp = await client.get("/view", params={"filename": "ok.png", "preview": "webp;50"})
        assert resp.content_type == "image/webp" and Image.open(io.BytesIO(await resp.read())).format == "WEBP"
        alpha = Image.open(
            io.BytesIO(await (await client.get("/view", params={"filename": "ok.png", "channel": "a"})).read())
        )
        assert alpha.mode == "RGBA" and alpha.getpixel((0, 0)) == (0, 0, 0, 255)
        rgb = Image.open(
            io.BytesIO(await (await client.get("/view", params={"filename": "ok.png", "channel": "rgb"})).read())
        )
        assert rgb.mode == "RGB"
        # userdata and uploads use the same guard
        assert (await client.get("/api/userdata/..%2Fatelier.sqlite")).status == 400
        assert (await client.get("/api/userdata", params={"dir": "../.."})).status == 400
        resp = await client.post("/api/upload/image", data=upload_form(png_bytes(), "a.png", subfolder="../output"))
        assert resp.status == 400 and "contains '..'" in await resp.text()
        # A '..' that stays inside input/ is taken back, as ComfyUI's normpath does; the reference says where.
        resp = await client.post("/api/upload/image", data=upload_form(png_bytes(), "b.png", subfolder="x/../y"))
        assert await resp.json() == {"name": "b.png", "subfolder": "y", "type": "input"}
        assert (tmp_path / "input" / "y" / "b.png").is_file()
        resp = await client.get("/api/view", params={"filename": "b.png", "subfolder": "x/../y", "type": "input"})
        assert resp.status == 200 and resp.content_type == "image/png"
        # HEAD /view: the same status and headers, no body.
        resp = await client.head("/api/view", params={"filename": "b.png", "subfolder": "y", "type": "input"})
        assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == b""
        assert int(resp.headers["Content-Length"]) == len(png_bytes())
        resp = await client.head("/view", params={"filename": "missing.png"})
        assert resp.status == 404


@async_test
async def test_upload_renames_on_clash_unless_identical(tmp_path):
    async with server(tmp_path) as client:
        red, blue = png_bytes(colour=(255, 0, 0, 255)), png_bytes(colour=(0, 0, 255, 255))
        names = []
        for data, extra in [(red, {}), (red, {}), (blue, {}), (blue, {}), (red, {"overwrite": "true"})]:
            resp = await client.post("/api/upload/image", data=upload_form(data, "photo.png", **extra))
            assert resp.status == 200
            names.append(await resp.json())
        assert [n["name"] for n in names] == ["photo.png", "photo.png", "photo (1).png", "photo (1).png", "photo.png"]
        assert names[0] == {"name": "photo.png", "subfolder": "", "type": "input"}
        assert (tmp_path / "input" / "photo (1).png").read_bytes() == blue
        resp = await client.post("/upload/image", data=upload_form(red, "pasted.png", subfolder="pasted"))
        assert await resp.json() == {"name": "pasted.png", "subfolder": "pasted", "type": "input"}
        assert (tmp_path / "input" / "pasted" / "pasted.png").read_bytes() == red

        # The mask editor: the original with the mask's alpha.
        mask = png_bytes(colour=(0, 0, 0, 0))
        ref = json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
        resp = await client.post("/api/upload/mask", data=upload_form(mask, "clipspace-mask.png", original_ref=ref))
        assert resp.status == 200
        masked = Image.open(tmp_path / "input" / "clipspace-mask.png")
        assert masked.getpixel((0, 0)) == (255, 0, 0, 0)


@async_test
async def test_upload_refuses_big_files_bombs_and_non_images(tmp_path):
    async with server(tmp_path, limits=Limits(max_upload_bytes=20_000)) as client:
        resp = await client.post("/api/upload/image", data=upload_form(b"\x89PNG" + bytes(30_000), "big.png"))
        assert resp.status == 413 and "larger than the" in await resp.text()
        # A file that is no image is stored as it came (as ComfyUI does) and comes back only as a download.
        resp = await client.post("/api/upload/image", data=upload_form(b"<script>alert(1)</script>", "notes.txt"))
        assert resp.status == 200 and await resp.json() == {"name": "notes.txt", "subfolder": "", "type": "input"}
        resp = await client.get("/api/view", params={"filename": "notes.txt", "type": "input"})
        assert await resp.read() == b"<script>alert(1)</script>"
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        (tmp_path / "input" / "notes.txt").unlink()
        bomb = with_claimed_size(png_bytes(), 10_000, 10_000)  # 100 Mpx announced, a few hundred bytes sent
        resp = await client.post("/api/upload/image", data=upload_form(bomb, "bomb.png"))
        text = await resp.text()
        assert (
            resp.status == 400
            and text == "The image 'bomb.png' is 10000x10000, more than the 67 megapixel limit for uploads."
        )
        huge = with_claimed_size(png_bytes(), 30_000, 30_000)  # PIL itself refuses this one on open
        resp = await client.post("/api/upload/image", data=upload_form(huge, "huge.png"))
        assert resp.status == 400 and "far more pixels than the 67 megapixel limit" in await resp.text()
        # Only the templates' example images (copied at start-up) are there: nothing refused was written.
        assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["atelier_example.png",
                                                                          "atelier_inpaint_example.png"]
        resp = await client.post("/api/upload/image", data={"subfolder": "x"})
        assert resp.status == 400


@async_test
async def test_cross_origin_writes_are_refused(tmp_path):
    async with server(tmp_path) as client:
        own = f"http://{client.host}:{client.port}"
        evil = {"Origin": "http://evil.example"}
        resp = await client.post("/api/settings", data=json.dumps({"Comfy.Locale": "xx"}), headers=evil)
        assert resp.status == 403 and "Cross-origin request refused" in await resp.text()
        assert (await client.post("/api/prompt", json={"prompt": {}}, headers=evil)).status == 403
        assert (await client.delete("/api/userdata/x.json", headers=evil)).status == 403
        assert (await (await client.get("/api/settings")).json()).get("Comfy.Locale") is None
        # Reads and same-origin writes are fine.
        assert (await client.get("/api/settings", headers=evil)).status == 200
        resp = await client.post("/api/settings", data=json.dumps({"Comfy.Locale": "fr"}), headers={"Origin": own})
        assert resp.status == 200
        # A foreign page may not open the WebSocket either, and a non-local Host name is refused (DNS rebinding).
        try:
            await client.ws_connect("/ws", headers=evil)
        except WSServerHandshakeError as ex:
            assert ex.status == 403
        else:
            raise AssertionError("a cross-origin WebSocket was accepted")
        resp = await client.get("/api/users", headers={"Host": f"rebind.example:{client.port}"})
        assert resp.status == 403 and "only answers to localhost" in await resp.text()


def test_private_defaults_match_the_frontend_bundle():
    """Each default must still name a setting the bundled frontend reads; a frontend upgrade that renames one
    would silently let the editor call out again."""
    bundle = "".join(p.read_text(encoding="utf-8") for p in (frontend_root() / "assets").glob("GraphView-*.js"))
    # The preview-method setting came after 1.27 (which sends no extra_data.preview_method at all).
    newer = {"Comfy.Execution.PreviewMethod"} if version("comfyui-frontend-package").startswith("1.27.") else set()
    for setting in set(PRIVATE_DEFAULTS) - newer:
        assert f'"{setting}"' in bundle, setting
    # The release check is skipped when the setting is off, or when the server lists --disable-api-nodes.
    release = bundle[bundle.index("async function fetchReleases()") :][:600]
    assert "if (!showVersionUpdates.value)" in release and '"--disable-api-nodes"' in release


def test_listen_prints_a_warning_and_binds_every_interface(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(app_module.web, "run_app", lambda app, host, port, print: seen.update(host=host, port=port))
    registry = stub_registry(OutputFiles(DataDir(tmp_path)))
    app_module.serve(port=9999, data_dir=tmp_path, registry=registry, listen=True)
    assert seen == {"host": "0.0.0.0", "port": 9999}
    assert "Anyone who can reach this machine can use Atelier" in capsys.readouterr().err
    app_module.serve(port=9998, data_dir=tmp_path, registry=registry)
    assert seen["host"] == "127.0.0.1" and capsys.readouterr().err == ""
