"""The %...% patterns of filename_prefix: the editor's (%date:...%, %Name.widget%, filled by ui_to_api) and the
server's (%width%, %height%, %year%..., filled when SaveImage saves), as ComfyUI and its frontend fill them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from PIL import Image

from atelier.graph.catalog import default_registry
from atelier.graph.executor import EventLog, Executor
from atelier.graph.filename_patterns import editor_replacements, format_date, server_variables
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles

NOW = datetime(2025, 3, 1, 9, 5, 7)
DEFAULT_GRAPH = Path(__file__).parents[1] / "fixtures" / "comfyui_workflows" / "default_graph.json"


def test_dates_follow_the_frontends_tokens():
    assert format_date("yyyy-MM-dd", NOW) == "2025-03-01"
    assert format_date("yy.M.d h:m:s", NOW) == "25.3.1 9:5:7"
    assert format_date("hh-mm-ss", NOW) == "09-05-07"
    assert format_date("yyy", NOW) == "yyy"  # no token: left as written


def test_editor_replacements():
    widgets = {("KSampler", "seed"): 42, ("Notes", "text"): 'a/b:c*"d"'}

    def widget_value(name, widget):
        return widgets.get((name, widget))

    assert editor_replacements("%date:yyyy-MM-dd%/img_%KSampler.seed%", widget_value, NOW) == "2025-03-01/img_42"
    assert editor_replacements("%Notes.text%", widget_value, NOW) == "a_b_c__d_"  # a value cannot add a folder
    # Unknown nodes, widgets and one-word patterns stay as written (%width% is the server's).
    assert editor_replacements("%Nowhere.seed%_%KSampler.cfg%_%width%", widget_value, NOW) == (
        "%Nowhere.seed%_%KSampler.cfg%_%width%"
    )


def test_server_variables():
    assert server_variables("cat_%width%x%height%", 512, 768, NOW) == "cat_512x768"
    assert server_variables("%year%/%month%%day%_%hour%%minute%%second%", 8, 8, NOW) == "2025/0301_090507"
    assert server_variables("plain", 8, 8, NOW) == "plain"


def test_ui_to_api_fills_the_editors_patterns_from_the_workflows_widgets(tmp_path):
    """The frontend's default graph with a prefix naming widgets by type ("Node name for S&R", which the editor
    gives every node on load) and by title."""
    data = DataDir(tmp_path)
    registry = default_registry(data.root, OutputFiles(data))
    workflow = json.loads(DEFAULT_GRAPH.read_text(encoding="utf-8"))
    save = next(n for n in workflow["nodes"] if n["type"] == "SaveImage")
    save["widgets_values"] = ["%date:yyyy-MM-dd%/%KSampler.steps%_%Load Checkpoint.ckpt_name%_%My latent.width%"]
    next(n for n in workflow["nodes"] if n["type"] == "EmptyLatentImage")["title"] = "My latent"
    prompt = ui_to_api(workflow, registry, now=NOW)
    assert prompt["9"]["inputs"]["filename_prefix"] == "2025-03-01/20_v1-5-pruned-emaonly-fp16.safetensors_512"


def test_save_image_fills_the_servers_variables(tmp_path):
    data = DataDir(tmp_path)
    files = OutputFiles(data)
    Image.new("RGB", (24, 16), (200, 30, 30)).save(data.input / "red.png")
    registry = default_registry(data.root, files)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "sizes/%width%x%height%"}},
    }
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    log = EventLog()
    Executor(registry).execute(checked.prompt, checked.outputs, listener=log)
    [(_, ui)] = log.payloads("executed")
    assert ui["images"] == [{"filename": "24x16_00001_.png", "subfolder": "sizes", "type": "output"}]
