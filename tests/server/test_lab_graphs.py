"""The lab's graphs (atelier/server/lab_graphs.py): valid prompts, every output named by its role, and the form's
limits taken from the node schemas. The page's side (views found through roles in a renumbered graph, the form's
attributes) runs in Chromium: tests/lab/test_lab_e2e.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from atelier.graph.validation import validate_prompt
from atelier.server import lab
from atelier.server.app import create_app, default_registry
from atelier.server.files import DataDir
from atelier.server.lab_graphs import PARAM_INPUTS, VIEWS, view_graph
from tests.server.harness import async_test

WORDS = ["red", "circle", "left"]

# What kind of node each role must be: the page shows frames, animations and texts differently.
ROLE_CLASSES = {
    "image": {"SaveImage", "PreviewImage"},
    "predicted_frames": {"PreviewImage"},
    "noisy_frames": {"PreviewImage"},
    "channels": {"PreviewImage"},
    "attention_map": {"PreviewImage"},
    "predicted_animation": {"SaveAnimatedWEBP"},
    "noisy_animation": {"SaveAnimatedWEBP"},
    "channel_stats": {"PreviewAny"},
}

# The roles each view's code in web/lab/ reads (inside.js, lab.js, exercises.js), with three words to map.
EXPECTED_ROLES = {
    "generate": {"image"},
    "filmstrip": {"noisy_frames", "predicted_frames", "noisy_animation", "predicted_animation"},
    "convergence": {
        "euler/predicted_frames",
        "euler/predicted_animation",
        "euler_ancestral/predicted_frames",
        "euler_ancestral/predicted_animation",
    },
    "latent": {"image", "channels", "channel_stats"},
    "attention": {"image", "attention_map/0", "attention_map/1", "attention_map/2"},
}


@contextlib.asynccontextmanager
async def lab_server(data_dir: Path) -> AsyncIterator[TestClient]:
    app = create_app(default_registry(DataDir(data_dir)), data_dir, static_root=None)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def test_every_view_graph_passes_validation(tmp_path):
    registry = default_registry(DataDir(tmp_path))
    params = lab.generation_params({"steps": 2})
    for view in VIEWS:
        prompt = view_graph(params, view, words=["red", "circle"]).prompt
        result = validate_prompt(prompt, registry, None)
        assert result.ok, (view, result.error, result.node_errors)
    strip = view_graph(params, "filmstrip").prompt
    assert strip["20"]["class_type"] == "AtelierFilmStripSampler" and strip["20"]["inputs"]["vae"] == ["4", 2]
    both = view_graph(params, "convergence").prompt
    assert [both[n]["inputs"]["sampler_name"] for n in ("20", "30")] == ["euler", "euler_ancestral"]
    attention = view_graph(params, "attention", words=["red", "circle"]).prompt
    assert [attention[n]["inputs"]["word"] for n in ("20", "30")] == ["red", "circle"]


@pytest.mark.parametrize(
    "params",
    [{}, {"batch": 3, "clip_skip": 2}, {"denoise": 0.6}],
    ids=["txt2img", "batch-clip-skip", "img2img"],
)
def test_every_output_node_has_a_role_of_its_kind(tmp_path, params):
    """Each view names exactly the outputs its page code reads, and each name points at an output node of the
    right class: a graph whose ids move (img2img adds nodes 11 and 12, clip skip node 10) keeps its names."""
    registry = default_registry(DataDir(tmp_path))
    init = "photo.png" if params.get("denoise", 1) < 1 else None
    for view in VIEWS:
        graph = view_graph(lab.generation_params(params), view, init_image=init, words=WORDS)
        assert set(graph.roles) == EXPECTED_ROLES[view], view
        outputs = {node for node, n in graph.prompt.items() if registry.schema(n["class_type"]).output_node}
        assert set(graph.roles.values()) == outputs and len(graph.roles) == len(outputs), view  # each named once
        for role, node in graph.roles.items():
            kind = "attention_map" if role.startswith("attention_map/") else role.rsplit("/", 1)[-1]
            assert graph.prompt[node]["class_type"] in ROLE_CLASSES[kind], (view, role)


def test_convergence_and_attention_roles_follow_their_sampler_and_word():
    params = lab.generation_params({})
    both = view_graph(params, "convergence")
    for name in ("euler", "euler_ancestral"):
        for role in ("predicted_frames", "predicted_animation"):
            source = both.prompt[both.roles[f"{name}/{role}"]]["inputs"]["images"][0]
            assert both.prompt[source]["inputs"]["sampler_name"] == name, (name, role)
    maps = view_graph(params, "attention", words=WORDS)
    for n, word in enumerate(WORDS):
        source = maps.prompt[maps.roles[f"attention_map/{n}"]]["inputs"]["images"][0]
        assert maps.prompt[source]["inputs"]["word"] == word


@async_test
async def test_graph_route_sends_the_roles_with_the_prompt(tmp_path):
    async with lab_server(tmp_path) as client:
        body = await (
            await client.post(f"{lab.API}/graph", json={"params": {}, "view": "attention", "words": ["red", "circle"]})
        ).json()
    expected = view_graph(lab.generation_params({}), "attention", words=["red", "circle"])
    assert body["roles"] == expected.roles == {"image": "19", "attention_map/0": "21", "attention_map/1": "31"}
    assert body["prompt"] == expected.prompt


@async_test
async def test_form_limits_are_the_node_schemas(tmp_path):
    registry = default_registry(DataDir(tmp_path))
    async with lab_server(tmp_path) as client:
        limits = (await (await client.get(f"{lab.API}/options")).json())["limits"]
    assert set(limits) == set(PARAM_INPUTS) == {"seed", "steps", "cfg", "denoise", "width", "height", "batch"}
    for param, (node, name) in PARAM_INPUTS.items():
        [inp] = [i for i in registry.require(node).SCHEMA.inputs if i.name == name]
        assert limits[param] == {"type": inp.type, "min": inp.min, "max": inp.max, "step": inp.step}, param
    # The figures, so that a copy of them anywhere else has something to disagree with.
    assert limits["steps"] == {"type": "INT", "min": 1, "max": 10000, "step": None}
    assert limits["cfg"] == {"type": "FLOAT", "min": 0.0, "max": 100.0, "step": 0.1}
    assert limits["width"] == limits["height"] == {"type": "INT", "min": 16, "max": 16384, "step": 8}
    assert limits["batch"]["max"] == 4096 and limits["seed"]["max"] == 2**64 - 1
    assert limits["denoise"] == {"type": "FLOAT", "min": 0.0, "max": 1.0, "step": 0.01}
