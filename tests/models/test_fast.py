"""The fast path computes what the readable modules compute: same outputs, same state_dict, same hooks.

CPU checks use small configs in float32 (max abs difference <= 1e-5). torch.compile on the CPU takes about a
minute here, so that check is marked slow; the full-size CUDA comparison is marked gpu and run by hand:
    pytest -m gpu tests/models/test_fast.py -s
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from atelier.cli import main as cli_main
from atelier.errors import InputError
from atelier.generation import GenerationParams, run
from atelier.models.attention import Attention, capture_cross_attention
from atelier.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from atelier.models.clip import CLIPTextEncoder
from atelier.models.config import TextEncoderConfig, UNetConfig, VAEConfig
from atelier.models.fast import (
    FastOptions,
    FastTextEncoder,
    FastUNet,
    FastVAE,
    FusedAttention,
    accelerate,
    fast_text_encoder,
    fast_unet,
    fast_vae,
    resolve_compile,
)
from atelier.models.unet import UNet
from atelier.models.vae import VAE
from atelier.sampling.graphs import GraphedCall

DEEP = dataclasses.replace(
    UNetConfig.tiny(),
    block_channels=(32, 64, 64),
    layers_per_block=2,
    cross_attention_levels=(False, True, True),
    transformer_depth=2,
)
UNET_CONFIGS = {"tiny": UNetConfig.tiny(), "deep": DEEP}
EAGER_OPTIONS = {
    "fused+channels_last": FastOptions.eager(),
    "fused": dataclasses.replace(FastOptions.eager(), channels_last=False),
    "channels_last": dataclasses.replace(FastOptions.eager(), fuse_projections=False),
}
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread is faster than two (no OpenMP hand-offs) on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def unet_inputs(cfg: UNetConfig, size: tuple[int, int] = (16, 12)):
    x = torch.randn(2, cfg.in_channels, *size)
    return x, torch.tensor([10.0, 733.5]), torch.randn(2, 7, cfg.context_dim)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------------------------------------------
# UNet
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", EAGER_OPTIONS.values(), ids=EAGER_OPTIONS.keys())
@pytest.mark.parametrize("name", UNET_CONFIGS)
@torch.no_grad()
def test_fast_unet_matches_readable(name, options):
    cfg = UNET_CONFIGS[name]
    readable = UNet(cfg).eval()
    x, t, context = unet_inputs(cfg)
    expected = readable(x, t, context)
    fast = fast_unet(readable, options)
    assert isinstance(fast, FastUNet)
    out = fast(x, t, context)
    assert out.shape == expected.shape and out.is_contiguous()
    assert max_diff(out, expected) <= TOL
    # Odd sizes go through the upsampler's size matching the same way.
    x9, t9, c9 = unet_inputs(cfg, (9, 13))
    assert max_diff(fast(x9, t9, c9), readable(x9, t9, c9)) <= TOL


# SD 2.x and SDXL shapes, small: 16-wide heads, linear projections, SDXL's depths per level and its vector y
# (pooled 16 + 6 size numbers x 8), the refiner's y (pooled 16 + 5 numbers x 8).
SMALL_SD2 = dataclasses.replace(UNetConfig.tiny(), attention_head_dim=16, linear_projection=True, prediction="v")
SMALL_SDXL = dataclasses.replace(
    UNetConfig.tiny(),
    block_channels=(32, 64, 64),
    cross_attention_levels=(False, True, True),
    attention_head_dim=16,
    transformer_depth=(0, 2, 3),
    linear_projection=True,
    context_dim=40,
    adm_in_channels=16 + 6 * 8,
    size_embed_dim=8,
)
SMALL_REFINER = dataclasses.replace(
    SMALL_SDXL, block_channels=(32, 64, 64, 64), cross_attention_levels=(False, True, True, False),
    transformer_depth=2, context_dim=16, adm_in_channels=16 + 5 * 8,
)  # fmt: skip


@pytest.mark.parametrize("options", EAGER_OPTIONS.values(), ids=EAGER_OPTIONS.keys())
@pytest.mark.parametrize("cfg", [SMALL_SD2, SMALL_SDXL, SMALL_REFINER], ids=["sd2", "sdxl", "refiner"])
@torch.no_grad()
def test_fast_unet_matches_readable_on_sd2_and_sdxl_shapes(cfg, options):
    """SDXL's vector y goes through the fast path (fused projections, channels_last) instead of falling back."""
    torch.manual_seed(0)
    readable = UNet(cfg).eval()
    for p in readable.parameters():  # off the init: LayerNorms at exactly 1 and 0 would hide a misplaced weight
        p.add_(0.05 * torch.randn_like(p))
    x, t, context = unet_inputs(cfg)
    y = torch.randn(2, cfg.adm_in_channels) if cfg.adm_in_channels is not None else None
    expected = readable(x, t, context, y)
    fast = fast_unet(readable, options)
    out = fast(x, t, context, y)
    assert out.is_contiguous() and max_diff(out, expected) <= TOL
    if y is not None:  # one vector for the whole batch broadcasts, as in the readable UNet
        assert max_diff(fast(x, t, context, y[:1]), readable(x, t, context, y[:1])) <= TOL
        assert max_diff(fast(x, t, context, y), fast(x, t, context, y.flip(0))) > 1e-3  # y reaches the network


@torch.no_grad()
def test_fused_projections_replace_every_attention_and_keep_the_readable_state_dict():
    readable = UNet(DEEP).eval()
    expected = {k: v.clone() for k, v in readable.state_dict().items()}
    fast = fast_unet(readable, FastOptions.eager())
    attentions = [m for m in fast.modules() if isinstance(m, Attention)]
    assert attentions and all(isinstance(m, FusedAttention) for m in attentions)
    self_attn = next(m for m in attentions if not m.is_cross)
    assert self_attn.to_qkv.weight.shape == (3 * 64, 64)  # [to_q; to_k; to_v] of the first 64-wide level

    state = fast.state_dict()
    assert list(state) == list(expected)  # same names in the same order
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
        assert state[key].is_contiguous(), key
    # A FastUNet built from scratch loads the readable state_dict strictly, and the readable one loads its.
    fresh = FastUNet(DEEP, FastOptions.eager())
    fresh.load_state_dict(expected)
    back = UNet(DEEP)
    back.load_state_dict(fresh.state_dict())
    x, t, context = unet_inputs(DEEP)
    assert max_diff(fresh(x, t, context), back.eval()(x, t, context)) <= TOL


@torch.no_grad()
def test_readable_unet_still_computes_the_same_after_conversion():
    readable = UNet(UNetConfig.tiny()).eval()
    x, t, context = unet_inputs(readable.config)
    before = readable(x, t, context)
    fast_unet(readable, FastOptions.eager())  # switches its conv weights to channels_last in place, to share them
    assert max_diff(readable(x, t, context), before) <= TOL


@torch.no_grad()
def test_capture_cross_attention_on_the_fast_unet_records_what_the_readable_records():
    readable = UNet(DEEP).eval()
    x, t, context = unet_inputs(DEEP)
    with capture_cross_attention(readable) as expected_maps:
        expected = readable(x, t, context)
    fast = fast_unet(readable, FastOptions.eager())
    with capture_cross_attention(fast) as maps:
        assert fast.recording
        out = fast(x, t, context)
    assert not fast.recording
    assert max_diff(out, expected) <= TOL
    assert [m.layer for m in maps] == [m.layer for m in expected_maps]
    assert len(maps) == len(expected_maps) == 22
    for got, want in zip(maps, expected_maps, strict=True):
        assert got.probs.shape == want.probs.shape
        assert max_diff(got.probs, want.probs) <= 1e-6
    fast(x, t, context)  # outside the context nothing more is recorded
    assert len(maps) == 22


@torch.no_grad()
def test_capture_also_works_without_fused_projections():
    readable = UNet(UNetConfig.tiny()).eval()
    x, t, context = unet_inputs(readable.config)
    fast = fast_unet(readable, dataclasses.replace(FastOptions.eager(), fuse_projections=False))
    with capture_cross_attention(fast, average_heads=True) as maps:
        fast(x, t, context)
    assert len(maps) == 7 and maps[0].probs.shape == (2, 1, 16, 12, 7)


def test_fast_unet_raises_the_readable_errors():
    fast = fast_unet(UNet(UNetConfig.tiny()).eval(), FastOptions.eager())
    x, _, context = unet_inputs(fast.config)
    with pytest.raises(InputError, match="timestep has shape"):
        fast(x, torch.ones(3), context)
    with pytest.raises(InputError, match="text conditioning has shape"):
        fast(x, torch.ones(2), context[..., :5])


# --------------------------------------------------------------------------------------------------------------
# VAE and text encoder
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", EAGER_OPTIONS.values(), ids=EAGER_OPTIONS.keys())
@torch.no_grad()
def test_fast_vae_decodes_and_encodes_like_the_readable(options):
    readable = VAE(VAEConfig.tiny()).eval()
    z = torch.randn(1, 4, 12, 10)
    images = torch.rand(1, 3, 48, 40) * 2 - 1
    expected_image, expected_moments = readable.decode(z), readable.encode(images).mean
    expected_tiled = readable.decode_tiled(z, tile=8, overlap=2)
    state = {k: v.clone() for k, v in readable.state_dict().items()}

    fast = fast_vae(readable, options)
    assert isinstance(fast, FastVAE)
    assert max_diff(fast.decode(z), expected_image) <= TOL
    assert max_diff(fast.encode(images).mean, expected_moments) <= TOL
    assert max_diff(fast.decode_tiled(z, tile=8, overlap=2), expected_tiled) <= TOL
    got = fast.state_dict()
    assert list(got) == list(state) and all(torch.equal(got[k], v) for k, v in state.items())


@torch.no_grad()
def test_fast_text_encoder_caches_prompts_and_returns_copies():
    readable = CLIPTextEncoder(TextEncoderConfig.tiny()).eval()
    ids = torch.randint(0, 1000, (1, 77))
    expected = readable.encode(ids, clip_skip=2)
    fast = fast_text_encoder(readable)
    assert isinstance(fast, FastTextEncoder)
    first = fast.encode(ids, clip_skip=2)
    assert torch.equal(first, expected)
    first.add_(1.0)  # a caller changing its copy does not change the cache
    assert torch.equal(fast.encode(ids, clip_skip=2), expected)
    assert len(fast._cache) == 1
    assert torch.equal(fast.encode(ids, clip_skip=1), readable.encode(ids))  # another key
    assert len(fast._cache) == 2
    fast.load_state_dict(readable.state_dict())
    assert len(fast._cache) == 0


# --------------------------------------------------------------------------------------------------------------
# Options, the whole checkpoint, the CLI flag
# --------------------------------------------------------------------------------------------------------------


def test_options_reject_unknown_values_in_one_sentence():
    with pytest.raises(InputError, match=r"Attention kernel 'fast' is not known; expected one of auto, flash"):
        FastOptions(attention="fast")
    with pytest.raises(InputError, match=r"Compile mode 'turbo' is not known; expected one of auto, none, blocks"):
        FastOptions(compile="turbo")


def test_graphs_refuse_cpu_tensors():
    call = GraphedCall(lambda x: x * 2)
    with pytest.raises(ValueError, match="CUDA tensor"):
        call(torch.ones(2))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Checkpoint:
    torch.manual_seed(99)
    unet = UNet(dataclasses.replace(UNetConfig.tiny(), cross_attention_levels=(False, True)))
    vae = VAE(dataclasses.replace(VAEConfig.tiny(), block_channels=(16, 16, 32, 32), scaling_factor=0.5))
    text = CLIPTextEncoder(TextEncoderConfig(width=32, layers=2, heads=2, mlp_width=64))
    path = save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", unet, vae, text)
    return load_checkpoint(path, device="cpu", dtype="fp32")


def test_accelerate_is_off_on_the_cpu_by_default_and_converts_when_asked(tiny_ckpt):
    assert accelerate(tiny_ckpt) is tiny_ckpt
    assert accelerate(tiny_ckpt, enabled=False) is tiny_ckpt
    fast = accelerate(tiny_ckpt, enabled=True, options=FastOptions.eager())
    assert isinstance(fast.unet, FastUNet) and isinstance(fast.vae, FastVAE)
    assert isinstance(fast.text_encoder, FastTextEncoder)
    assert fast.unet_config == tiny_ckpt.unet_config and fast.tokenizer is tiny_ckpt.tokenizer
    # Weights are shared, not copied: the readable UNet's conv weight is the fast one's.
    assert fast.unet.conv_in.weight.data_ptr() == tiny_ckpt.unet.conv_in.weight.data_ptr()


def test_a_generation_on_the_fast_path_equals_the_readable_one(tiny_ckpt):
    params = GenerationParams("a red circle", negative="blue", seed=7, steps=4, cfg=5.0, width=32, height=24)
    expected = run(tiny_ckpt, params)
    got = run(accelerate(tiny_ckpt, enabled=True, options=FastOptions.eager()), params)
    assert max_diff(got.latent, expected.latent) <= TOL


def test_compile_auto_skips_the_compiler_for_a_small_unet_only(tiny_ckpt):
    """The embedded model's size is launch-bound (CUDA graphs suffice); SD1.5's size compiles per block."""
    from atelier.models.library import embedded_model_path

    assert resolve_compile(load_checkpoint(embedded_model_path(), device="cpu").unet) == "none"
    with torch.device("meta"):  # SD1.5's 860 M parameters, counted without allocating them
        assert resolve_compile(UNet(UNetConfig())) == "blocks"
    eager_auto = dataclasses.replace(FastOptions.eager(), compile="auto")
    fast = accelerate(tiny_ckpt, enabled=True, options=eager_auto)
    assert fast.unet.options.compile == fast.vae.options.compile == "none"  # one mode, the UNet's, for all
    assert FastOptions(compile="full").for_unet(tiny_ckpt.unet).compile == "full"  # an explicit mode stays
    assert fast_vae(tiny_ckpt.vae, eager_auto).options.compile == "blocks"  # alone: no UNet to judge by


def test_the_embedded_fast_path_without_compilation_never_imports_the_compiler():
    """A start that compiles nothing must not pay for torch._dynamo's import (about a second): the fast modules
    of a small model are built off the meta device, and Dynamo's config is read only when compiling. In a fresh
    process, since this one has imported the compiler already."""
    script = """
import sys, torch
from atelier.models.checkpoint import load_checkpoint
from atelier.models.fast import FastOptions, accelerate, kernel_choices
from atelier.models.library import embedded_model_path
ckpt = accelerate(load_checkpoint(embedded_model_path()), enabled=True, options=FastOptions(compile="none"))
x = torch.randn(1, ckpt.unet.config.in_channels, 16, 16)
with torch.no_grad(), kernel_choices(ckpt.unet.options):
    ckpt.unet(x, torch.tensor([500.0]), torch.randn(1, 77, ckpt.unet.config.context_dim))
    ckpt.vae.decode(torch.randn(1, ckpt.vae.config.latent_channels, 8, 8))
print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "torch._inductor"))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_cli_accepts_no_fast(capsys):
    # --no-fast parses (argparse would exit on an unknown flag); the bad --steps then stops before any loading.
    assert cli_main(["generate", "a house", "--no-fast", "--steps", "0"]) == 2
    assert "Steps must be a whole number" in capsys.readouterr().err


def test_serve_and_run_accept_no_fast():
    from atelier.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--no-fast"]).no_fast
    assert parser.parse_args(["run", "workflow.json", "--no-fast"]).no_fast
    assert not parser.parse_args(["serve"]).no_fast


def _load_through_the_node(tmp_path, **registry_options):
    from atelier.graph.catalog import default_registry

    registry = default_registry(tmp_path, files=None, **registry_options)
    model, _, _ = registry.get("CheckpointLoaderSimple")().run(None, "embedded.safetensors")
    return model


def test_the_checkpoint_node_keeps_the_readable_modules_on_the_cpu(tmp_path):
    model = _load_through_the_node(tmp_path, device="cpu")
    assert type(model.unet) is UNet


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_checkpoint_node_runs_the_fast_path_on_cuda_unless_told_not_to(tmp_path):
    assert isinstance(_load_through_the_node(tmp_path, device="cuda").unet, FastUNet)
    assert type(_load_through_the_node(tmp_path, device="cuda", fast=False).unet) is UNet


# --------------------------------------------------------------------------------------------------------------
# torch.compile (slow on a CPU) and the full-size CUDA check (by hand)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@torch.no_grad()
def test_compiled_fast_unet_matches_readable_on_the_cpu():
    readable = UNet(UNetConfig.tiny()).eval()
    x, t, context = unet_inputs(readable.config)
    expected = readable(x, t, context)
    fast = fast_unet(readable, FastOptions(compile="full", cuda_graphs=False))
    assert max_diff(fast(x, t, context), expected) <= TOL
    with capture_cross_attention(fast) as maps:  # recording falls back to the eager modules
        assert max_diff(fast(x, t, context), expected) <= TOL
    assert len(maps) == 7


@pytest.mark.slow
@torch.no_grad()
def test_compiled_fast_unet_with_y_matches_readable_on_the_cpu():
    torch.manual_seed(1)
    readable = UNet(SMALL_SDXL).eval()
    x, t, context = unet_inputs(SMALL_SDXL)
    y = torch.randn(2, SMALL_SDXL.adm_in_channels)
    fast = fast_unet(readable, FastOptions(compile="full", cuda_graphs=False))
    assert max_diff(fast(x, t, context, y), readable(x, t, context, y)) <= TOL


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_full_size_fast_path_matches_readable_on_cuda():
    """SD1.5 sizes in half precision on random weights: the default fast path (compiled blocks, CUDA graphs) and
    the readable modules; relative error of half precision (~1e-3), well under 1e-2."""
    device, dtype = torch.device("cuda"), torch.float16
    readable = UNet(UNetConfig()).to(device, dtype).eval()
    x = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    t = torch.tensor([999.0, 500.0], device=device)
    context = torch.randn(2, 77, 768, device=device, dtype=dtype)
    expected = readable(x, t, context).float()
    fast = fast_unet(readable)
    for _ in range(3):  # the first call captures the graph, the others replay it
        out = fast(x, t, context)
        assert _relative(out, expected) < 1e-2 and torch.isfinite(out).all()
    assert fast.graphs.captured == 1
    x2 = torch.randn_like(x)  # a replay with new inputs computes the new answer
    assert _relative(fast(x2, t, context), readable(x2, t, context)) < 1e-2

    # SDXL base at 1024x1024's latent: the vector y is an input of the captured graph.
    readable = UNet(UNetConfig.sdxl()).to(device, dtype).eval()
    x = torch.randn(2, 4, 128, 128, device=device, dtype=dtype)
    context = torch.randn(2, 77, 2048, device=device, dtype=dtype)
    y = torch.randn(2, 2816, device=device, dtype=dtype)
    expected = readable(x, t, context, y).float()
    fast = fast_unet(readable)
    for _ in range(3):
        out = fast(x, t, context, y)
        assert _relative(out, expected) < 1e-2 and torch.isfinite(out).all()
    assert fast.graphs.captured == 1
    y2 = torch.randn_like(y)  # a replay reads the new vector
    assert _relative(fast(x, t, context, y2), readable(x, t, context, y2)) < 1e-2
    del readable, fast

    vae = VAE(VAEConfig()).to(device, dtype).eval()
    z = torch.randn(1, 4, 64, 64, device=device, dtype=dtype)
    expected_image = vae.decode(z).float()
    assert _relative(fast_vae(vae).decode(z), expected_image) < 1e-2


def test_a_lora_patches_the_fused_projections_and_the_prompt_cache_follows(tiny_ckpt, tmp_path):
    """The fast path fuses to_q/to_k/to_v into one weight; a LoRA on them patches the rows of the fused weight, so
    a generation with a LoRA is the same on both paths, and the fast text encoder's prompt cache never hands back
    an encoding made with other weights (patched or restored)."""
    from safetensors.torch import save_file

    from atelier.models.lora import load_lora

    g = torch.Generator().manual_seed(3)
    tensors = {}
    for prefix, module in (("lora_unet_", tiny_ckpt.unet), ("lora_te_", tiny_ckpt.text_encoder)):
        for name, weight in module.state_dict().items():
            if name.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "q_proj.weight", "v_proj.weight")):
                key = prefix + name.removesuffix(".weight").replace(".", "_")
                tensors[f"{key}.lora_up.weight"] = torch.randn(weight.shape[0], 2, generator=g) * 0.5
                tensors[f"{key}.lora_down.weight"] = torch.randn(2, weight.shape[1], generator=g) * 0.5
    save_file(tensors, str(tmp_path / "l.safetensors"))
    lora = load_lora(tmp_path / "l.safetensors", tiny_ckpt.unet_config, tiny_ckpt.text_encoder_config)
    params = GenerationParams("a red circle", negative="blue", seed=7, steps=4, cfg=5.0, width=32, height=24)
    fast = accelerate(tiny_ckpt, enabled=True, options=FastOptions.eager())
    plain_fast = run(fast, params).latent  # fills the prompt cache with unpatched encodings
    expected = run(tiny_ckpt, params, loras=[(lora, 0.8)]).latent
    got = run(fast, params, loras=[(lora, 0.8)]).latent
    assert max_diff(got, expected) <= TOL
    assert max_diff(got, plain_fast) > 1e-3
    assert torch.equal(run(fast, params).latent, plain_fast)  # restored exactly, on the fused weights too


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphs_of_several_batch_sizes_share_a_pool_and_replay_in_any_order():
    """A classroom's padded batches come in any order: each replay (from one shared memory pool) still gives the
    eager result, and the least recently used signature is dropped beyond max_graphs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(), nn.Conv2d(32, 4, 3, padding=1))
    net = net.cuda().eval()
    call = GraphedCall(net, max_graphs=3)
    with torch.no_grad():
        for batch in (2, 8, 4, 2, 16, 8, 4, 2, 8):
            x = torch.randn(batch, 4, 32, 32, device="cuda")
            torch.testing.assert_close(call(x), net(x), rtol=1e-4, atol=1e-4)
    assert call.captured == 3
