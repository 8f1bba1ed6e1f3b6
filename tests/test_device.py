"""Which dtype a model loads in when the user names none (atelier/device.py): the rule is read from the file's
headers before any weight is read, so these run without a GPU (a torch.device("cuda") object is only compared)."""

from __future__ import annotations

import pytest
import torch

from atelier import device as devices
from atelier.errors import InputError
from atelier.models.checkpoint import _pick, unet_parameters
from atelier.models.library import embedded_model_path

CUDA = torch.device("cuda")


def test_a_small_model_on_a_gpu_stays_in_fp32_unless_the_user_names_a_dtype():
    small = devices.SMALL_UNET_PARAMETERS - 1
    assert devices.pick_dtype(CUDA, None, small) == torch.float32
    assert devices.pick_dtype(CUDA, "auto", small) == torch.float32
    assert devices.pick_dtype(CUDA, "bf16", small) == torch.bfloat16
    assert devices.pick_dtype(torch.device("cpu"), None, 10**10) == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="the half dtype a GPU gets depends on the GPU")
def test_a_large_model_on_a_gpu_gets_half_precision():
    # Without CUDA, is_bf16_supported() is False: the fallback half dtype is fp16.
    assert devices.pick_dtype(CUDA, None, devices.SMALL_UNET_PARAMETERS) in (torch.float16, torch.bfloat16)


def test_an_unknown_dtype_name_is_one_sentence():
    with pytest.raises(InputError, match="Dtype 'fp8' is not supported; expected one of fp32, fp16, bf16"):
        devices.pick_dtype(CUDA, "fp8")


def test_the_embedded_model_is_counted_from_its_header_and_loads_in_fp32_on_a_gpu():
    path = embedded_model_path()
    count = unet_parameters(path)
    assert count == 13_783_012  # the UNet alone (the file holds 24.8 M numbers in all)
    assert _pick(CUDA, None, path) == (CUDA, torch.float32)
    assert _pick(CUDA, "fp16", path) == (CUDA, torch.float16)


def test_only_the_unet_the_loader_reads_is_counted(tmp_path):
    """A diffusers folder: its unet/ weights alone (not the VAE, the text encoder or an fp16 variant); a UNet-only
    file: all of it; a .bin UNet cannot be counted from a header, so the plain default holds."""
    from safetensors.torch import save_file

    folder = tmp_path / "sd"
    for component, numbers in (("unet", 10), ("vae", 1000), ("text_encoder", 1000)):
        (folder / component).mkdir(parents=True)
        save_file({"w": torch.zeros(numbers)}, folder / component / "diffusion_pytorch_model.safetensors")
    save_file({"w": torch.zeros(7)}, folder / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    assert unet_parameters(folder) == 10
    only = tmp_path / "unet_only.safetensors"
    save_file({"input_blocks.0.0.weight": torch.zeros(3, 4)}, only)
    assert unet_parameters(only) == 12
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    torch.save({"w": torch.zeros(10)}, folder / "unet" / "diffusion_pytorch_model.bin")
    assert unet_parameters(folder) is None


def test_fp8_on_an_fp32_model_keeps_fp32_and_says_how_to_get_fp8():
    from atelier.models.fp8 import unavailable_reason

    reason = unavailable_reason(CUDA, "tensor", torch.float32)
    assert reason is not None and "keeps fp32" in reason and "--dtype bf16" in reason


def test_a_file_whose_size_cannot_be_told_from_headers_gets_the_plain_default(tmp_path):
    pickled = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(3)}, pickled)
    assert unet_parameters(pickled) is None
    folder = tmp_path / "empty"
    folder.mkdir()
    assert unet_parameters(folder) is None
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert unet_parameters(broken) is None
