"""graph/nodes/masks.py without a model: each mask node against what ComfyUI's comfy_extras/nodes_mask.py computes
(GrowMask against scipy.ndimage's grey dilation and erosion, which ComfyUI calls), and one inpainting graph that
shapes LoadImage's mask before VAEEncodeForInpaint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from atelier.errors import InputError
from atelier.graph.nodes.masks import (
    CropMask,
    FeatherMask,
    GrowMask,
    ImageToMask,
    InvertMask,
    MaskComposite,
    MaskToImage,
    SolidMask,
    ThresholdMask,
)
from atelier.limits import MAX_BATCH_PIXELS
from tests.graph.test_compose import CTX


def soft_masks(batch: int = 2, height: int = 9, width: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tapered", [True, False])
@pytest.mark.parametrize("expand", [3, -2, 1, 0])
def test_grow_mask_is_scipys_grey_dilation_or_erosion_repeated(expand, tapered):
    masks = soft_masks()
    c = 0 if tapered else 1
    footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    expected = []
    for m in masks.numpy():
        for _ in range(abs(expand)):
            m = (ndimage.grey_dilation if expand > 0 else ndimage.grey_erosion)(m, footprint=footprint)
        expected.append(m)
    (out,) = GrowMask().run(CTX, masks, expand, tapered)
    assert out.shape == masks.shape
    torch.testing.assert_close(out, torch.from_numpy(np.stack(expected)))


def test_grow_mask_grows_a_dot_into_a_diamond_or_a_square():
    dot = torch.zeros(1, 7, 7)
    dot[0, 3, 3] = 1.0
    (diamond,) = GrowMask().run(CTX, dot, 2, True)
    (square,) = GrowMask().run(CTX, dot, 2, False)
    assert diamond.sum() == 13 and square.sum() == 25  # |dx| + |dy| <= 2 against max(|dx|, |dy|) <= 2
    (back,) = GrowMask().run(CTX, square, -2, False)
    assert torch.equal(back, dot)
    (huge,) = GrowMask().run(CTX, dot, 16384, True)  # stops once the mask is full, at H + W steps
    assert torch.equal(huge, torch.ones(1, 7, 7))


def test_feather_mask_ramps_from_each_edge_inwards():
    (out,) = FeatherMask().run(CTX, torch.ones(1, 6, 8), 4, 2, 2, 0)
    assert out[0, 3].tolist() == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5]  # left ramp 1/4..1, right ends at 1/2
    assert out[0, :, 5].tolist() == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]  # top ramp 1/2, 1; no bottom
    (same,) = FeatherMask().run(CTX, torch.ones(6, 8), 0, 0, 0, 0)  # a 2-D mask is a batch of one
    assert torch.equal(same, torch.ones(1, 6, 8))
    (wide,) = FeatherMask().run(CTX, torch.ones(1, 2, 3), 50, 0, 0, 0)  # a ramp longer than the mask is cut to it
    assert wide[0, 0].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_mask_composite_operations_where_the_source_lands():
    destination = torch.full((2, 4, 4), 0.5)
    source = torch.tensor([[1.0, 0.0], [0.25, 0.75]])[None]  # one mask, repeated to the destination's batch
    expected_region = {
        "multiply": [[0.5, 0.0], [0.125, 0.375]],
        "add": [[1.0, 0.5], [0.75, 1.0]],  # 1.25 clamped to 1
        "subtract": [[0.0, 0.5], [0.25, 0.0]],  # below 0 clamped to 0
        "and": [[1.0, 0.0], [1.0, 1.0]],
        "or": [[1.0, 1.0], [1.0, 1.0]],
        "xor": [[0.0, 1.0], [0.0, 0.0]],
    }
    for operation, region in expected_region.items():
        (out,) = MaskComposite().run(CTX, destination, source, 1, 2, operation)
        assert out.shape == (2, 4, 4)
        assert out[1, 2:4, 1:3].tolist() == region, operation
        untouched = torch.ones(4, 4, dtype=torch.bool)
        untouched[2:4, 1:3] = False
        assert (out[:, untouched] == 0.5).all(), operation
    (cut,) = MaskComposite().run(CTX, destination, torch.ones(1, 3, 3), 3, 3, "add")  # only one pixel overlaps
    assert cut[0, 3, 3] == 1.0 and cut.sum() == 2 * (15 * 0.5 + 1.0)
    (past,) = MaskComposite().run(CTX, destination, torch.ones(1, 3, 3), 9, 0, "add")
    assert torch.equal(past, destination)


def test_image_and_mask_convert_both_ways():
    masks = soft_masks()
    (image,) = MaskToImage().run(CTX, masks)
    assert image.shape == (2, 9, 11, 3) and torch.equal(image[..., 1], masks)
    for channel in ("red", "green", "blue"):
        (back,) = ImageToMask().run(CTX, image, channel)
        assert torch.equal(back, masks)
    rgba = torch.cat([image, masks[..., None] / 2], dim=-1)
    (alpha,) = ImageToMask().run(CTX, rgba, "alpha")
    assert torch.equal(alpha, masks / 2)
    with pytest.raises(InputError, match="channel 'alpha' was asked for but the image has 3 channels"):
        ImageToMask().run(CTX, image, "alpha")


def test_solid_invert_crop_threshold():
    (solid,) = SolidMask().run(CTX, 0.25, 5, 3)
    assert solid.shape == (1, 3, 5) and (solid == 0.25).all()
    (inverted,) = InvertMask().run(CTX, solid)
    assert (inverted == 0.75).all()
    masks = soft_masks()
    (crop,) = CropMask().run(CTX, masks, 2, 1, 4, 100)  # taller than the mask: cut at its edge
    assert torch.equal(crop, masks[:, 1:, 2:6])
    with pytest.raises(InputError, match="outside the 11x9 mask"):
        CropMask().run(CTX, masks, 11, 0, 4, 4)
    (hard,) = ThresholdMask().run(CTX, masks, 0.5)
    assert torch.equal(hard, (masks > 0.5).float())
    assert MAX_BATCH_PIXELS < 16384 * 16384
    with pytest.raises(InputError):  # the largest widgets allow more pixels than one batch may hold
        SolidMask().run(CTX, 1.0, 16384, 16384)


def test_an_inpainting_graph_grows_and_feathers_the_loaded_mask(tmp_path):
    """LoadImage's MASK (1 in the transparent hole) grown, feathered, inverted and saved as an image."""
    from PIL import Image

    from atelier.graph.catalog import default_registry
    from atelier.graph.executor import EventLog, Executor
    from atelier.graph.validation import validate_prompt
    from atelier.server.files import DataDir, OutputFiles

    data = DataDir(tmp_path)
    picture = Image.new("RGBA", (32, 32), (200, 40, 40, 255))
    picture.paste((0, 0, 0, 0), (10, 10, 20, 20))  # a transparent hole: LoadImage's mask is 1 there
    picture.save(data.input / "hole.png")
    files = OutputFiles(data)
    registry = default_registry(data.root, files)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "hole.png"}},
        "2": {"class_type": "GrowMask", "inputs": {"mask": ["1", 1], "expand": 2, "tapered_corners": True}},
        "3": {"class_type": "FeatherMask", "inputs": {"mask": ["2", 0], "left": 2, "top": 2, "right": 2, "bottom": 2}},
        "4": {"class_type": "InvertMask", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "mask"}},
    }
    result = validate_prompt(prompt, registry)
    assert result.ok, result.node_errors
    log = EventLog()
    Executor(registry).execute(result.prompt, result.outputs, listener=log)
    assert log.names()[-1] == "execution_success", log.payloads("execution_error")
    [(_, ui)] = log.payloads("executed")
    with Image.open(files.path(ui["images"][0])) as image:
        grey = np.asarray(image.convert("L"))
    assert grey[15, 15] == 0 and grey[9, 15] == 0  # inside the hole, and grown 1 px past it: masked (inverted: 0)
    assert grey[5, 5] == 255  # far from the hole: kept
