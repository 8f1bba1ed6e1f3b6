"""What API clients expect of the WebSocket: sampler previews only when asked, SaveImageWebsocket's frames.

Stub nodes (tests/server/stub_nodes.py: SlowImage sends one preview per step) and ComfyUI's binary frame layout,
big-endian: [u32 event][u32 format][image], event 1 = PREVIEW_IMAGE, format 1 = JPEG, 2 = PNG; event 4 carries
[u32 length][JSON metadata] instead of the format for a client that announced supports_preview_metadata.
"""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from atelier.errors import AtelierError
from atelier.graph.nodes.image import SaveImageWebsocket
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import NodeContext, NodeSchema, Output
from atelier.server.app import create_app
from atelier.server.files import DataDir, OutputFiles
from atelier.server.prompt_queue import wants_previews
from tests.server.harness import async_test, is_type, post_prompt, receive, server
from tests.server.stub_nodes import graph, stub_registry


async def frames_of(client, ws, prompt: dict, client_id: str, **extra) -> list[bytes]:
    """The binary frames a prompt sends to `client_id` until it ends."""
    queued = await post_prompt(client, prompt, client_id=client_id, **extra)
    messages = await receive(ws, is_type("executing", node=None, prompt_id=queued["prompt_id"]))
    return [m for m in messages if isinstance(m, bytes)]


def test_wants_previews_follows_comfyui():
    assert wants_previews({"preview_method": "auto"}, "none") is True
    assert wants_previews({"preview_method": "latent2rgb"}, "none") is True
    assert wants_previews({"preview_method": "TAESD"}, "none") is True  # no tiny VAE here: the latent2rgb map
    assert wants_previews({"preview_method": "none"}, "auto") is False
    assert wants_previews({"preview_method": "default"}, "none") is False  # the editor's "default": the server's
    assert wants_previews({"preview_method": "default"}, "auto") is True
    assert wants_previews({}, "none") is False and wants_previews(None, "auto") is True
    assert wants_previews({"preview_method": "fancy"}, "none") is False  # unknown: the server's default (logged)


@async_test
async def test_previews_only_when_the_prompt_or_the_server_asks(tmp_path):
    async with server(tmp_path) as client:  # the server's default: none, as ComfyUI's
        ws = await client.ws_connect("/ws?clientId=script")
        await receive(ws, is_type("status"))
        steps = 3
        counts = []
        for colour, extra in [("red", {}), ("green", {"preview_method": "auto"}), ("blue", {"preview_method": "none"})]:
            frames = await frames_of(client, ws, graph(colour=colour, steps=steps), "script", extra_data=extra)
            counts.append(len(frames))
        assert counts == [0, steps, 0]
        await ws.close()
    async with server(tmp_path / "auto", preview_method="auto") as client:  # `atelier serve --preview-method auto`
        ws = await client.ws_connect("/ws?clientId=script")
        await receive(ws, is_type("status"))
        assert len(await frames_of(client, ws, graph(steps=2), "script")) == 2
        frames = await frames_of(
            client, ws, graph(colour="green", steps=2), "script", extra_data={"preview_method": "none"}
        )
        assert frames == []
        await ws.close()


def test_an_unknown_server_preview_method_is_refused(tmp_path):
    with pytest.raises(AtelierError, match="The preview method 'fast' is not known; expected one of none, auto"):
        create_app(stub_registry(OutputFiles(DataDir(tmp_path))), tmp_path, preview_method="fast")


class MakeTensor:
    """A batch of two solid images as IMAGE tensors, (2, 8, 16, 3) in [0, 1]: red, then blue."""

    SCHEMA = NodeSchema(name="MakeTensor", category="stub", outputs=[Output("IMAGE")])

    def run(self, ctx: NodeContext) -> tuple:
        images = torch.zeros(2, 8, 16, 3)
        images[0, ..., 0] = 1.0
        images[1, ..., 2] = 1.0
        return (images,)


def websocket_prompt() -> dict:
    return {
        "1": {"class_type": "MakeTensor", "inputs": {}},
        "ws": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }


@async_test
async def test_save_image_websocket_sends_each_image_as_a_png_frame(tmp_path):
    app = create_app(NodeRegistry([MakeTensor, SaveImageWebsocket]), tmp_path, static_root=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ws = await client.ws_connect("/ws?clientId=script")
        await receive(ws, is_type("status"))
        frames = await frames_of(client, ws, websocket_prompt(), "script")  # no preview_method: it still sends
        assert [struct.unpack(">II", f[:8]) for f in frames] == [(1, 2), (1, 2)]  # PREVIEW_IMAGE, PNG
        red, blue = (Image.open(io.BytesIO(f[8:])) for f in frames)
        assert red.format == "PNG" and red.size == (16, 8) and red.getpixel((0, 0)) == (255, 0, 0)
        assert blue.getpixel((3, 3)) == (0, 0, 255) and red.text == {}  # full size, no metadata
        # Never cached: the same prompt again sends the images again.
        assert len(await frames_of(client, ws, websocket_prompt(), "script")) == 2
        # A client that announced supports_preview_metadata gets event 4 with the node and the image type.
        await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        await receive(ws, is_type("feature_flags"))
        frames = await frames_of(client, ws, websocket_prompt(), "script")
        event, length = struct.unpack(">II", frames[0][:8])
        meta = json.loads(frames[0][8 : 8 + length])
        assert event == 4 and meta["node_id"] == "ws" and meta["image_type"] == "image/png"
        assert Image.open(io.BytesIO(frames[0][8 + length :])).size == (16, 8)
        await ws.close()
