"""The UNet compiled ahead of time (models/aot.py): the package's key, and (slow, a C++ compile on the CPU) the
package itself against the readable forward, read back by a second model without compiling, seeing its weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from atelier.errors import InputError
from atelier.models.aot import AOTNetwork, model_description, package_key
from atelier.models.config import UNetConfig
from atelier.models.fast import FastOptions, fast_unet
from atelier.models.unet import UNet

AOT = dataclasses.replace(FastOptions.eager(), compile="aot")  # no CUDA graphs: they need a GPU


def inputs(batch: int = 2, size: int = 16, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    cfg = UNetConfig.tiny()
    return (
        torch.randn(batch, cfg.in_channels, size, size, dtype=dtype),
        torch.tensor([10.0, 733.5][:batch] * (batch // 2 or 1)),
        torch.randn(batch, 7, cfg.context_dim, dtype=dtype),
    )


def test_a_package_key_changes_with_every_input_signature_and_the_model():
    torch.manual_seed(0)
    model = model_description(fast_unet(UNet(UNetConfig.tiny()), AOT))
    same = model_description(fast_unet(UNet(UNetConfig.tiny()), AOT))  # other weights, same code
    plain_layout = dataclasses.replace(AOT, channels_last=False)
    assert model == same and package_key(model, inputs()) == package_key(same, inputs())
    keys = {
        package_key(model, inputs()),
        package_key(model, inputs(batch=4)),
        package_key(model, inputs(size=24)),
        package_key(model, inputs(dtype=torch.float64)),
        package_key(model, (*inputs()[:2], torch.randn(2, 9, 32))),  # a longer prompt
        package_key(model_description(fast_unet(UNet(UNetConfig.tiny()), plain_layout)), inputs()),
        package_key(model_description(UNet(dataclasses.replace(UNetConfig.tiny(), norm_groups=16))), inputs()),
    }
    assert len(keys) == 7
    # The compile mode is not in the graph: a package serves whatever asked for it.
    assert model_description(fast_unet(UNet(UNetConfig.tiny()), FastOptions.eager())) == model


def test_an_unknown_compile_mode_names_aot_among_the_choices():
    with pytest.raises(InputError, match=r"expected one of auto, none, blocks, full, max-autotune, aot"):
        FastOptions(compile="ahead")


@torch.no_grad()
def test_a_unet_that_cannot_be_exported_runs_eagerly_and_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ATELIER_COMPILE_CACHE", str(tmp_path))

    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent branch")

    monkeypatch.setattr(torch.export, "export", refuse)
    torch.manual_seed(3)
    readable = UNet(UNetConfig.tiny()).eval()
    x, t, context = inputs()
    fast = fast_unet(readable, AOT)
    with caplog.at_level("WARNING", logger="atelier.models.aot"):
        assert (fast(x, t, context) - readable(x, t, context)).abs().max().item() < 1e-5
        fast(x, t, context)  # the signature is remembered: one warning, not one a step
    [warning] = [r.getMessage() for r in caplog.records if r.name == "atelier.models.aot"]
    assert "runs eagerly" in warning and "data-dependent branch" in warning
    assert list(tmp_path.rglob("*.pt2")) == []


@torch.no_grad()
def test_a_package_that_does_not_load_is_compiled_again_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ATELIER_COMPILE_CACHE", str(tmp_path))
    torch.manual_seed(3)
    readable = UNet(UNetConfig.tiny()).eval()
    x, t, context = inputs()
    fast = fast_unet(readable, AOT)
    network = fast._network
    as_called = (x.to(memory_format=torch.channels_last), t, context)  # the fast path's layout
    path = network.folder(x.device) / f"{package_key(model_description(fast), as_called)}.pt2"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a package")  # e.g. copied from a broken disk
    compiles = []

    def compile_garbage(target, _inputs):
        compiles.append(target)
        target.write_bytes(b"still not a package")

    monkeypatch.setattr(network, "_compile", compile_garbage)
    with caplog.at_level("WARNING", logger="atelier.models.aot"):
        assert (fast(x, t, context) - readable(x, t, context)).abs().max().item() < 1e-5
    assert compiles == [path]
    messages = [r.getMessage() for r in caplog.records if r.name == "atelier.models.aot"]
    assert "does not load" in messages[0] and "runs eagerly" in messages[-1]
    assert not path.exists()  # a package that does not load is not kept


@pytest.mark.slow
@torch.no_grad()
def test_the_package_matches_the_readable_unet_is_read_back_and_follows_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_COMPILE_CACHE", str(tmp_path))
    torch.manual_seed(3)
    readable = UNet(UNetConfig.tiny()).eval()
    x, t, context = inputs()
    expected = readable(x, t, context)

    first = fast_unet(readable, AOT)
    assert isinstance(first._network, AOTNetwork)
    assert (first(x, t, context) - expected).abs().max().item() < 1e-5
    assert first._network.compiled == 1
    packages = list(tmp_path.rglob("*.pt2"))
    assert len(packages) == 1 and not packages[0].name.startswith(".")  # renamed whole, no temporary left

    second = fast_unet(readable, AOT)  # a later start: the same code, read from disk
    assert (second(x, t, context) - expected).abs().max().item() < 1e-5
    assert second._network.compiled == 0

    readable.conv_in.weight.mul_(1.5)  # a LoRA merges into the weights in place: the package reads them
    readable.conv_out.bias.add_(0.25)  # 4 numbers: small tensors too are read, none is written into the code
    assert (second(x, t, context) - readable(x, t, context)).abs().max().item() < 1e-5
    assert (second(x, t, context) - expected).abs().max().item() > 1e-3

    torch.manual_seed(4)
    other = UNet(UNetConfig.tiny()).eval()  # another checkpoint of the same architecture: the same package
    third = fast_unet(other, AOT)
    assert (third(x, t, context) - other(x, t, context)).abs().max().item() < 1e-5
    assert third._network.compiled == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_the_package_runs_under_cuda_graphs_in_bf16(tmp_path, monkeypatch):
    """By hand on a GPU: the package captured by a CUDA graph (run_single_threaded) equals the readable UNet."""
    monkeypatch.setenv("ATELIER_COMPILE_CACHE", str(tmp_path))
    torch.manual_seed(3)
    readable = UNet(UNetConfig.tiny()).eval().to("cuda", torch.bfloat16)
    x, t, context = inputs()
    x, t, context = x.to("cuda", torch.bfloat16), t.to("cuda"), context.to("cuda", torch.bfloat16)
    expected = readable(x, t, context).float()
    fast = fast_unet(readable, FastOptions(compile="aot"))
    for _ in range(3):  # warm-up, capture, replay
        got = fast(x, t, context).float()
        assert (got - expected).abs().max().item() < 0.05
    assert fast._network.compiled == 1 and len(fast.graphs._graphs) == 1


@pytest.mark.slow
@torch.no_grad()
def test_an_sdxl_shaped_package_takes_the_vector_y(tmp_path, monkeypatch):
    """SDXL's vector y (pooled text + sizes) is one more input of the package; y of one row broadcasts as in the
    readable UNet, in a package of its own (another signature)."""
    monkeypatch.setenv("ATELIER_COMPILE_CACHE", str(tmp_path))
    cfg = dataclasses.replace(
        UNetConfig.tiny(), block_channels=(32, 64), cross_attention_levels=(False, True), attention_head_dim=16,
        transformer_depth=(0, 2), linear_projection=True, context_dim=40, adm_in_channels=16 + 6 * 8,
        size_embed_dim=8,
    )  # fmt: skip
    torch.manual_seed(5)
    readable = UNet(cfg).eval()
    x, t = inputs()[:2]
    context, y = torch.randn(2, 7, cfg.context_dim), torch.randn(2, cfg.adm_in_channels)
    fast = fast_unet(readable, AOT)
    assert (fast(x, t, context, y) - readable(x, t, context, y)).abs().max().item() < 1e-5
    assert (fast(x, t, context, y[:1]) - readable(x, t, context, y[:1])).abs().max().item() < 1e-5
    assert fast._network.compiled == 2 and len(list(tmp_path.rglob("*.pt2"))) == 2
