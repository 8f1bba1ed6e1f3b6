"""Which dtype a model loads in when the user names none (atelier/device.py): the rule is read from the file's
headers before any weight is read, so these run without a GPU (a torch.device("cuda") object is only compared)."""

from __future__ import annotations

import pytest
import torch

from atelier import device as devices
from atelier.errors import InputError
from atelier.models.checkpoint import _pick, stored_parameters
from atelier.models.library import embedded_model_path

CUDA = torch.device("cuda")


def test_a_small_model_on_a_gpu_stays_in_fp32_unless_the_user_names_a_dtype():
    small = devices.SMALL_MODEL_PARAMETERS - 1
    assert devices.pick_dtype(CUDA, None, small) == torch.float32
    assert devices.pick_dtype(CUDA, "auto", small) == torch.float32
    assert devices.pick_dtype(CUDA, "bf16", small) == torch.bfloat16
    assert devices.pick_dtype(torch.device("cpu"), None, 10**10) == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="the half dtype a GPU gets depends on the GPU")
def test_a_large_model_on_a_gpu_gets_half_precision():
    # Without CUDA, is_bf16_supported() is False: the fallback half dtype is fp16.
    assert devices.pick_dtype(CUDA, None, devices.SMALL_MODEL_PARAMETERS) in (torch.float16, torch.bfloat16)


def test_an_unknown_dtype_name_is_one_sentence():
    with pytest.raises(InputError, match="Dtype 'fp8' is not supported; expected one of fp32, fp16, bf16"):
        devices.pick_dtype(CUDA, "fp8")


def test_the_embedded_model_is_counted_from_its_header_and_loads_in_fp32_on_a_gpu():
    path = embedded_model_path()
    count = stored_parameters(path)
    assert count is not None and 20_000_000 < count < devices.SMALL_MODEL_PARAMETERS  # UNet 13.8 M, in all ~24.8 M
    assert _pick(CUDA, None, path) == (CUDA, torch.float32)
    assert _pick(CUDA, "fp16", path) == (CUDA, torch.float16)


def test_a_file_whose_size_cannot_be_told_from_headers_gets_the_plain_default(tmp_path):
    pickled = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(3)}, pickled)
    assert stored_parameters(pickled) is None
    folder = tmp_path / "empty"
    folder.mkdir()
    assert stored_parameters(folder) is None
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert stored_parameters(broken) is None
