"""The training code of the embedded model, at tiny scale on the CPU: every stage runs, resumes and packs."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from atelier.models.checkpoint import load_checkpoint
from atelier.models.library import native_size
from atelier.models.vae import VAE
from atelier.world.train import main
from atelier.world.train.decoder import DecoderOptions
from atelier.world.train.shapes import EmbeddedShapes
from atelier.world.train.unet import UNetOptions, pick_captions
from atelier.world.train.vae import VAEOptions, round_trip_judge, widen_latent_channels
from atelier.world.train.weights import load_trained_vae


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


def test_caption_noise_pairs_images_with_other_captions_and_leaves_clean_runs_as_they_were():
    idx = torch.arange(1000) % 50
    said, pick, drop = pick_captions(idx, (50, 4), torch.Generator().manual_seed(0), dropout=0.1, noise=0.0)
    assert torch.equal(said, idx)
    # without noise, the draws are exactly those of the code before the option existed: pick, then drop
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(pick, torch.randint(0, 4, (1000,), generator=gen))
    assert torch.equal(drop, torch.rand(1000, generator=gen) < 0.1)
    assert 0.05 < drop.float().mean() < 0.15

    said, pick, drop = pick_captions(idx, (50, 4), torch.Generator().manual_seed(0), dropout=0.0, noise=0.4)
    wrong = (said != idx).float().mean()
    assert 0.3 < wrong < 0.45  # 40% draw another image, which is the same one 1 time in 50
    assert said.min() >= 0 and said.max() < 50 and not drop.any() and pick.max() < 4


def test_vae_stage_keeps_the_autoencoder_the_judge_reads_better(tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = ["--tiny", "--images", "16", "--workers", "1", "--batch", "4", "--device", "cpu", "--out", str(out)]
    main(["--stage", "vae", "--stage", "classifier", "--steps", "2", *common])
    (out / "vae.state.pt").unlink()  # as after --init: the stage starts from vae.safetensors
    before = load_file(str(out / "vae.safetensors"))
    vae = load_trained_vae(out).eval()
    judge = round_trip_judge(out, size=32, workers=1, count=8)
    ceiling = judge(vae)
    assert 0.0 <= ceiling <= 1.0 and not vae.training  # a share of objects; the VAE's mode is left as it was
    assert judge(vae) == ceiling  # the same scenes for every VAE it judges
    assert round_trip_judge(tmp_path / "no-classifier", size=32, workers=1) is None

    readings = iter([0.9, 0.5])  # the judge reads worse after training: the first VAE stays
    monkeypatch.setattr("atelier.world.train.vae.round_trip_judge", lambda *args, **kw: lambda vae: next(readings))
    main(["--stage", "vae", "--steps", "2", "--edge-weight", "1.0", *common])
    conv_out = "decoder.conv_out.weight"
    assert torch.equal(before[conv_out], load_file(str(out / "vae.safetensors"))[conv_out])
    *_, loss, judged = (json.loads(line) for line in (out / "vae.log.jsonl").read_text().splitlines())
    assert judged == {"step": 2, "judge_kind_before": 0.9, "judge_kind_after": 0.5}
    assert loss["loss"] == pytest.approx(loss["l1"] + 1.0 * loss["edge"] + 1e-6 * loss["kl"], rel=1e-4)

    # resumed (its state says step 2 of 4) after the first VAE was kept: still compared with that one, and better
    readings = iter([0.5, 0.9])
    main(["--stage", "vae", "--steps", "4", *common])
    assert not torch.equal(before[conv_out], load_file(str(out / "vae.safetensors"))[conv_out])
    *_, loss, judged = (json.loads(line) for line in (out / "vae.log.jsonl").read_text().splitlines())
    assert judged == {"step": 4, "judge_kind_before": 0.5, "judge_kind_after": 0.9}
    assert loss["loss"] == pytest.approx(loss["l1"] + 0.5 * loss["edge"] + 1e-6 * loss["kl"], rel=1e-4)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--caption-noise", "40", "from 0 to 1"),
        ("--caption-noise", "-0.1", "from 0 to 1"),
        ("--edge-weight", "-1", "0 or more"),
    ],
)
def test_training_flags_out_of_range_are_refused_with_one_sentence(flag, value, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--stage", "unet", flag, value, "--tiny", "--device", "cpu", "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} is a" in err and expected in err and value in err


@pytest.mark.parametrize(
    ("options", "values", "sentence"),
    [
        (UNetOptions, {"caption_dropout": 1.5}, "caption_dropout is a share of the captions, from 0 to 1; got 1.5"),
        (UNetOptions, {"ema_decay": -0.1}, "ema_decay is a decay per step, from 0 to 1; got -0.1"),
        (UNetOptions, {"caption_noise": 2.0}, "--caption-noise is a share of the captions, from 0 to 1; got 2.0"),
        (DecoderOptions, {"latent_noise": -1.0}, "latent_noise is a standard deviation, 0 or more; got -1.0"),
        (VAEOptions, {"edge_weight": -2.0}, "--edge-weight is a loss weight, 0 or more; got -2.0"),
        (VAEOptions, {"latent_channels": 0}, "--latent-channels is a number of channels, 1 or more; got 0"),
    ],
)
def test_stage_options_refuse_values_out_of_range_with_one_sentence(options, values, sentence):
    with pytest.raises(ValueError, match=f"^{re.escape(sentence)}$"):
        options(**values)
    (name, value), defaults = next(iter(values.items())), options()  # the defaults are in range
    with pytest.raises(dataclasses.FrozenInstanceError):  # a stage cannot change its options half-way
        setattr(defaults, name, value)


def test_a_widened_latent_draws_the_same_images_and_its_new_channels_learn():
    torch.manual_seed(0)
    config = EmbeddedShapes.tiny().vae
    narrow = VAE(config).eval()
    wide = VAE(dataclasses.replace(config, latent_channels=8)).eval()
    wide.load_state_dict(widen_latent_channels(narrow.state_dict(), 8))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = narrow.encode(images), wide.encode(images)
    torch.testing.assert_close(b.mean[:, :4], a.mean)
    torch.testing.assert_close(b.logvar[:, 4:], a.logvar)  # the new channels' noise is the old channels'
    assert b.mean[:, 4:].std() > 0  # they carry something of the image from the start
    torch.testing.assert_close(wide.decode(b.mean), narrow.decode(a.mean))  # ... which the decoder does not read yet
    # both sides of a new channel get a gradient on the first step
    (wide.decode(wide.encode(images).mean) - images).abs().mean().backward()
    assert wide.decoder.conv_in.weight.grad[:, 4:].abs().sum() > 0
    with pytest.raises(ValueError, match="widen a VAE, not narrow it: it has 8, asked for 4"):
        widen_latent_channels(wide.state_dict(), 4)


def test_the_vae_stage_widens_an_existing_vae_and_the_unet_stage_says_it_does_not_fit(tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = ["--tiny", "--images", "16", "--workers", "1", "--batch", "4", "--device", "cpu", "--out", str(out)]
    main(["--stage", "vae", "--steps", "1", *common])
    (out / "vae.state.pt").unlink()
    readings = iter([0.5, 0.6])  # the judge reads more through the widened one: it is kept
    monkeypatch.setattr("atelier.world.train.vae.round_trip_judge", lambda *args, **kw: lambda vae: next(readings))
    main(["--stage", "vae", "--steps", "2", "--latent-channels", "8", *common])
    assert load_trained_vae(out).config.latent_channels == 8
    assert load_file(str(out / "vae.safetensors"))["decoder.conv_in.weight"].shape[1] == 8
    with pytest.raises(ValueError, match="has 8 latent channels and the UNet's shapes expect 4"):
        main(["--stage", "unet", "--steps", "1", *common])
