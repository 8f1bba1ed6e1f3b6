"""Subgraphs: a workflow whose nodes live inside subgraph definitions becomes the prompt the editor would queue.

The fixture (tests/fixtures/subgraphs/sd15_subgraph.json) is written here in the structure of ComfyUI's own
subgraph templates (Comfy-Org/workflow_templates, templates/01_get_started_text_to_image.json, frontend 1.36):
`definitions.subgraphs` with uuid ids, input and output boundary nodes -10 and -20, link objects, `linkIds`,
`properties.proxyWidgets` on the instance. It is an SD1.5 txt2img whose sampling sits in a subgraph (instance 83),
with a nested subgraph for the VAE decode (instance 7 inside it), a Reroute and a bypassed node on the negative
prompt, a Note, and the sampler's steps promoted to a widget on the instance (its own proxyWidgets entry
["-1", "steps"], so that frontend 1.58 reads the instance's widgets_values as we do: tests/e2e/test_editor.py
queues this file from the editor and compares). Legacy group nodes
(`extra.groupNodes`, "workflow>Name" instances, inner nodes queued as "12:0", "12:1"...) are checked at the end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from atelier.errors import InputError
from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles

FIXTURE = Path(__file__).parents[1] / "fixtures" / "subgraphs" / "sd15_subgraph.json"

# What the editor queues for the fixture, written out by hand: inner ids are "instance:inner" paths.
EXPECTED = {
    "4": {
        "inputs": {"ckpt_name": "embedded.safetensors"},
        "class_type": "CheckpointLoaderSimple",
        "_meta": {"title": "Load Checkpoint"},
    },
    "83:13": {
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
        "class_type": "EmptyLatentImage",
        "_meta": {"title": "Empty Latent Image"},
    },
    "83:27": {
        "inputs": {"text": "a red house under a yellow sun", "clip": ["4", 1]},
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "CLIP Text Encode (Prompt)"},
    },
    "83:31": {
        "inputs": {"text": "", "clip": ["4", 1]},
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "CLIP Text Encode (Prompt)"},
    },
    "83:3": {
        "inputs": {
            "seed": 42,
            "steps": 2,  # the instance's widget for the subgraph input "steps", not the inner 20
            "cfg": 7.5,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["83:27", 0],
            "negative": ["83:31", 0],  # through the Reroute and the bypassed ConditioningSetArea
            "latent_image": ["83:13", 0],
        },
        "class_type": "KSampler",
        "_meta": {"title": "KSampler"},
    },
    "83:7:8": {
        "inputs": {"samples": ["83:3", 0], "vae": ["4", 2]},
        "class_type": "VAEDecode",
        "_meta": {"title": "VAE Decode"},
    },
    "60": {
        "inputs": {"filename_prefix": "subgraph", "images": ["83:7:8", 0]},
        "class_type": "SaveImage",
        "_meta": {"title": "Save Image"},
    },
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = DataDir(tmp_path_factory.mktemp("data"))
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    return registry, files


def workflow() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_a_subgraph_workflow_expands_into_the_editors_prompt(env):
    registry, _ = env
    prompt = ui_to_api(workflow(), registry)
    assert prompt == EXPECTED
    checked = validate_prompt(prompt, registry)
    assert checked.ok and checked.outputs == ["60"], checked.error or checked.node_errors


def test_the_expanded_prompt_runs_and_saves_the_image(env):
    registry, files = env
    log = EventLog()
    result = Executor(registry).execute(ui_to_api(workflow(), registry), ["60"], log)
    assert result.status == "success", result.error
    assert "83:7:8" in result.executed and log.payloads("progress")[-1] == ("83:3", 2, 2)  # two steps, as promoted
    (ref,) = result.ui["60"]["images"]
    assert Image.open(files.path(ref)).size == (64, 64)


def test_promoted_widget_values_on_the_instance_override_the_inner_ones(env):
    registry, _ = env
    changed = workflow()
    instance = next(n for n in changed["nodes"] if n["id"] == 83)
    # One value per proxyWidgets entry, in its order (frontend 1.58's pickHostValue): first the instance's own
    # "steps" widget (["-1", "steps"]), then the inner widgets it shows.
    instance["widgets_values"] = [3, "a blue tree", 128, 96, 7, "fixed"]
    prompt = ui_to_api(changed, registry)
    assert prompt["83:27"]["inputs"]["text"] == "a blue tree"
    assert (prompt["83:13"]["inputs"]["width"], prompt["83:13"]["inputs"]["height"]) == (128, 96)
    assert prompt["83:3"]["inputs"]["seed"] == 7 and "control_after_generate" not in prompt["83:3"]["inputs"]
    assert prompt["83:3"]["inputs"]["steps"] == 3
    # A shorter list leaves the rest to the inner nodes, as 1.58 does (an index it lacks is a "hole").
    instance["widgets_values"] = [3, "a blue tree"]
    prompt = ui_to_api(changed, registry)
    assert prompt["83:27"]["inputs"]["text"] == "a blue tree" and prompt["83:13"]["inputs"]["width"] == 64
    assert prompt["83:3"]["inputs"]["seed"] == 42
    # Without the subgraph-input widget, the unconnected input leaves the inner widget's value.
    for input_slot in instance["inputs"]:
        input_slot.pop("widget", None)
    del instance["properties"]["proxyWidgets"][0]
    instance["widgets_values"] = ["a blue tree", 128, 96, 7, "fixed"]
    prompt = ui_to_api(changed, registry)
    assert prompt["83:27"]["inputs"]["text"] == "a blue tree" and prompt["83:13"]["inputs"]["height"] == 96
    assert prompt["83:3"]["inputs"]["steps"] == 20


def test_host_values_follow_proxy_widgets_as_frontend_1_58_reads_them(env):
    """A file whose instance lists the value of its subgraph-input widget but no ["-1", name] proxy for it: 1.58
    gives value 0 to both the input widget and the first proxy (seen in Chromium: the prompt text became 2)."""
    registry, _ = env
    legacy = workflow()
    instance = next(n for n in legacy["nodes"] if n["id"] == 83)
    del instance["properties"]["proxyWidgets"][0]
    prompt = ui_to_api(legacy, registry)
    assert prompt["83:3"]["inputs"]["steps"] == 2 and prompt["83:27"]["inputs"]["text"] == 2


def test_muted_and_bypassed_instances(env):
    registry, _ = env
    muted = workflow()
    next(n for n in muted["nodes"] if n["id"] == 83)["mode"] = 2
    prompt = ui_to_api(muted, registry)
    assert sorted(prompt) == ["4", "60"] and "images" not in prompt["60"]["inputs"]  # nothing inside runs


def test_a_subgraph_that_contains_itself_is_refused(env):
    registry, _ = env
    looped = workflow()
    decode = looped["definitions"]["subgraphs"][1]
    inner = copy.deepcopy(next(n for n in looped["definitions"]["subgraphs"][0]["nodes"] if n["id"] == 7))
    decode["nodes"].append(inner)  # the decode subgraph holds an instance of itself
    decode["links"][2] = {
        "id": 3,
        "origin_id": 7,
        "origin_slot": 0,
        "target_id": -20,
        "target_slot": 0,
        "type": "IMAGE",
    }
    with pytest.raises(InputError, match="nests subgraphs more than 32 deep; expected a subgraph that does not"):
        ui_to_api(looped, registry)


# ---- legacy group nodes (extra.groupNodes, frontends before subgraphs) ----


def group_workflow() -> dict:
    """The classic SD1.5 graph with everything but the checkpoint and the save in a group node "Sampling" (id 10),
    as the editor of 2024 saved it: inner nodes keep the link ids of the graph they were made from."""
    inner = [
        {
            "type": "CLIPTextEncode",
            "index": 0,
            "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [4]}],
            "widgets_values": ["a cat"],
        },
        {
            "type": "CLIPTextEncode",
            "index": 1,
            "inputs": [{"name": "clip", "type": "CLIP", "link": 5}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [6]}],
            "widgets_values": [""],
        },
        {
            "type": "EmptyLatentImage",
            "index": 2,
            "inputs": [],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}],
            "widgets_values": [512, 512, 1],
        },
        {
            "type": "KSampler",
            "index": 3,
            "inputs": [
                {"name": "model", "type": "MODEL", "link": 1},
                {"name": "positive", "type": "CONDITIONING", "link": 4},
                {"name": "negative", "type": "CONDITIONING", "link": 6},
                {"name": "latent_image", "type": "LATENT", "link": 2},
            ],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7]}],
            "widgets_values": [156680208700286, "randomize", 20, 8, "euler", "normal", 1],
        },
        {
            "type": "VAEDecode",
            "index": 4,
            "inputs": [{"name": "samples", "type": "LATENT", "link": 7}, {"name": "vae", "type": "VAE", "link": 8}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [9]}],
            "widgets_values": [],
        },
    ]
    group = {
        "nodes": inner,
        "links": [
            [0, 0, 3, 1, 6, "CONDITIONING"],
            [1, 0, 3, 2, 7, "CONDITIONING"],
            [2, 0, 3, 3, 5, "LATENT"],
            [3, 0, 4, 0, 3, "LATENT"],
            [None, 1, 0, 0, 4, "CLIP"],
        ],
        "external": [[4, 0, "IMAGE"]],
    }
    instance = {
        "id": 10,
        "type": "workflow>Sampling",
        "mode": 0,
        "inputs": [
            {"name": "clip", "type": "CLIP", "link": 11},
            {"name": "CLIPTextEncode clip", "type": "CLIP", "link": 12},
            {"name": "model", "type": "MODEL", "link": 13},
            {"name": "vae", "type": "VAE", "link": 14},
        ],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [15]}],
        # the inner widgets in order, control_after_generate after the seed
        "widgets_values": ["a red house", "blurry", 64, 64, 1, 9, "fixed", 2, 6.5, "euler", "normal", 1],
    }
    return {
        "last_node_id": 10,
        "last_link_id": 15,
        "nodes": [
            {
                "id": 4,
                "type": "CheckpointLoaderSimple",
                "mode": 0,
                "inputs": [],
                "widgets_values": ["embedded.safetensors"],
                "outputs": [
                    {"name": "MODEL", "type": "MODEL", "links": [13]},
                    {"name": "CLIP", "type": "CLIP", "links": [11, 12]},
                    {"name": "VAE", "type": "VAE", "links": [14]},
                ],
            },
            instance,
            {
                "id": 9,
                "type": "SaveImage",
                "mode": 0,
                "inputs": [{"name": "images", "type": "IMAGE", "link": 15}],
                "outputs": [],
                "widgets_values": ["grouped"],
            },
        ],
        "links": [
            [11, 4, 1, 10, 0, "CLIP"],
            [12, 4, 1, 10, 1, "CLIP"],
            [13, 4, 0, 10, 2, "MODEL"],
            [14, 4, 2, 10, 3, "VAE"],
            [15, 10, 0, 9, 0, "IMAGE"],
        ],
        "extra": {"groupNodes": {"Sampling": group}},
        "version": 0.4,
    }


def test_a_legacy_group_node_expands_into_index_ids_and_runs(env):
    registry, files = env
    prompt = ui_to_api(group_workflow(), registry)
    assert sorted(prompt) == ["10:0", "10:1", "10:2", "10:3", "10:4", "4", "9"]
    assert prompt["10:0"]["inputs"] == {"text": "a red house", "clip": ["4", 1]}
    assert prompt["10:1"]["inputs"] == {"text": "blurry", "clip": ["4", 1]}
    assert prompt["10:2"]["inputs"] == {"width": 64, "height": 64, "batch_size": 1}
    assert prompt["10:3"]["inputs"] == {
        "seed": 9,
        "steps": 2,
        "cfg": 6.5,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1,
        "model": ["4", 0],
        "positive": ["10:0", 0],
        "negative": ["10:1", 0],
        "latent_image": ["10:2", 0],
    }
    assert prompt["10:4"]["inputs"] == {"samples": ["10:3", 0], "vae": ["4", 2]}
    assert prompt["9"]["inputs"] == {"filename_prefix": "grouped", "images": ["10:4", 0]}
    result = Executor(registry).execute(prompt, ["9"], EventLog())
    assert result.status == "success", result.error
    assert Image.open(files.path(result.ui["9"]["images"][0])).size == (64, 64)


def test_a_group_whose_external_list_holds_node_objects_still_expands(env):
    """ComfyUI's template hidream_e1_full.json (comfyui-workflow-templates 0.1.30) saved node objects in a group's
    `external` list instead of [index, slot, type]: such entries are left out, not a TypeError."""
    registry, _ = env
    workflow = group_workflow()
    group = workflow["extra"]["groupNodes"]["Sampling"]
    group["external"] = [[{"type": "VAEDecode", "inputs": []}], *group["external"]]
    group["links"].append([{"type": "Reroute"}, 0, 4, 0, 9, "LATENT"])
    prompt = ui_to_api(workflow, registry)
    assert prompt == ui_to_api(group_workflow(), registry)
