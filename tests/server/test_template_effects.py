"""The bonus templates do what their note says, on the embedded model (issue 16, defect 7).

The inpainting template must paint "a big red circle" into the transparent hole of its example image and leave
the rest as it was. Measured on the saved image: the fraction of red pixels inside the hole, and the mean change
of the example's object (a yellow sun) outside it.

The hires fix template saves two 128 x 128 images of its 112 x 112 first pass: a plain bicubic upscale (node 16)
and the second pass, the latent enlarged to 128 and denoised again from half way (node 12). Its note says that at
the size the model knows the second pass sharpens each shape where the first pass put it, while the plain upscale
only enlarges the soft shapes. Measured on the two saved images: the second pass is sharper (variance of the
Laplacian), its coarse colour layout is the plain upscale's, every object the project's judge (the attribute
classifier of `atelier eval`) reads in the plain upscale is still in its cell with its colour, and the judge scores
no fewer of the prompt's points.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.graph.executor import EventLog, Executor
from atelier.graph.validation import validate_prompt
from atelier.graph.workflow import ui_to_api
from atelier.imaging import uint8_to_signed
from atelier.models.library import EMBEDDED_EXTRAS_PATH
from atelier.server.files import DataDir, OutputFiles
from atelier.server.frontend import TEMPLATES_DIR, localized_workflow
from atelier.server.thumbnails import INPUTS_DIR
from atelier.world.eval_run import load_classifier
from atelier.world.evaluate import read_images, score
from atelier.world.scene import ObjectSpec, RelationSpec, SceneSpec

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


def run_outputs(env, name: str, seed: int | None = None, lang: str = "en", **widgets) -> dict[str, Image.Image]:
    """The template's graph as the editor would queue it (its own settings, in `lang`), with `seed` in every KSampler
    and `widgets` ({"11.denoise": 0.25}) changed: {SaveImage node id: the image it saved}."""
    registry, executor, files = env
    workflow = json.loads((TEMPLATES_DIR / f"{name}.json").read_text()) if lang == "en" else None
    prompt = ui_to_api(workflow or localized_workflow(TEMPLATES_DIR, name, lang), registry)
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

# Measured on the template as shipped (seed 7), as (sharpness ratio, layout correlation, objects in place, the
# judge's points plain -> second pass, of 6). English: default 1.82, 0.97, yes, 6 -> 6; seeds 1-5: 1.29, 1.56, 1.74,
# 1.97, 1.26, layout 0.95-0.98, every object in place, points 3->6, 6->6, 3->6, 6->6, 6->6; seeds 6-11 all but
# seed 10 (1.14, the tree read one cell off). French: default 1.76, 0.97, yes, 6 -> 6; seeds 1-5 all but seed 4
# (the star becomes a yellow tree). The prompt matters: with "a pink flower next to a small brown house on the
# grass" the same design passes at 2 of seeds 1-5 (the second pass turns an object into another one, or sharpens
# too little).
# Smaller first passes do worse: from 96 x 96 the second pass keeps the objects in place at 5 of 15 (seeds 1-5, three
# prompts), from 64 x 64 at 1 of 15 (the first pass is a smudge: the judge finds 12% of the prompts' points).
SHARPER = 1.2  # the second pass's Laplacian variance over the plain upscale's
LAYOUT = 0.9  # correlation of the two images' 8 x 8 block colours; another scene of the prompt: 0.3-0.8
STAR_TREE = SceneSpec(
    (ObjectSpec("star", "yellow"), ObjectSpec("tree", "green")), "sand", (RelationSpec(0, "above", 1),)
)


@pytest.fixture(scope="module")
def judge():
    return load_classifier(EMBEDDED_EXTRAS_PATH, torch.device("cpu"))


def laplacian_variance(image: np.ndarray) -> float:
    """The variance of the 4-neighbour Laplacian of the grey image: high-frequency energy, what a blur takes away."""
    grey = image @ np.array([0.299, 0.587, 0.114])  # (H, W)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def block_layout(a: np.ndarray, b: np.ndarray, n: int = 8) -> float:
    """Correlation of the two images' mean colours over an n x n grid of blocks: where the colours are."""
    x, y = (im.reshape(n, im.shape[0] // n, n, im.shape[1] // n, 3).mean((1, 3)).ravel() for im in (a, b))
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def hires_effect(judge, saved: dict[str, Image.Image]) -> tuple[float, float, bool, tuple[int, int]]:
    """(sharpness ratio, layout correlation, every object of the plain upscale still in its cell with its colour,
    the judge's points for the plain upscale and for the second pass)."""
    plain, second = (np.asarray(saved[node]).astype(float) for node in ("16", "12"))  # (128, 128, 3) each
    assert plain.shape == second.shape == (128, 128, 3)
    batch = torch.from_numpy(np.stack([plain, second])).permute(0, 3, 1, 2)  # (2, 3, 128, 128), 0-255
    before, after = read_images(judge, uint8_to_signed(batch))
    in_place = {(o.cell, o.colour) for o in before.objects} <= {(o.cell, o.colour) for o in after.objects}
    points = (score(before, STAR_TREE)[0], score(after, STAR_TREE)[0])
    return laplacian_variance(second) / laplacian_variance(plain), block_layout(plain, second), in_place, points


def finishes_in_place(effect: tuple[float, float, bool, tuple[int, int]]) -> bool:
    sharper, layout, in_place, (before, after) = effect
    return sharper > SHARPER and layout > LAYOUT and in_place and after >= before


def test_hires_fix_second_pass_sharpens_the_objects_in_place_with_its_default_seed(env, judge):
    for lang in ("en", "fr"):
        effect = hires_effect(judge, run_outputs(env, "atelier_hires_fix", lang=lang))
        assert finishes_in_place(effect), (lang, effect)


def test_hires_fix_second_pass_sharpens_the_objects_in_place_at_five_seeds(env, judge):
    effects = [hires_effect(judge, run_outputs(env, "atelier_hires_fix", seed)) for seed in range(1, 6)]
    # Five runs at 112 then 128: 6 s on this CPU, not slow.
    assert sum(finishes_in_place(effect) for effect in effects) >= 4, effects
