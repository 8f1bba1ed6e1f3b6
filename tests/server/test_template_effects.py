"""The bonus templates do what their note says, on the embedded model (issue 16, defect 7).

The inpainting template must paint "a big red circle" into the transparent hole of its example image and leave
the rest as it was. Measured on the saved image: the fraction of red pixels inside the hole, and the mean change
of the example's object (a yellow sun) outside it.

The hires fix template saves two 256 x 256 images of its 128 x 128 first pass: a plain bicubic upscale (node 16)
and the second pass, the latent enlarged 2x and denoised again (node 12). Its note says that this model, which
learned at 128 only, redraws each object at 256 (the flower melts into a blob) while the plain upscale keeps them.
Measured on the two saved images: the mean change of the objects' pixels from the plain upscale to the second pass
(the objects: the plain upscale's pixels far from its background colour).
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


def run_outputs(env, name: str, seed: int | None = None, **widgets) -> dict[str, Image.Image]:
    """The template's graph as the editor would queue it (its own settings), with `seed` in every KSampler and
    `widgets` ({"11.denoise": 0.25}) changed: {SaveImage node id: the image it saved}."""
    registry, executor, files = env
    prompt = ui_to_api(json.loads((TEMPLATES_DIR / f"{name}.json").read_text()), registry)
    if seed is not None:
        for node in prompt.values():
            if node["class_type"] == "KSampler":
                node["inputs"]["seed"] = seed
    for key, value in widgets.items():
        node_id, widget = key.split(".")
        prompt[node_id]["inputs"][widget] = value
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    log = EventLog()
    executor.execute(checked.prompt, checked.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    saved = {}
    for node_id, ui in log.payloads("executed"):
        for ref in ui["images"]:
            if ref["type"] == "output":
                with Image.open(files.path(ref)) as image:
                    saved[node_id] = image.convert("RGB")
    return saved


def run_template(env, name: str, seed: int | None = None) -> Image.Image:
    """The one image a template saves."""
    [image] = run_outputs(env, name, seed).values()
    return image


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


# ---- hires fix ----

# Mean |change| (0-255) of the objects' pixels from the plain upscale to the second pass. Measured on the template
# as shipped: 70.1, 53.5, 77.5, 51.3, 70.7 at seeds 1-5 (denoise 0.5) and 70.0 at its seed 11 with denoise 0.25.
REDRAWN = 40


def hires_effect(saved: dict[str, Image.Image]) -> tuple[float, float]:
    """(mean change of the objects from the plain upscale to the second pass, fraction of the image they cover)."""
    plain, second = (np.asarray(saved[node]).astype(int) for node in ("16", "12"))  # (256, 256, 3) each
    assert plain.shape == second.shape == (256, 256, 3)
    background = np.median(plain.reshape(-1, 3), axis=0)
    objects = np.abs(plain - background).sum(-1) > 90  # far from the background colour: the objects
    return float(np.abs(second - plain)[objects].mean()), float(objects.mean())


@pytest.mark.slow  # two passes, the second at 256 x 256: 390 s on this shared 2-core machine under load
def test_hires_fix_second_pass_redraws_the_objects_a_plain_upscale_keeps_with_its_default_seed(env):
    change, cover = hires_effect(run_outputs(env, "atelier_hires_fix"))
    assert cover > 0.02 and change > REDRAWN, (change, cover)


@pytest.mark.slow
def test_hires_fix_second_pass_redraws_the_objects_at_five_seeds_and_at_denoise_one_quarter(env):
    effects = [hires_effect(run_outputs(env, "atelier_hires_fix", seed)) for seed in range(1, 6)]
    print("hires fix, seeds 1-5 (object change, cover):", [(round(c, 1), round(f, 3)) for c, f in effects])
    assert sum(change > REDRAWN and cover > 0.02 for change, cover in effects) >= 4, effects
    quarter, _ = hires_effect(run_outputs(env, "atelier_hires_fix", **{"11.denoise": 0.25}))
    print("hires fix, default seed at denoise 0.25:", round(quarter, 1))
    assert quarter > REDRAWN, quarter
