"""UNet forward and VAE decode time, Atelier's models against diffusers', on the same random weights.

    .venv/bin/python benchmarks/models.py                    # SD1.5 sizes on the best device
    .venv/bin/python benchmarks/models.py --device cpu --repeat 3 --json out.json

UNet: batch 2 (cond + uncond), 64x64 latent (a 512x512 image), 77-token context. VAE: decode one 64x64 latent.
Prints a table: median milliseconds of `--repeat` timed runs after one warm-up, for ours and for diffusers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from atelier.device import pick_device, pick_dtype
from atelier.models.config import UNetConfig, VAEConfig
from atelier.models.unet import UNet
from atelier.models.vae import VAE


def _reference_unet(config: UNetConfig):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.cross_attention_levels))
    return UNet2DConditionModel(
        sample_size=64, in_channels=config.in_channels, out_channels=config.out_channels,
        block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
        down_block_types=down, up_block_types=up, cross_attention_dim=config.context_dim,
        attention_head_dim=config.attention_heads, norm_num_groups=config.norm_groups,
    )


def _reference_family_unet(config: UNetConfig):
    """diffusers' UNet2DConditionModel with an SD 2.x / SDXL checkpoint's settings (64-wide heads, linear
    projections, transformer depths per level, SDXL's text_time embedding of the vector y), from our config."""
    from diffusers import UNet2DConditionModel

    levels = len(config.block_channels)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.cross_attention_levels))
    depths = [config.depth_at(level) for level in range(levels)]
    extra = {}
    if config.adm_in_channels is not None:
        extra = dict(addition_embed_type="text_time", addition_time_embed_dim=config.size_embed_dim,
                     projection_class_embeddings_input_dim=config.adm_in_channels)  # fmt: skip
    return UNet2DConditionModel(
        sample_size=128, in_channels=config.in_channels, out_channels=config.out_channels,
        block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
        down_block_types=down, up_block_types=up, cross_attention_dim=config.context_dim,
        # diffusers' quirk: attention_head_dim holds the number of heads per level
        attention_head_dim=tuple(config.heads_at(c) for c in config.block_channels),
        norm_num_groups=config.norm_groups, norm_eps=config.norm_eps,
        transformer_layers_per_block=depths if config.mid_transformer_depth is None else config.mid_transformer_depth,
        use_linear_projection=config.linear_projection, flip_sin_to_cos=True, freq_shift=0, **extra,
    )  # fmt: skip


def _reference_vae(config: VAEConfig):
    from diffusers import AutoencoderKL

    n = len(config.block_channels)
    return AutoencoderKL(
        in_channels=config.in_channels, out_channels=config.in_channels, latent_channels=config.latent_channels,
        block_out_channels=config.block_channels, layers_per_block=config.layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        norm_num_groups=config.norm_groups,
    )


def _time(fn, repeat: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        fn()
        sync()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    torch.manual_seed(0)

    rows = []
    unet_cfg, vae_cfg = UNetConfig(), VAEConfig()
    ours_unet = UNet(unet_cfg).eval()
    ref_unet = _reference_unet(unet_cfg).eval()
    ours_unet.load_state_dict(ref_unet.state_dict())
    x = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    t = torch.tensor([500.0, 500.0], device=device)
    ctx = torch.randn(2, 77, 768, device=device, dtype=dtype)
    for name, model, call in (
        ("atelier", ours_unet, lambda m: m(x, t, ctx)),
        ("diffusers", ref_unet, lambda m: m(x, t, ctx).sample),
    ):
        model.to(device, dtype)
        rows.append(("UNet fwd, batch 2, 64x64", name, _time(lambda m=model, c=call: c(m), args.repeat, device)))
        model.to("cpu")
    del ours_unet, ref_unet

    ours_vae = VAE(vae_cfg).eval()
    ref_vae = _reference_vae(vae_cfg).eval()
    ours_vae.load_state_dict(ref_vae.state_dict())
    z = torch.randn(1, 4, 64, 64, device=device, dtype=dtype)
    for name, model, call in (
        ("atelier", ours_vae, lambda m: m.decode(z)),
        ("diffusers", ref_vae, lambda m: m.decode(z).sample),
    ):
        model.to(device, dtype)
        rows.append(("VAE decode, 512x512", name, _time(lambda m=model, c=call: c(m), args.repeat, device)))
        model.to("cpu")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    header = f"device {device} ({name})"
    print(f"{header}, dtype {dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'what':28} {'impl':10} {'ms (median)':>12}")
    for what, impl, ms in rows:
        print(f"{what:28} {impl:10} {ms:12.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "dtype": str(dtype), "torch": torch.__version__,
                       "results": [{"what": w, "impl": i, "ms": round(m, 2)} for w, i, m in rows]}, f, indent=1)


if __name__ == "__main__":
    main()
