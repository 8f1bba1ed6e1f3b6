"""The training code of the embedded model, at tiny scale on the CPU: every stage runs, resumes and packs."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from atelier.models.checkpoint import load_checkpoint
from atelier.models.library import native_size
from atelier.world.train import main


def test_all_stages_run_resume_and_pack_into_a_loadable_checkpoint(tmp_path):
    out, packed = tmp_path / "run", tmp_path / "model.safetensors"
    common = ["--tiny", "--images", "32", "--workers", "1", "--batch", "4", "--device", "cpu", "--out", str(out)]
    main(["--stage", "vae", "--stage", "clip", "--stage", "classifier", "--stage", "unet", "--steps", "3", *common])
    for name in ("vae", "text_encoder", "image_encoder", "classifier", "unet_ema"):
        assert (out / f"{name}.safetensors").exists(), name
    unet_log = [json.loads(line) for line in (out / "unet.log.jsonl").read_text().splitlines()]
    assert unet_log[-1]["step"] == 3 and unet_log[-1]["loss"] > 0

    # without its optimiser state, the vae stage starts from the weights in --out (what --init unpacks)
    (out / "vae.state.pt").unlink()
    before = load_file(str(out / "vae.safetensors"))
    main(["--stage", "vae", "--steps", "0", *common])
    after = load_file(str(out / "vae.safetensors"))
    assert torch.equal(before["encoder.conv_in.weight"], after["encoder.conv_in.weight"])

    # the decoder-only stage keeps the encoder, hence every latent the UNet was trained on
    before = load_file(str(out / "vae.safetensors"))
    main(["--stage", "decoder", "--steps", "2", *common])
    after = load_file(str(out / "vae.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])

    # a second call with more steps resumes at step 3 instead of starting over
    main(["--stage", "unet", "--steps", "5", "--pack", str(packed), *common])
    unet_log = [json.loads(line) for line in (out / "unet.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in unet_log] == [3, 5]

    ckpt = load_checkpoint(packed, device="cpu")
    assert ckpt.family == "sd1" and ckpt.unet_config.block_channels == (16, 32)
    assert native_size(packed) == 32
    assert packed.with_name("model-extras.safetensors").exists()
    # the shipped weights are fp16 and equal the EMA weights the last stage wrote
    ema = load_file(str(out / "unet_ema.safetensors"))
    torch.testing.assert_close(ckpt.unet.state_dict()["conv_in.weight"], ema["conv_in.weight"].half().float())
