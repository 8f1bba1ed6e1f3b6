"""The txt2img template: a valid UI workflow whose graph converts to the prompt one expects, with no placeholder."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from atelier.graph.executor import EventLog, Executor
from atelier.graph.registry import NodeRegistry
from atelier.graph.schema import Input, NodeSchema, Output
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles
from atelier.server.frontend import TEMPLATES_DIR, template_index
from atelier.server.thumbnails import INPUTS_DIR, with_links_of


def _node(name, inputs, outputs=(), output_node=False):
    schema = NodeSchema(name=name, inputs=inputs, outputs=outputs, output_node=output_node)
    return type(name, (), {"SCHEMA": schema, "run": lambda self, ctx, **kw: ()})


def comfy_like_registry() -> NodeRegistry:
    """The seven core nodes with ComfyUI's input names, order and ranges (reference section 5), no behaviour."""
    return NodeRegistry(
        [
            _node(
                "CheckpointLoaderSimple",
                [Input("ckpt_name", "COMBO", options=["embedded.safetensors"])],
                [Output("MODEL"), Output("CLIP"), Output("VAE")],
            ),
            _node(
                "CLIPTextEncode",
                [Input("text", "STRING", multiline=True), Input("clip", "CLIP")],
                [Output("CONDITIONING")],
            ),
            _node(
                "EmptyLatentImage",
                [
                    Input("width", "INT", default=512, min=16, max=16384),
                    Input("height", "INT", default=512, min=16, max=16384),
                    Input("batch_size", "INT", default=1, min=1, max=4096),
                ],
                [Output("LATENT")],
            ),
            _node(
                "KSampler",
                [
                    Input("model", "MODEL"),
                    Input("seed", "INT", default=0, min=0, max=2**64 - 1, control_after_generate=True),
                    Input("steps", "INT", default=20, min=1, max=10000),
                    Input("cfg", "FLOAT", default=8.0, min=0.0, max=100.0),
                    Input("sampler_name", "COMBO", options=["euler", "heun"]),
                    Input("scheduler", "COMBO", options=["normal", "karras"]),
                    Input("positive", "CONDITIONING"),
                    Input("negative", "CONDITIONING"),
                    Input("latent_image", "LATENT"),
                    Input("denoise", "FLOAT", default=1.0, min=0.0, max=1.0),
                ],
                [Output("LATENT")],
            ),
            _node("VAEDecode", [Input("samples", "LATENT"), Input("vae", "VAE")], [Output("IMAGE")]),
            _node("SaveImage", [Input("images", "IMAGE"), Input("filename_prefix", "STRING")], output_node=True),
        ]
    )


def test_txt2img_template_converts_to_the_classic_prompt():
    workflow = json.loads((TEMPLATES_DIR / "atelier_txt2img.json").read_text())
    prompt = ui_to_api(workflow, comfy_like_registry())
    assert prompt["4"]["inputs"] == {"ckpt_name": "embedded.safetensors"}
    assert prompt["5"]["inputs"] == {"width": 128, "height": 128, "batch_size": 1}
    sampler = prompt["3"]["inputs"]
    assert {k: sampler[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")} == {
        "seed": 42,
        "steps": 20,
        "cfg": 7.5,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
    }
    assert sampler["model"] == ["4", 0] and sampler["positive"] == ["6", 0] and sampler["negative"] == ["7", 0]
    assert sampler["latent_image"] == ["5", 0]
    assert prompt["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert prompt["9"]["inputs"] == {"images": ["8", 0], "filename_prefix": "Atelier"}
    assert prompt["6"]["inputs"]["text"] and prompt["7"]["inputs"]["clip"] == ["4", 1]
    result = validate_prompt(prompt, comfy_like_registry())
    assert result.ok and result.outputs == ["9"] and result.node_errors == {}
    # Node ids, link ids and the links listed on both ends agree.
    assert workflow["last_node_id"] == max(n["id"] for n in workflow["nodes"])
    assert workflow["last_link_id"] == max(link[0] for link in workflow["links"])
    for link_id, origin, slot, target, target_slot, kind in workflow["links"]:
        src = next(n for n in workflow["nodes"] if n["id"] == origin)
        dst = next(n for n in workflow["nodes"] if n["id"] == target)
        assert link_id in src["outputs"][slot]["links"] and dst["inputs"][target_slot]["link"] == link_id
        assert src["outputs"][slot]["type"] == kind == dst["inputs"][target_slot]["type"]


def test_every_listed_template_has_a_thumbnail():
    index = template_index(TEMPLATES_DIR)
    names = [t["name"] for t in index[0]["templates"]]
    assert names == ["atelier_txt2img", "atelier_img2img", "atelier_inpaint", "atelier_hires_fix",
                     "atelier_custom_sampling", "atelier_puzzle"]  # fmt: skip
    for name in names:
        with Image.open(TEMPLATES_DIR / f"{name}-1.webp") as thumb:
            assert thumb.format == "WEBP" and thumb.size == (512, 512)


TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its `pos`


@pytest.mark.parametrize("path", sorted(TEMPLATES_DIR.glob("atelier_*.json")), ids=lambda p: p.stem)
def test_no_two_nodes_of_a_template_overlap(path):
    """A learner opening a template sees every node whole: no box (title bar included) covers another."""
    boxes = {}  # "KSampler 3" -> (left, top, right, bottom)
    for n in json.loads(path.read_text())["nodes"]:
        (x, y), (width, height) = n["pos"], n["size"]
        boxes[f"{n['type']} {n['id']}"] = (x, y - TITLE_HEIGHT, x + width, y + height)

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    names = list(boxes)
    assert [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if overlap(boxes[a], boxes[b])] == []


# name -> the size of the image each SaveImage node writes
TEMPLATE_OUTPUTS = {
    "atelier_txt2img": {"9": (128, 128)},
    "atelier_img2img": {"9": (128, 128)},
    "atelier_inpaint": {"9": (128, 128)},
    "atelier_hires_fix": {"12": (128, 128), "16": (128, 128)},
    "atelier_custom_sampling": {"9": (128, 128)},
}


@pytest.fixture(scope="module")
def real_env(tmp_path_factory):
    """The real nodes on the embedded model, in a data directory set up as the server does (example inputs)."""
    from atelier.graph.catalog import default_registry

    data = DataDir(tmp_path_factory.mktemp("data"))
    assert data.install_inputs(INPUTS_DIR) == ["atelier_example.png", "atelier_inpaint_example.png"]
    assert data.install_inputs(INPUTS_DIR) == []  # never twice, never over the user's files
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    return registry, Executor(registry), files


@pytest.mark.parametrize("name", list(TEMPLATE_OUTPUTS))
def test_template_runs_on_the_embedded_model(real_env, name):
    """Each template validates against the real nodes and runs (with 2 steps per sampler to stay fast)."""
    registry, executor, files = real_env
    prompt = ui_to_api(json.loads((TEMPLATES_DIR / f"{name}.json").read_text()), registry)
    for node in prompt.values():
        if node["class_type"] in ("KSampler", "BasicScheduler"):
            node["inputs"]["steps"] = 2
    checked = validate_prompt(prompt, registry)
    assert checked.ok and checked.node_errors == {}, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    sizes = {}
    for node_id, ui in log.payloads("executed"):
        for ref in ui["images"]:
            if ref["type"] == "output":
                with Image.open(files.path(ref)) as image:
                    sizes[node_id] = image.size
    assert sizes == TEMPLATE_OUTPUTS[name]


def test_inpaint_example_has_a_transparent_hole():
    with Image.open(INPUTS_DIR / "atelier_inpaint_example.png") as image:
        alpha = image.getchannel("A")
        assert image.size == (128, 128) and alpha.getpixel((30, 60)) == 0 and alpha.getpixel((100, 60)) == 255


def test_puzzle_has_the_txt2img_nodes_and_no_link():
    puzzle = json.loads((TEMPLATES_DIR / "atelier_puzzle.json").read_text())
    txt2img = json.loads((TEMPLATES_DIR / "atelier_txt2img.json").read_text())
    assert puzzle["links"] == [] and all(i["link"] is None for n in puzzle["nodes"] for i in n.get("inputs", []))
    nodes = {n["id"]: (n["type"], n["widgets_values"]) for n in puzzle["nodes"] if n["type"] != "Note"}
    assert nodes == {n["id"]: (n["type"], n["widgets_values"]) for n in txt2img["nodes"]}
    solved = with_links_of(puzzle, txt2img)
    assert ui_to_api(solved, comfy_like_registry()) == ui_to_api(txt2img, comfy_like_registry())
