"""Node schemas and the object_info they produce (the shape ComfyUI's editor reads)."""

import json

import pytest

from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeSchema, Output
from tests.graph import stub_nodes
from tests.graph.stub_nodes import stub_registry


@pytest.fixture()
def registry():
    stub_nodes.reset()
    return stub_registry()


def test_object_info_of_a_sampler(registry):
    info = registry.object_info("Sampler")
    assert json.loads(json.dumps(info)) == info  # plain JSON
    assert info == {
        "Sampler": {
            "input": {
                "required": {
                    "model": ["MODEL"],
                    "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}],
                    "steps": ["INT", {"default": 3, "min": 1, "max": 100}],
                    "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
                    "sampler_name": [["euler", "heun"]],
                    "positive": ["CONDITIONING"],
                    "latent": ["INT", {"forceInput": True}],
                },
                "optional": {"denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]},
            },
            "input_order": {
                "required": ["model", "seed", "steps", "cfg", "sampler_name", "positive", "latent"],
                "optional": ["denoise"],
            },
            "output": ["LATENT"],
            "output_is_list": [False],
            "output_name": ["LATENT"],
            "name": "Sampler",
            "display_name": "Sampler",
            "description": "",
            "python_module": "nodes",
            "category": "stub/sampling",
            "output_node": False,
            "output_tooltips": [""],
        }
    }
    # Key order matches ComfyUI's node_info.
    assert list(info["Sampler"]) == [
        "input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
        "description", "python_module", "category", "output_node", "output_tooltips",
    ]  # fmt: skip


def test_object_info_options_tooltips_hidden_and_lists(registry):
    info = registry.object_info()
    assert list(info) == [cls.SCHEMA.name for cls in stub_nodes.ALL]
    constant = info["Constant"]
    assert constant["display_name"] == "Integer constant" and constant["description"] == "Outputs its value."
    assert constant["input"]["required"]["value"] == [
        "INT",
        {"default": 0, "min": -1000, "max": 1000, "tooltip": "The number to output."},
    ]
    assert constant["output_name"] == ["value"] and constant["output_tooltips"] == ["The same number."]
    assert info["Encode"]["input"]["required"]["text"] == [
        "STRING",
        {"default": "", "multiline": True, "dynamicPrompts": True},
    ]
    save = info["Save"]
    assert save["output_node"] is True and save["output"] == []
    assert save["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert save["input_order"] == {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]}
    assert info["Range"]["output_is_list"] == [True]
    assert info["Flags"]["input"]["required"]["image"] == [["x.png", "y.png"], {"image_upload": True}]
    assert info["Flags"]["input"]["optional"]["extra"] == ["INT", {"forceInput": True}]
    assert registry.object_info("Nope") == {}


def test_dynamic_options_are_read_on_every_call(registry):
    assert registry.object_info("Loader")["Loader"]["input"]["required"]["ckpt_name"][0] == stub_nodes.CHECKPOINTS
    stub_nodes.CHECKPOINTS.append("new.safetensors")
    try:
        assert "new.safetensors" in registry.object_info("Loader")["Loader"]["input"]["required"]["ckpt_name"][0]
    finally:
        stub_nodes.CHECKPOINTS.remove("new.safetensors")


def test_registry_rules():
    registry = NodeRegistry()
    registry.add(stub_nodes.Add)
    registry.add(stub_nodes.Add)  # the same class twice is fine
    assert "Add" in registry and len(registry) == 1 and registry.get("Add") is stub_nodes.Add

    class OtherAdd:
        SCHEMA = NodeSchema(name="Add")

        def run(self, ctx):
            return ()

    with pytest.raises(ValueError, match="Two node classes are named 'Add'"):
        registry.add(OtherAdd)
    with pytest.raises(TypeError, match="needs a SCHEMA"):
        registry.add(int)
    with pytest.raises(Exception, match="The node type 'Nope' is not known"):
        registry.require("Nope")


def test_schema_checks_itself():
    with pytest.raises(ValueError, match="a COMBO needs options"):
        Input("x", "COMBO")
    with pytest.raises(ValueError, match="hidden input must have one of the types"):
        Input("x", "INT", hidden=True)
    with pytest.raises(ValueError, match="declares an input name twice"):
        NodeSchema(name="N", inputs=[Input("a", "INT"), Input("a", "FLOAT")])
    assert Output("IMAGE").label == "IMAGE" and Output("IMAGE", name="pixels").label == "pixels"
