"""The lab's routes (atelier/server/lab.py) on the real nodes and the embedded model, plus its static files."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from atelier.lessons import parcours
from atelier.server import lab
from atelier.server.app import create_app, default_registry
from atelier.server.files import DataDir
from atelier.server.lab_graphs import view_graph
from atelier.server.state import STATE
from tests.server.harness import async_test

LAB = "/atelier/lab"


@contextlib.asynccontextmanager
async def lab_server(data_dir: Path) -> AsyncIterator[TestClient]:
    app = create_app(default_registry(DataDir(data_dir)), data_dir, static_root=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def scene(colour: tuple[int, int, int], size: int = 128) -> Image.Image:
    """A flat background with a coloured disc on the left, like the embedded model's world."""
    yy, xx = np.mgrid[:size, :size]
    pixels = np.full((size, size, 3), (70, 140, 70), np.uint8)
    pixels[(yy - size / 2) ** 2 + (xx - size / 4) ** 2 < (size / 6) ** 2] = colour
    return Image.fromarray(pixels)


async def error_of(resp) -> str:
    assert resp.status == 400, await resp.text()
    return (await resp.json())["error"]


# ---- options and graphs ----


@async_test
async def test_options_list_the_loras_and_embeddings_of_the_models_folder(tmp_path):
    data = DataDir(tmp_path)
    for kind, name in (("loras", "style.safetensors"), ("embeddings", "cat-toy.pt"), ("embeddings", "bad.bin")):
        (data.models / kind).mkdir(parents=True, exist_ok=True)
        (data.models / kind / name).write_bytes(b"")
    async with lab_server(tmp_path) as client:
        body = await (await client.get(f"{LAB}/options")).json()
    assert body["loras"] == ["style.safetensors"]
    assert body["embeddings"] == ["bad", "cat-toy"]


@async_test
async def test_options_give_the_teaching_defaults(tmp_path):
    async with lab_server(tmp_path) as client:
        body = await (await client.get(f"{LAB}/options")).json()
    assert body["native_sizes"] == {"embedded.safetensors": 128}  # the embedded model's own metadata
    assert body["defaults"] | {"prompt": None} == {
        "model": "embedded.safetensors",
        "prompt": None,
        "negative": "",
        "seed": 42,
        "steps": 20,
        "cfg": 7.5,
        "sampler": "euler",
        "scheduler": "normal",
        "width": 128,
        "height": 128,
        "batch": 1,
        "denoise": 1.0,
    }
    assert body["models"][0] == "embedded.safetensors"
    assert body["loras"] == [] and body["embeddings"] == []
    assert {"euler", "euler_ancestral"} <= set(body["samplers"]) and "karras" in body["schedulers"]
    assert {"AtelierFilmStripSampler", "AtelierLatentChannels", "AtelierCrossAttentionMap"} <= set(body["node_types"])


@async_test
async def test_generate_graph_is_the_classic_graph_and_valid(tmp_path):
    params = {"prompt": "a blue star", "seed": 7, "steps": 3, "cfg": 5.0, "sampler": "heun", "scheduler": "karras"}
    async with lab_server(tmp_path) as client:
        body = await (await client.post(f"{LAB}/graph", json={"params": params})).json()
    prompt = body["prompt"]
    assert [prompt[k]["class_type"] for k in prompt] == [
        "KSampler",
        "CheckpointLoaderSimple",
        "EmptyLatentImage",
        "CLIPTextEncode",
        "CLIPTextEncode",
        "VAEDecode",
        "SaveImage",
    ]
    sampler = prompt["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == (
        7,
        3,
        5.0,
        "heun",
        "karras",
    )
    assert prompt["6"]["inputs"]["text"] == "a blue star" and prompt["7"]["inputs"]["text"] == ""
    assert prompt["5"]["inputs"] == {"width": 128, "height": 128, "batch_size": 1}
    assert prompt["9"]["inputs"]["filename_prefix"] == "lab"
    assert len(body["workflow"]["nodes"]) == 7 and len(body["workflow"]["links"]) == 9


@async_test
async def test_graph_refuses_bad_parameters_with_one_sentence(tmp_path):
    cases = {
        "steps": ({"steps": 0}, "Steps must be a whole number from 1 to 10000, got 0."),
        "width": ({"width": 100}, "Width must be a positive multiple of 8, got 100."),
        "random": ({"seed": -1}, "Seed -1 (random) is drawn by the page before queuing"),
        "unknown": ({"colour": 1}, "Unknown generation parameter 'colour'"),
        "sampler": ({"sampler": "magic"}, "Sampler 'magic' is not known"),
        "denoise": ({"denoise": 0.5}, "Denoise below 1 needs an init image (img2img)"),
    }
    async with lab_server(tmp_path) as client:
        for name, (params, expected) in cases.items():
            message = await error_of(await client.post(f"{LAB}/graph", json={"params": params}))
            assert message.startswith(expected), (name, message)
        message = await error_of(await client.post(f"{LAB}/graph", json={"params": {}, "view": "xray"}))
        assert (
            message == "view 'xray' is not known; expected one of generate, filmstrip, convergence, latent, attention."
        )
        message = await error_of(
            await client.post(f"{LAB}/graph", data=b"{nope", headers={"Content-Type": "application/json"})
        )
        assert message == "The request body is not valid JSON; expected a JSON object."


@async_test
async def test_img2img_graph_loads_the_uploaded_image(tmp_path):
    async with lab_server(tmp_path) as client:
        body = await (
            await client.post(f"{LAB}/graph", json={"params": {"denoise": 0.6}, "init_image": "me.png"})
        ).json()
    prompt = body["prompt"]
    assert prompt["11"] == {"class_type": "LoadImage", "inputs": {"image": "me.png"}}
    assert prompt["5"]["class_type"] == "VAEEncode" and prompt["3"]["inputs"]["denoise"] == 0.6


@async_test
async def test_workflow_lays_out_any_api_prompt(tmp_path):
    prompt = view_graph(lab.generation_params({}), "latent").prompt
    async with lab_server(tmp_path) as client:
        body = await (await client.post(f"{LAB}/workflow", json={"prompt": prompt})).json()
        message = await error_of(await client.post(f"{LAB}/workflow", json={"prompt": []}))
    types = sorted(n["type"] for n in body["workflow"]["nodes"])
    assert types == sorted(p["class_type"] for p in prompt.values())
    assert message == "prompt must be an API-format graph {node_id: {class_type, inputs}}."


# ---- tokens and schedules ----


@async_test
async def test_tokens_show_ids_and_the_window(tmp_path):
    async with lab_server(tmp_path) as client:
        short = await (await client.get(f"{LAB}/tokens", params={"text": "a red circle"})).json()
        long = await (await client.get(f"{LAB}/tokens", params={"text": " ".join(["red circle"] * 40)})).json()
        message = await error_of(await client.get(f"{LAB}/tokens", params={"text": "x" * 2001}))
    assert [(t["text"], t["id"]) for t in short["tokens"]] == [("a", 320), ("red", 736), ("circle", 7117)]
    assert (short["count"], short["over"], short["window"], len(short["windows"])) == (3, 0, 77, 1)
    ids = [cell["id"] for cell in short["windows"][0]]
    assert ids[:5] == [49406, 320, 736, 7117, 49407] and ids[5:] == [49407] * 72
    assert (long["count"], long["over"], len(long["windows"])) == (80, 5, 2)
    assert message == "text is 2001 characters long; the token view reads at most 2000."


@async_test
async def test_the_token_view_shows_embedding_vectors_and_names_unknown_ones(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = DataDir(tmp_path).models / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.zeros(3, 768)}, str(folder / "cat-toy.safetensors"))
    async with lab_server(tmp_path) as client:
        text = "a (embedding:cat-toy:1.2) on embedding:nowhere grass"
        body = await (await client.get(f"{LAB}/tokens", params={"text": text})).json()
    shown = [(t["text"], t["id"], t["weight"]) for t in body["tokens"]]
    assert shown[1:4] == [("embedding:cat-toy", -1, 1.2), ("embedding:cat-toy#1", -2, 1.2),
                          ("embedding:cat-toy#2", -3, 1.2)]  # fmt: skip
    assert [t for t, _, _ in shown] == ["a", *[s[0] for s in shown[1:4]], "on", "grass"]
    assert body["unknown_embeddings"] == ["nowhere"]


@async_test
async def test_schedules_give_every_scheduler(tmp_path):
    async with lab_server(tmp_path) as client:
        body = await (await client.get(f"{LAB}/schedules", params={"steps": "5", "scheduler": "karras"})).json()
        bad = await error_of(await client.get(f"{LAB}/schedules", params={"steps": "0"}))
        unknown = await error_of(await client.get(f"{LAB}/schedules", params={"scheduler": "fast"}))
    assert body["current"] == "karras" and len(body["schedulers"]) == 9
    assert all(len(v) == 6 and v[-1] == 0.0 for v in body["schedulers"].values())
    assert body["schedulers"]["normal"] == [14.61464, 4.08608, 1.61558, 0.69515, 0.02917, 0.0]
    assert body["schedulers"]["karras"][:2] == [14.61464, 4.79653]
    assert bad == "steps must be a whole number from 1 to 1000, got 0."
    assert unknown.startswith("Scheduler 'fast' is not known")


@async_test
async def test_each_app_keeps_its_own_lab_models(tmp_path):
    async with lab_server(tmp_path / "a") as a, lab_server(tmp_path / "b") as b:
        assert (await a.get(f"{LAB}/tokens", params={"text": "red"})).status == 200
        lab_a, lab_b = a.server.app[STATE].lab, b.server.app[STATE].lab
        assert lab_a.tokenizer() is lab_a.tokenizer()  # loaded once, then kept
        assert lab_b.tokenizer() is not lab_a.tokenizer()  # no module-wide cache shared between apps


# ---- concept map, VAE round trip, compare (the embedded model) ----


@async_test
async def test_concepts_put_rouge_next_to_red(tmp_path):
    words = ["red", "rouge", "blue", "bleu", "circle", "star"]
    scene((220, 30, 30)).save(DataDir(tmp_path).input / "disc.png")
    async with lab_server(tmp_path) as client:
        body = await (await client.post(f"{LAB}/concepts", json={"words": words})).json()
        mixed = await (
            await client.post(
                f"{LAB}/concepts",
                json={"words": ["red", "blue"], "images": [{"filename": "disc.png", "type": "input", "label": "disc"}]},
            )
        ).json()
        few = await error_of(await client.post(f"{LAB}/concepts", json={"words": ["red", "blue"]}))
    nearest = {p["label"]: p["nearest"] for p in body["points"]}
    assert nearest["rouge"] == "red" and nearest["red"] == "rouge" and nearest["bleu"] == "blue"
    assert (
        body["dim"] == 128 and len(body["similarity"]) == 6 and body["similarity"][0][0] == pytest.approx(1, abs=1e-3)
    )
    assert 0 < body["explained"][1] <= body["explained"][0] < 1
    assert [(p["label"], p["kind"]) for p in mixed["points"]] == [("red", "text"), ("blue", "text"), ("disc", "image")]
    assert few == "Give at least 3 words or images in all: a map of fewer points shows nothing."


@async_test
async def test_vae_roundtrip_reports_compression(tmp_path):
    scene((220, 30, 30), 136).save(DataDir(tmp_path).input / "scene.png")
    async with lab_server(tmp_path) as client:
        body = await (await client.post(f"{LAB}/vae-roundtrip", json={"image": {"filename": "scene.png"}})).json()
        view = await client.get("/api/view", params={**body["reconstruction"]})
        rebuilt = Image.open(io.BytesIO(await view.read()))
        missing = await error_of(await client.post(f"{LAB}/vae-roundtrip", json={"image": {"filename": "no.png"}}))
        escape = await client.post(f"{LAB}/vae-roundtrip", json={"image": {"filename": "../atelier.sqlite"}})
        escape_error = (await escape.json())["error"]
    assert body["image_shape"] == [3, 136, 136] and body["latent_shape"] == [4, 17, 17]
    assert (body["pixel_values"], body["latent_values"], body["ratio_values"]) == (55488, 1156, 48.0)
    assert body["ratio_bytes_fp16"] == 24.0
    assert body["psnr_db"] > 25 and body["mean_abs_error"] < 15
    assert len(body["channels"]) == 4 and all(c["type"] == "temp" for c in body["channels"])
    assert view.status == 200 and rebuilt.size == (136, 136)
    assert missing == "The image 'no.png' does not exist in input/."
    assert escape.status == 400 and "'..'" in escape_error


@async_test
async def test_compare_counts_differing_pixels(tmp_path):
    data = DataDir(tmp_path)
    scene((220, 30, 30)).save(data.input / "a.png")
    scene((220, 30, 30)).save(data.input / "b.png")
    scene((30, 30, 220)).save(data.input / "c.png")
    scene((30, 30, 220), 64).save(data.input / "d.png")
    ref = lambda name: {"filename": name, "type": "input"}  # noqa: E731
    async with lab_server(tmp_path) as client:
        same = await (await client.post(f"{LAB}/compare", json={"a": ref("a.png"), "b": ref("b.png")})).json()
        other = await (await client.post(f"{LAB}/compare", json={"a": ref("a.png"), "b": ref("c.png")})).json()
        sizes = await error_of(await client.post(f"{LAB}/compare", json={"a": ref("a.png"), "b": ref("d.png")}))
    assert same == {"identical": True, "max_abs": 0, "mean_abs": 0.0, "differing_pixels": 0, "pixels": 16384}
    disc = int(
        (np.asarray(Image.open(data.input / "a.png")) != np.asarray(Image.open(data.input / "c.png"))).any(2).sum()
    )
    assert other["identical"] is False and other["max_abs"] == 190 and other["differing_pixels"] == disc
    assert sizes == "The two images differ in size (128x128 and 64x64)."


# ---- the page ----


@async_test
async def test_page_and_static_files(tmp_path):
    async with lab_server(tmp_path) as client:
        redirect = await client.get("/lab", allow_redirects=False)
        page = await client.get("/lab/")
        script = await client.get("/lab/lab.js")
        strings = await (await client.get("/lab/i18n/fr.json")).json()
        escape = await client.get("/lab/..%2F..%2Fpyproject.toml")
        missing = await client.get("/lab/nope.js")
        html = await page.text()
    assert redirect.status == 302 and redirect.headers["Location"] == "/lab/"
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="lab.js">' in html
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert strings["form.generate"] == "Générer"
    assert escape.status in (400, 403, 404) and missing.status == 404


def test_both_languages_have_every_key_the_page_uses():
    root = lab.LAB_ROOT
    en = json.loads((root / "i18n" / "en.json").read_text(encoding="utf-8"))
    fr = json.loads((root / "i18n" / "fr.json").read_text(encoding="utf-8"))
    assert set(en) == set(fr)
    used = set(re.findall(r'data-i18n(?:-title|-placeholder)?="([\w.]+)"', (root / "index.html").read_text()))
    for script in root.glob("*.js"):
        used |= set(re.findall(r'\bt\(\s*"([\w.]+)"', script.read_text()))
    assert used - set(en) == set(), sorted(used - set(en))
    same = {"ex.steps.title", "in.convergence.euler_ancestral", "in.attention.image"}  # the same in both languages
    assert not [k for k in en if en[k] == fr[k] and len(en[k]) > 12 and "{" not in en[k] and k not in same]


def test_both_languages_have_every_string_of_the_parcours():
    """The parcours builds its keys from its steps (pc.<step>.title, pc.open.<part>) and from the wire names of
    lessons/parcours.py (pc.wire.<name>): each exists in English and French, and the French is not the English."""
    root = lab.LAB_ROOT
    en = json.loads((root / "i18n" / "en.json").read_text(encoding="utf-8"))
    fr = json.loads((root / "i18n" / "fr.json").read_text(encoding="utf-8"))
    script = (root / "parcours.js").read_text()
    steps = re.findall(r'\{ id: "([\w-]+)", part: "(\w+)"', script)
    assert len(steps) == 13
    keys = {f"pc.{sid}.{what}" for sid, _ in steps for what in ("title", "text")}
    keys |= {f"pc.{what}.{part}" for _, part in steps for what in ("open", "part")}
    wires = re.findall(r'(?:missing\.append\(|return \[)f?"([\w{}]+)"', Path(parcours.__file__).read_text())
    wires = [w.replace("{side}", side) for w in wires for side in (("positive", "negative") if "{" in w else ("",))]
    assert {"sampler", "sampler_positive", "negative_clip", "denoise", "save"} <= set(wires)
    keys |= {f"pc.wire.{w}" for w in wires}
    assert keys - set(en) == set() and keys - set(fr) == set(), sorted((keys - set(en)) | (keys - set(fr)))
    assert [k for k in keys if en[k] == fr[k]] == []


@async_test
async def test_vocabulary_is_the_embedded_models_world_only(tmp_path):
    async with lab_server(tmp_path) as client:
        fr = await (await client.get(f"{LAB}/vocabulary", params={"lang": "fr"})).json()
        own = await (await client.get(f"{LAB}/vocabulary", params={"model": "mine.safetensors"})).json()
        composed = await (
            await client.get(f"{LAB}/compose", params={"lang": "fr", "kind": "sun", "colour": "yellow"})
        ).json()
        missing = await error_of(await client.get(f"{LAB}/compose", params={"kind": "sun"}))
    assert fr["known"] and fr["categories"] == ["objects", "colours", "sizes", "places", "backgrounds"]
    assert fr["choices"]["colours"][0] == {"name": "red", "label": "rouge", "forms": ["rouge"]}
    assert {"rouge", "red", "herbe", "l"} <= set(fr["words"]) and "chat" not in fr["words"]
    assert own == {"known": False}
    assert composed == {"prompt": "un soleil jaune"}
    assert missing.startswith("compose needs an object (kind) and a colour")


@async_test
async def test_errors_carry_a_message_key_for_the_page_to_translate(tmp_path):
    """The English sentence stays for the node editor and scripts; the key and params let the lab say it in French."""
    async with lab_server(tmp_path) as client:
        long = await client.get(f"{LAB}/tokens", params={"text": "x" * 2001})
        params = {**lab.TEACHING_DEFAULTS, "prompt": "un cercle rouge"}
        word = await client.post(f"{LAB}/graph", json={"params": params, "view": "attention", "words": ["chat"]})
        long_body, word_body = await long.json(), await word.json()
    assert long_body == {
        "error": "text is 2001 characters long; the token view reads at most 2000.",
        "message_key": "text_too_long",
        "params": {"length": 2001, "max": 2000},
    }
    assert word.status == 400 and word_body["message_key"] == "word_not_in_prompt"
    assert word_body["params"] == {"word": "chat", "words": "un, cercle, rouge"}
    assert word_body["error"].startswith("The word 'chat' is not in the prompt")
    strings = json.loads((lab.LAB_ROOT / "i18n" / "fr.json").read_text(encoding="utf-8"))
    assert {f"server.{body['message_key']}" for body in (long_body, word_body)} <= set(strings)
