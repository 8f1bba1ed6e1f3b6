"""Clients nobody here wrote, against a real `atelier serve` (a subprocess on a free port, the embedded model).

1. ComfyUI's own script_examples (tests/fixtures/comfyui_script_examples/, stored verbatim): each runs as it is
   but for the server's address, the checkpoint's name and the image size (512 -> 64), the three changes the
   issue allows; the test reads the `images` the script collected from its globals.
2. Two client libraries from PyPI, through their generate-and-fetch paths: comfy-api-simplified
   (`ComfyApiWrapper.queue_and_wait_images`) and comfy-catapult (`ComfyCatapult.Catapult`, then its remote-file
   API to fetch the image and to upload and fetch back a text file).

They need websocket-client (the script examples), comfy-api-simplified and comfy-catapult, which are test extras,
not dependencies of Atelier (`make test` installs them). The module runs in the normal suite, about a minute on two
quiet cores (a real server, real sampling); tests/server/test_previews.py checks the same protocol points with stub
nodes.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import runpy
import struct
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests.browser import atelier_server

EXAMPLES = Path(__file__).parents[1] / "fixtures" / "comfyui_script_examples"
SIZE = 64  # the examples ask for 512 x 512; the embedded model draws 128 natively, 64 keeps the test short


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[str, Path]:
    """(base URL, data directory) of a fresh `atelier serve`, for the whole module."""
    data_dir = tmp_path_factory.mktemp("atelier-data")
    with atelier_server(data_dir) as url:
        yield url, data_dir


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def example(name: str, url: str, folder: Path) -> dict:
    """Run one script example against `url` with the three allowed changes; its module globals."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    changed = text.replace("127.0.0.1:8188", url.removeprefix("http://"))
    changed = re.sub(r"v1-5-pruned-emaonly\.(safetensors|ckpt)", "embedded.safetensors", changed)
    changed = changed.replace('"height": 512', f'"height": {SIZE}').replace('"width": 512', f'"width": {SIZE}')
    # Exactly those lines differ: the address, the checkpoint, the two sides.
    differing = [a for a, b in zip(text.splitlines(), changed.splitlines(), strict=True) if a != b]
    assert len(differing) == 4, differing
    script = folder / name
    script.write_text(changed, encoding="utf-8")
    import websocket  # websocket-client: the examples' own dependency

    websocket.setdefaulttimeout(300)  # a socket that never answers fails the test instead of hanging it
    return runpy.run_path(str(script), run_name="__main__")


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def wait_for_history(url: str, count: int, timeout: float = 300) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        history = get_json(f"{url}/history")
        if len(history) >= count and all(entry["status"]["completed"] for entry in history.values()):
            return history
        time.sleep(0.2)
    raise AssertionError(f"{count} prompts did not finish in {timeout} s")


# ---- ComfyUI's script_examples ----


def test_basic_api_example_queues_the_default_workflow(served, tmp_path):
    pytest.importorskip("websocket")
    url, data_dir = served
    before = len(get_json(f"{url}/history"))
    example("basic_api_example.py", url, tmp_path)  # queues and returns, as the script does
    history = wait_for_history(url, before + 1)
    entry = next(e for e in history.values() if e["prompt"][2]["6"]["inputs"]["text"] == "masterpiece best quality man")
    assert entry["status"]["status_str"] == "success"
    (ref,) = entry["outputs"]["9"]["images"]
    assert ref["filename"].startswith("ComfyUI_") and ref["type"] == "output"
    saved = Image.open(data_dir / "output" / ref["filename"])
    assert saved.size == (SIZE, SIZE)
    assert json.loads(saved.text["prompt"])["3"]["inputs"]["seed"] == 5  # the script's seed, in the PNG


def test_both_websocket_examples_get_the_same_image(served, tmp_path):
    """websockets_api_example waits on the socket then fetches from /history and /view; the _ws_images one takes
    the pixels from SaveImageWebsocket's binary frames (out[8:], after the 8-byte header). Same prompt and seed:
    the same pixels, and no preview frame mixed in (the scripts sent no preview_method: ComfyUI's default, none)."""
    pytest.importorskip("websocket")
    url, _ = served
    fetched = example("websockets_api_example.py", url, tmp_path)["images"]
    (saved,) = fetched["9"]
    streamed = example("websockets_api_example_ws_images.py", url, tmp_path)["images"]
    (sent,) = streamed["save_image_websocket_node"]  # one frame: the image, no preview before it
    assert png(saved).size == png(sent).size == (SIZE, SIZE)
    assert png(sent).text == {}  # no metadata, as ComfyUI's node
    assert list(png(saved).convert("RGB").getdata()) == list(png(sent).convert("RGB").getdata())


def test_previews_only_when_asked(served):
    """Binary frames per prompt: none without preview_method (the server's default), one per step with "auto",
    and none again with "none"; the saved image is the same each time."""
    websocket = pytest.importorskip("websocket")
    url, _ = served
    prompt = json.loads((EXAMPLES / "basic_api_example.py").read_text().split('"""')[1])
    prompt["4"]["inputs"]["ckpt_name"] = "embedded.safetensors"
    prompt["5"]["inputs"].update(width=SIZE, height=SIZE)
    prompt["3"]["inputs"].update(steps=3)
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://{url.removeprefix('http://')}/ws?clientId={client_id}", timeout=300)
    frames = {}
    for seed, extra in enumerate([{}, {"preview_method": "auto"}, {"preview_method": "none"}, {}]):
        prompt["3"]["inputs"]["seed"] = 100 + seed  # a new seed: the sampler runs again
        body = json.dumps({"prompt": prompt, "client_id": client_id, "extra_data": extra}).encode()
        queued = json.loads(urllib.request.urlopen(urllib.request.Request(f"{url}/prompt", data=body)).read())
        binary = []
        while True:
            out = ws.recv()
            if isinstance(out, bytes):
                binary.append(out)
                continue
            message = json.loads(out)
            done = message["type"] == "executing" and message["data"]["node"] is None
            if done and message["data"]["prompt_id"] == queued["prompt_id"]:
                break
        frames[seed] = binary
    ws.close()
    assert [len(frames[i]) for i in range(4)] == [0, 3, 0, 0]
    event, image_format = struct.unpack(">II", frames[1][0][:8])  # no feature flags sent: event 1, JPEG
    assert (event, image_format) == (1, 1) and Image.open(io.BytesIO(frames[1][0][8:])).format == "JPEG"


# ---- client libraries from PyPI ----

API_PROMPT = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 7,
            "steps": 4,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
        "_meta": {"title": "KSampler"},
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "embedded.safetensors"},
        "_meta": {"title": "Load Checkpoint"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1},
        "_meta": {"title": "Empty Latent Image"},
    },
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a red house under a yellow sun", "clip": ["4", 1]},
        "_meta": {"title": "Positive"},
    },
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}, "_meta": {"title": "Negative"}},
    "8": {
        "class_type": "VAEDecode",
        "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
        "_meta": {"title": "VAE Decode"},
    },
    "9": {
        "class_type": "SaveImage",
        "inputs": {"filename_prefix": "client", "images": ["8", 0]},
        "_meta": {"title": "Save Image"},
    },
}


def test_comfy_api_simplified_generates_and_fetches_the_saved_image(served):
    """Its main call returns the binary frames it heard, else the output node's images from /history and /view:
    with previews only when asked, that is the saved PNG, not the sampler's preview JPEGs."""
    simplified = pytest.importorskip("comfy_api_simplified")
    url, data_dir = served
    api = simplified.ComfyApiWrapper(url)
    workflow = simplified.ComfyWorkflowWrapper(json.loads(json.dumps(API_PROMPT)))
    workflow.set_node_param("Positive", "text", "a blue tree")
    images = api.queue_and_wait_images(workflow, "Save Image")
    ((name, data),) = images.items()
    assert name.startswith("client_") and png(data).size == (SIZE, SIZE)
    assert (data_dir / "output" / name).read_bytes() == data


def test_comfy_catapult_runs_a_job_and_moves_files(served, tmp_path):
    catapult = pytest.importorskip("comfy_catapult.catapult")
    from anyio import Path as AsyncPath  # the library's file API takes anyio paths
    from comfy_catapult.api_client import ComfyAPIClient
    from comfy_catapult.remote_file_api_comfy import ComfySchemeRemoteFileAPI

    url, data_dir = served

    async def run() -> None:
        async with (
            ComfyAPIClient(comfy_api_url=url) as client,
            catapult.ComfyCatapult(comfy_client=client, debug_path=None) as scheduler,
        ):
            _, future = await scheduler.Catapult(
                job_id="atelier-job",
                prepared_workflow=json.loads(json.dumps(API_PROMPT)),
                important=["9"],
                use_future_api=True,
            )
            history = await asyncio.wait_for(future, 300)
        (ref,) = history["outputs"]["9"]["images"]
        remote = ComfySchemeRemoteFileAPI(comfy_api_urls=[url], overwrite=True)
        base = "comfy+" + url
        await remote.DownloadFile(
            untrusted_src_url=f"{base}/output/{ref['filename']}", dst_path=AsyncPath(tmp_path / "out.png")
        )
        # A text file (no image), uploaded into a subfolder given with a '..' that stays inside input/, as
        # comfy-catapult's own remote-file tests do; the answer names where it went.
        async with ComfyAPIClient(comfy_api_url=url) as client:
            stored = await client.PostUploadImage(
                folder_type="input", subfolder="a/../b", filename="n.txt", data=b"seed 7, four steps", overwrite=True
            )
        assert (stored.name, stored.subfolder, stored.type) == ("n.txt", "b", "input")
        await remote.DownloadFile(untrusted_src_url=f"{base}/input/b/n.txt", dst_path=AsyncPath(tmp_path / "back.txt"))

    asyncio.run(run())
    assert png((tmp_path / "out.png").read_bytes()).size == (SIZE, SIZE)
    assert (tmp_path / "back.txt").read_bytes() == b"seed 7, four steps"
    assert (data_dir / "input" / "b" / "n.txt").read_text() == "seed 7, four steps"
