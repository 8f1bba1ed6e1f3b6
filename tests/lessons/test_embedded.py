"""lessons/embedded.py: the embedded model's pieces, and the image encoder read from its extras file."""

import torch
from safetensors.torch import save_file

from atelier.lessons.embedded import load_image_encoder
from atelier.models.library import EMBEDDED_EXTRAS_PATH
from atelier.world.encoders import ImageEncoder


def test_the_embedded_pieces_run_in_float32_on_the_cpu(embedded):
    assert embedded.tokenizer("red")[:3] == [49406, 736, 49407]
    for net in (embedded.text_encoder, embedded.vae, embedded.image_encoder):
        p = next(net.parameters())
        assert (p.dtype, p.device.type, net.training) == (torch.float32, "cpu", False)
    assert embedded.text_encoder(torch.tensor([embedded.tokenizer("red")])).projected.shape == (1, 128)


def test_the_image_encoder_comes_from_the_extras_file(tmp_path):
    assert EMBEDDED_EXTRAS_PATH.is_file()
    assert isinstance(load_image_encoder(EMBEDDED_EXTRAS_PATH, 128), ImageEncoder)
    assert load_image_encoder(tmp_path / "missing.safetensors", 128) is None
    save_file({"classifier.w": torch.zeros(2)}, str(tmp_path / "other-extras.safetensors"))
    assert load_image_encoder(tmp_path / "other-extras.safetensors", 128) is None  # no image_encoder.* keys
