"""UI <-> API conversion: widgets by schema order, reroutes, primitives, notes, muted and bypassed nodes, files."""

import json

import pytest

from atelier.errors import InputError
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import WidgetSlot, api_to_ui, load_workflow, ui_to_api, widget_slots
from tests.graph import stub_nodes
from tests.graph.stub_nodes import stub_registry


@pytest.fixture()
def registry():
    stub_nodes.reset()
    return stub_registry()


def node(id, type, inputs=(), outputs=(), widgets=(), mode=0, **extra):
    return {
        "id": id,
        "type": type,
        "pos": [0, 0],
        "size": [300, 100],
        "flags": {},
        "order": id,
        "mode": mode,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "properties": {},
        "widgets_values": list(widgets),
        **extra,
    }


def ui_workflow():
    """Loader -> Reroute -> Sampler.model; Primitive -> Sampler.seed; Constant -> bypassed Add -> Sampler.latent;
    Sampler -> Save and -> a muted Collect -> Collect; plus a Note."""
    nodes = [
        node(
            1,
            "Loader",
            outputs=[
                {"name": "MODEL", "type": "MODEL", "links": [1]},
                {"name": "CLIP", "type": "CLIP", "links": [2]},
                {"name": "VAE", "type": "VAE", "links": []},
            ],
            widgets=["a.safetensors"],
        ),
        node(
            2,
            "Encode",
            inputs=[{"name": "clip", "type": "CLIP", "link": 2}],
            outputs=[{"name": "CONDITIONING", "type": "CONDITIONING", "links": [3]}],
            widgets=["cat"],
        ),
        node(3, "Constant", outputs=[{"name": "value", "type": "INT", "links": [4]}], widgets=[5]),
        node(
            4,
            "Sampler",
            inputs=[
                {"name": "model", "type": "MODEL", "link": 5},
                {"name": "positive", "type": "CONDITIONING", "link": 3},
                {"name": "latent", "type": "INT", "link": 6},
                {"name": "seed", "type": "INT", "link": 7, "widget": {"name": "seed"}},
            ],
            outputs=[{"name": "LATENT", "type": "LATENT", "links": [8, 9]}],
            widgets=[0, "randomize", 2, 8.0, "euler", 1.0],
            title="My sampler",
        ),
        node(5, "Save", inputs=[{"name": "images", "type": "*", "link": 8}], widgets=["x"]),
        node(
            10,
            "PrimitiveNode",
            outputs=[{"name": "INT", "type": "INT", "links": [7], "widget": {"name": "seed"}}],
            widgets=[42, "fixed"],
        ),
        node(
            11,
            "Reroute",
            inputs=[{"name": "", "type": "*", "link": 1}],
            outputs=[{"name": "", "type": "MODEL", "links": [5]}],
        ),
        node(
            12,
            "Add",
            mode=4,
            inputs=[{"name": "a", "type": "INT", "link": 4, "widget": {"name": "a"}}],
            outputs=[{"name": "sum", "type": "INT", "links": [6]}],
            widgets=[0, 3],
        ),
        node(
            13,
            "Collect",
            mode=2,
            inputs=[{"name": "value", "type": "*", "link": 9}],
            outputs=[{"name": "*", "type": "*", "links": [10]}],
        ),
        node(14, "Note", widgets=["remember the seed"]),
        node(15, "Collect", inputs=[{"name": "value", "type": "*", "link": 10}]),
    ]
    links = [
        [1, 1, 0, 11, 0, "MODEL"],
        [2, 1, 1, 2, 0, "CLIP"],
        [3, 2, 0, 4, 1, "CONDITIONING"],
        [4, 3, 0, 12, 0, "INT"],
        [5, 11, 0, 4, 0, "MODEL"],
        [6, 12, 0, 4, 2, "INT"],
        [7, 10, 0, 4, 3, "INT"],
        [8, 4, 0, 5, 0, "LATENT"],
        [9, 4, 0, 13, 0, "LATENT"],
        [10, 13, 0, 15, 0, "*"],
    ]
    return {
        "last_node_id": 15,
        "last_link_id": 10,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


EXPECTED = {
    "1": {"inputs": {"ckpt_name": "a.safetensors"}, "class_type": "Loader", "_meta": {"title": "Loader"}},
    "2": {"inputs": {"text": "cat", "clip": ["1", 1]}, "class_type": "Encode", "_meta": {"title": "Encode"}},
    "3": {"inputs": {"value": 5}, "class_type": "Constant", "_meta": {"title": "Integer constant"}},
    "4": {
        "inputs": {
            "seed": 42,
            "steps": 2,
            "cfg": 8.0,
            "sampler_name": "euler",
            "denoise": 1.0,
            "model": ["1", 0],
            "positive": ["2", 0],
            "latent": ["3", 0],
        },
        "class_type": "Sampler",
        "_meta": {"title": "My sampler"},
    },
    "5": {"inputs": {"filename_prefix": "x", "images": ["4", 0]}, "class_type": "Save", "_meta": {"title": "Save"}},
    "15": {"inputs": {}, "class_type": "Collect", "_meta": {"title": "Collect"}},
}


def test_widget_slots_follow_schema_order(registry):
    assert widget_slots(registry.schema("Sampler")) == [
        WidgetSlot("seed", "value"),
        WidgetSlot("seed", "control"),
        WidgetSlot("steps", "value"),
        WidgetSlot("cfg", "value"),
        WidgetSlot("sampler_name", "value"),
        WidgetSlot("denoise", "value"),
    ]
    # forceInput inputs are sockets; an image_upload combo is followed by its button.
    assert widget_slots(registry.schema("Flags")) == [
        WidgetSlot("image", "value"),
        WidgetSlot("image", "upload"),
        WidgetSlot("enabled", "value"),
        WidgetSlot("scale", "value"),
    ]


def test_ui_to_api(registry):
    prompt = ui_to_api(ui_workflow(), registry)
    assert prompt == EXPECTED
    # The only problem left is the Collect whose source was muted.
    result = validate_prompt(prompt, registry)
    assert result.outputs == ["5"] and list(result.node_errors) == ["15"]
    assert result.node_errors["15"]["errors"][0]["type"] == "required_input_missing"


def test_bypass_without_matching_input_drops_the_link(registry):
    workflow = ui_workflow()
    workflow["nodes"][7]["inputs"][0]["type"] = "FLOAT"  # the bypassed Add has no INT input any more
    assert "latent" not in ui_to_api(workflow, registry)["4"]["inputs"]


def test_an_input_for_a_widget_the_node_no_longer_has_is_dropped(registry):
    """A converted widget whose name the node's schema lacks (renamed in ComfyUI since the file was saved; the
    frontend's browser_tests/assets/inputs/renamed_converted_widget.json): the editor drops the input on load, so
    the link from the PrimitiveNode is not queued."""
    workflow = ui_workflow()
    workflow["nodes"][3]["inputs"][3]["name"] = workflow["nodes"][3]["inputs"][3]["widget"]["name"] = "noise_seed"
    inputs = ui_to_api(workflow, registry)["4"]["inputs"]
    assert "noise_seed" not in inputs and inputs["seed"] == 0  # the widget's own value, not the primitive's 42


def test_old_files_without_control_values(registry):
    workflow = ui_workflow()
    workflow["nodes"][3]["widgets_values"] = [7, 2, 8.0, "heun", 0.5]  # no "randomize" entry
    workflow["nodes"][3]["inputs"].pop()  # seed is a widget again
    inputs = ui_to_api(workflow, registry)["4"]["inputs"]
    assert (inputs["seed"], inputs["sampler_name"], inputs["denoise"]) == (7, "heun", 0.5)


def test_api_to_ui_layout_and_widgets(registry):
    prompt = {k: v for k, v in EXPECTED.items() if k != "15"}
    workflow = api_to_ui(prompt, registry)
    assert workflow["version"] == 0.4 and workflow["last_node_id"] == 5 and workflow["last_link_id"] == 5
    by_id = {n["id"]: n for n in workflow["nodes"]}
    sampler = by_id[4]
    assert sampler["widgets_values"] == [42, "fixed", 2, 8.0, "euler", 1.0]
    assert sampler["title"] == "My sampler" and "title" not in by_id[1]
    assert [i["name"] for i in sampler["inputs"]] == ["model", "positive", "latent"]
    assert by_id[1]["outputs"][1] == {"name": "CLIP", "type": "CLIP", "links": [1], "slot_index": 1}
    # Columns by depth: Loader and Constant, then Encode, then Sampler, then Save.
    columns = {i: n["pos"][0] for i, n in by_id.items()}
    assert columns[1] == columns[3] < columns[2] < columns[4] < columns[5]
    assert by_id[1]["pos"][1] != by_id[3]["pos"][1]
    assert workflow["links"] == [
        [1, 1, 1, 2, 0, "CLIP"],
        [2, 1, 0, 4, 0, "MODEL"],
        [3, 2, 0, 4, 1, "CONDITIONING"],
        [4, 3, 0, 4, 2, "INT"],
        [5, 4, 0, 5, 0, "LATENT"],
    ]


def test_linked_widget_becomes_a_widget_input(registry):
    prompt = {
        "1": {"class_type": "Constant", "inputs": {"value": 3}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 4}},
        "3": {"class_type": "Collect", "inputs": {"value": ["2", 0]}},
    }
    workflow = api_to_ui(prompt, registry)
    add = next(n for n in workflow["nodes"] if n["id"] == 2)
    assert add["inputs"] == [{"name": "a", "type": "INT", "link": 1, "widget": {"name": "a"}}]
    assert add["widgets_values"] == [0, 4]  # the linked widget keeps its default
    assert ui_to_api(workflow, registry) == {
        k: {**v, "_meta": {"title": registry.schema(v["class_type"]).display_name or v["class_type"]}}
        for k, v in prompt.items()
    }


def test_round_trips(registry):
    api = ui_to_api(ui_workflow(), registry)
    assert ui_to_api(api_to_ui(api, registry), registry) == api
    flags = {
        "7": {
            "class_type": "Flags",
            "inputs": {"image": "y.png", "enabled": False, "scale": 0.5},
            "_meta": {"title": "Flags"},
        },
        "8": {"class_type": "Collect", "inputs": {"value": ["7", 1]}, "_meta": {"title": "Collect"}},
    }
    workflow = api_to_ui(flags, registry)
    assert next(n for n in workflow["nodes"] if n["id"] == 7)["widgets_values"] == ["y.png", "image", False, 0.5]
    assert ui_to_api(workflow, registry) == flags


def test_non_numeric_ids_are_renumbered(registry):
    prompt = {
        "a": {"class_type": "Constant", "inputs": {"value": 1}},
        "b": {"class_type": "Collect", "inputs": {"value": ["a", 0]}},
    }
    workflow = api_to_ui(prompt, registry)
    assert [n["id"] for n in workflow["nodes"]] == [1, 2] and workflow["links"] == [[1, 1, 0, 2, 0, "INT"]]
    assert ui_to_api(workflow, registry)["2"]["inputs"] == {"value": ["1", 0]}


def test_load_workflow_files(registry, tmp_path):
    api_file = tmp_path / "api.json"
    api_file.write_text(json.dumps(EXPECTED))
    loaded = load_workflow(api_file, registry)
    assert loaded.source == "api" and loaded.prompt == EXPECTED and len(loaded.workflow["nodes"]) == 6

    ui_file = tmp_path / "ui.json"
    ui_file.write_text(json.dumps(ui_workflow()))
    loaded = load_workflow(ui_file, registry)
    assert loaded.source == "ui" and loaded.prompt == EXPECTED and loaded.workflow == ui_workflow()

    body = tmp_path / "body.json"
    body.write_text(json.dumps({"prompt": EXPECTED, "client_id": "x"}))
    assert load_workflow(body, registry).prompt == EXPECTED

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="neither an API prompt nor an editor workflow"):
        load_workflow(bad, registry)
    with pytest.raises(InputError, match="does not exist"):
        load_workflow(tmp_path / "missing.json", registry)


def test_load_workflow_from_png(registry, tmp_path):
    from PIL import Image

    from atelier.images import save_png

    image = Image.new("RGB", (8, 8))
    both = save_png(
        image, tmp_path / "both.png", {"prompt": json.dumps(EXPECTED), "workflow": json.dumps(ui_workflow())}
    )
    loaded = load_workflow(both, registry)
    assert loaded.source == "png" and loaded.prompt == EXPECTED and loaded.workflow == ui_workflow()

    only_ui = save_png(image, tmp_path / "ui.png", {"workflow": json.dumps(ui_workflow())})
    assert load_workflow(only_ui, registry).prompt == EXPECTED

    only_api = save_png(image, tmp_path / "api.png", {"prompt": json.dumps(EXPECTED)})
    assert load_workflow(only_api, registry).workflow["nodes"][0]["type"] == "Loader"

    bare = save_png(image, tmp_path / "bare.png")
    with pytest.raises(InputError, match="has no embedded workflow or prompt"):
        load_workflow(bare, registry)
