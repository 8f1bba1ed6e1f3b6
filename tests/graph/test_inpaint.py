"""graph/nodes/inpaint.py, node by node without a model: the outpainting pad (sizes, grey borders, the feathered
mask against values worked out by hand), the noise mask a latent carries, and what VAEEncodeForInpaint hands the
encoder (a stub VAE records it)."""

import pytest
import torch

from atelier.graph.nodes.inpaint import ImagePadForOutpaint, SetLatentNoiseMask, VAEEncodeForInpaint


class QuietContext:
    """A node context that is never interrupted: these nodes report no progress or previews."""

    node_id, prompt, extra_pnginfo = "1", {}, None

    def progress(self, value, total) -> None: ...

    def preview(self, image) -> None: ...

    def check_interrupt(self) -> None: ...


CTX = QuietContext()


def image(b: int = 1, h: int = 16, w: int = 24) -> torch.Tensor:
    """IMAGE (B, H, W, 3) of seeded values in [0, 1]."""
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(0))


def pad(img: torch.Tensor, left=0, top=0, right=0, bottom=0, feathering=0) -> tuple[torch.Tensor, torch.Tensor]:
    return ImagePadForOutpaint().run(CTX, img, left, top, right, bottom, feathering)


# ---- ImagePadForOutpaint -----------------------------------------------------------------------------------------


def test_pad_grows_the_canvas_and_keeps_the_picture():
    img = image(b=2)
    out, mask = pad(img, left=8, top=0, right=16, bottom=8)
    assert out.shape == (2, 16 + 8, 24 + 8 + 16, 3) and mask.shape == (1, 24, 48)
    assert torch.equal(out[:, 0:16, 8:32], img)  # the picture, untouched, at (top, left)
    border = torch.ones(24, 48, dtype=torch.bool)
    border[0:16, 8:32] = False
    assert torch.all(out[:, border] == 0.5)  # new pixels: mid-grey, the least biased start for the sampler
    assert torch.all(mask[0, border] == 1.0) and torch.all(mask[0, ~border] == 0.0)  # no feathering: hard


def test_no_padding_changes_nothing():
    img = image()
    out, mask = pad(img, feathering=40)
    assert torch.equal(out, img) and torch.equal(mask, torch.zeros(1, 16, 24))


def test_feathering_fades_quadratically_from_a_padded_edge():
    # Padded on the left only, feathering 4: column j of the old picture is j pixels from that edge and gets
    # ((4 - j) / 4)^2 = 1, 0.5625, 0.25, 0.0625, then 0; the other edges were not padded and do not fade.
    _, mask = pad(image(h=10, w=10), left=8, feathering=4)
    inside = mask[0, :, 8:]  # (10, 10)
    expected = torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0, 0, 0, 0, 0, 0]).expand(10, 10)
    assert torch.equal(inside, expected)
    assert torch.all(mask[0, :, :8] == 1.0)


def test_feathering_follows_the_nearest_padded_edge():
    _, mask = pad(image(h=10, w=10), left=8, top=8, feathering=4)
    inside = mask[0, 8:, 8:]
    ramp = torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0, 0, 0, 0, 0, 0])
    ys, xs = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    assert torch.equal(inside, ramp[torch.minimum(ys, xs)])  # distance to the top or left edge, whichever is nearer
    assert inside[-1, -1] == 0.0 and inside[0, 9] == 1.0 and inside[9, 0] == 1.0


@pytest.mark.parametrize("feathering", [5, 6, 40])
def test_feathering_half_the_short_side_or_more_gives_a_hard_edge(feathering):
    _, mask = pad(image(h=10, w=30), right=8, feathering=feathering)
    assert torch.all(mask[0, :, :30] == 0.0) and torch.all(mask[0, :, 30:] == 1.0)


def test_feathering_just_under_half_the_short_side_still_fades():
    _, mask = pad(image(h=10, w=30), bottom=8, feathering=4)
    assert mask[0, 9, 0] == 1.0 and 0.0 < mask[0, 8, 0] < 1.0 and mask[0, 5, 0] == 0.0


# ---- SetLatentNoiseMask ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mask_shape", "expected"), [((16, 24), (1, 1, 16, 24)), ((2, 16, 24), (2, 1, 16, 24))])
def test_set_latent_noise_mask_attaches_a_b1hw_mask(mask_shape, expected):
    samples = {"samples": torch.zeros(2, 4, 2, 3), "batch_index": [4, 5]}
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(1))
    (out,) = SetLatentNoiseMask().run(CTX, samples, mask)
    assert out["noise_mask"].shape == expected and torch.equal(out["noise_mask"].flatten(), mask.flatten())
    assert out["samples"] is samples["samples"] and out["batch_index"] == [4, 5]
    assert "noise_mask" not in samples  # the input latent is left as it was


# ---- VAEEncodeForInpaint ---------------------------------------------------------------------------------------


class RecordingVAE(torch.nn.Module):
    """Stands in for models.vae.VAE: records the encoder's input (B, 3, H, W) in [-1, 1] and returns a posterior
    whose mode is that input's top-left pixel of every 8x8 block, repeated to 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # pipeline.encode reads the device and dtype from it
        self.seen: list[torch.Tensor] = []

    def encode(self, x: torch.Tensor):
        self.seen.append(x)
        latent = x[:, :1, ::8, ::8].repeat(1, 4, 1, 1)
        return type("Posterior", (), {"mode": lambda _: latent})()


def encode_for_inpaint(pixels, mask, grow_mask_by):
    vae = RecordingVAE()
    (latent,) = VAEEncodeForInpaint().run(CTX, pixels, vae, mask, grow_mask_by)
    return latent, vae.seen[0]


def test_the_region_to_repaint_reaches_the_encoder_as_neutral_grey():
    pixels = image(h=20, w=28)  # not multiples of 8: cropped to 16 x 24
    mask = torch.zeros(1, 20, 28)
    mask[:, 4:12, 8:20] = 1.0
    latent, seen = encode_for_inpaint(pixels, mask, 0)
    assert seen.shape == (1, 3, 16, 24) and latent["samples"].shape == (1, 4, 2, 3)
    signed = pixels[:, :16, :24].permute(0, 3, 1, 2) * 2 - 1  # what VAEEncode would see
    repaint = mask[:, None, :16, :24].bool().expand_as(signed)
    assert torch.all(seen[repaint] == 0.0)  # grey 0.5 is 0 in [-1, 1]
    assert torch.allclose(seen[~repaint], signed[~repaint])
    assert torch.equal(latent["noise_mask"], mask[:, None, :16, :24])


def test_a_soft_mask_is_rounded_at_one_half():
    pixels = image(h=16, w=16)
    mask = torch.full((1, 16, 16), 0.4)
    mask[:, :, 8:] = 0.6
    latent, seen = encode_for_inpaint(pixels, mask, 0)
    assert torch.equal(latent["noise_mask"][0, 0, :, :8], torch.zeros(16, 8))
    assert torch.equal(latent["noise_mask"][0, 0, :, 8:], torch.ones(16, 8))
    assert torch.all(seen[..., 8:] == 0.0) and not torch.any(seen[..., :8] == 0.0)


def test_grow_mask_by_dilates_with_a_square():
    # One masked pixel at (8, 12); a 6-wide kernel with padding ceil(5 / 2) = 3 covers input rows i - 3 .. i + 2
    # for output row i, so the pixel spreads 2 rows up and 3 down: rows 6..11, columns 10..15.
    pixels = image(h=16, w=24)
    mask = torch.zeros(1, 16, 24)
    mask[0, 8, 12] = 1.0
    latent, seen = encode_for_inpaint(pixels, mask, 6)
    expected = torch.zeros(1, 1, 16, 24)
    expected[..., 6:12, 10:16] = 1.0
    assert torch.equal(latent["noise_mask"], expected)
    assert torch.sum(seen == 0.0) == 3  # only the masked pixel itself was greyed, in all 3 channels
    (one,) = VAEEncodeForInpaint().run(CTX, pixels, RecordingVAE(), mask, 1)
    assert torch.equal(one["noise_mask"], mask[:, None])  # a 1-wide square grows nothing


def test_a_mask_of_another_size_is_stretched_to_the_image():
    pixels = image(h=16, w=24)
    mask = torch.zeros(1, 4, 6)  # a quarter of the size: the right half masked
    mask[:, :, 3:] = 1.0
    latent, _ = encode_for_inpaint(pixels, mask, 0)
    grown = latent["noise_mask"][0, 0]
    assert grown.shape == (16, 24)
    assert torch.all(grown[:, :11] == 0.0) and torch.all(grown[:, 13:] == 1.0)  # the edge lands at column 12
