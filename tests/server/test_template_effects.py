"""The bonus templates do what their note says, on the embedded model (issue 16, defect 7).

The inpainting template must paint "a big red circle" into the transparent hole of its example image and leave
the rest as it was. Measured on the saved image: the fraction of red pixels inside the hole, and the mean change
of the example's object (a yellow sun) outside it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.server.files import DataDir, OutputFiles
from atelier.server.frontend import TEMPLATES_DIR
from atelier.server.thumbnails import INPUTS_DIR

HOLE_RED = 0.2  # a big circle fills about 30% of the hole (56x80 pixels); plain grass gives 0
SUN_CHANGE = 30  # mean |change| (0-255) of the sun's pixels; a blue house next to a red circle turned dark (73)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from atelier.graph.catalog import default_registry

    data = DataDir(tmp_path_factory.mktemp("data"))
    data.install_inputs(INPUTS_DIR)
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    return registry, Executor(registry), files


def run_template(env, name: str, seed: int | None = None) -> Image.Image:
    """The template's graph as the editor would queue it (its own settings), with `seed` in every KSampler."""
    registry, executor, files = env
    prompt = ui_to_api(json.loads((TEMPLATES_DIR / f"{name}.json").read_text()), registry)
    if seed is not None:
        for node in prompt.values():
            if node["class_type"] == "KSampler":
                node["inputs"]["seed"] = seed
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    [ref] = [r for _, ui in log.payloads("executed") for r in ui["images"] if r["type"] == "output"]
    with Image.open(files.path(ref)) as image:
        return image.convert("RGB")


def inpaint_effect(image: Image.Image) -> tuple[float, float]:
    """(red fraction inside the hole, mean change of the example's object outside it)."""
    with Image.open(INPUTS_DIR / "atelier_inpaint_example.png") as example:
        hole = np.asarray(example)[..., 3] == 0  # (128, 128): alpha 0 is the mask
        original = np.asarray(example.convert("RGB")).astype(int)
    out = np.asarray(image).astype(int)
    red = (out[..., 0] > 150) & (out[..., 1] < 100) & (out[..., 2] < 100)
    grass = np.median(original[~hole], axis=0)
    sun = (np.abs(original - grass).sum(-1) > 60) & ~hole  # the pixels that are not grass, outside the hole
    assert sun.sum() > 100  # the example has its object
    return float(red[hole].mean()), float(np.abs(out - original)[sun].mean())


def test_inpaint_paints_a_red_circle_in_the_hole_with_its_default_seed(env):
    red, sun_change = inpaint_effect(run_template(env, "atelier_inpaint"))
    assert red > HOLE_RED and sun_change < SUN_CHANGE, (red, sun_change)


@pytest.mark.slow
def test_inpaint_paints_a_red_circle_at_five_seeds(env):
    effects = [inpaint_effect(run_template(env, "atelier_inpaint", seed)) for seed in range(1, 6)]
    assert all(red > HOLE_RED and change < SUN_CHANGE for red, change in effects), effects
