"""`atelier generate / info / run`: PNGs that carry their parameters, one-sentence errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.images import png_metadata
from atelier.models.library import EMBEDDED_PATH

needs_model = pytest.mark.skipif(not EMBEDDED_PATH.exists(), reason="the embedded model is not in this checkout")


@needs_model
def test_generate_writes_png_with_comfyui_and_a1111_metadata(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "un soleil jaune au-dessus d'une maison rouge", "--seed", "3", "--steps", "8",
                 "--out", str(out)])
    assert code == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["atelier_00001_.png"]
    meta = png_metadata(files[0])
    prompt = meta["prompt"]
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (3, 8, 7.5, "euler")
    assert {n["type"] for n in meta["workflow"]["nodes"]} >= {"CheckpointLoaderSimple", "KSampler", "SaveImage"}
    assert meta["parameters"].startswith("un soleil jaune au-dessus d'une maison rouge\nSteps: 8, Sampler: Euler")
    assert Image.open(files[0]).size == (128, 128)  # the embedded model's native size

    # a second run never overwrites the first
    assert main(["generate", "x", "--seed", "3", "--steps", "2", "--out", str(out)]) == 0
    assert sorted(f.name for f in out.glob("*.png")) == ["atelier_00001_.png", "atelier_00002_.png"]

    capsys.readouterr()
    assert main(["info", str(files[0])]) == 0
    shown = capsys.readouterr().out
    assert "Seed: 3" in shown and '"KSampler"' in shown


@needs_model
def test_out_ending_in_png_is_the_file_written(tmp_path, capsys):
    """`--out x.png` (or `-o`) writes the file x.png, not a folder of that name; a batch adds _2, _3."""
    target = tmp_path / "pictures" / "x.png"
    assert main(["generate", "un soleil jaune", "--seed", "1", "--steps", "1", "--width", "32", "--height", "32",
                 "-o", str(target)]) == 0
    assert target.is_file() and Image.open(target).size == (32, 32)
    assert capsys.readouterr().out.split() == [str(target)]
    batch = tmp_path / "batch.PNG"
    assert main(["generate", "x", "--steps", "1", "--width", "32", "--height", "32", "--batch", "2",
                 "--out", str(batch)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["batch.PNG", "batch_2.PNG"]


@needs_model
def test_timings_name_every_phase_of_a_generate_and_add_up(tmp_path, capsys):
    """`--timings`: one line at the end, each phase with its seconds, and their sum as "in all"."""
    assert main(["generate", "un soleil jaune", "--seed", "1", "--steps", "3", "--width", "32", "--height", "32",
                 "-o", str(tmp_path / "x.png"), "--timings"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("timings: ")
    body, _, total = line.removeprefix("timings: ").rpartition("; in all ")
    phases = dict(part.rsplit(" ", 2)[:2] for part in body.split(", "))
    assert {"inputs and loading", "prompt and first step (compile or capture)", "2 more steps", "decode", "PNG"} <= set(
        phases
    ), phases
    rounding = 0.005 * (len(phases) + 1)  # each phase and the total are rounded to 0.01 s on their own
    assert sum(map(float, phases.values())) == pytest.approx(float(total.removesuffix(" s")), abs=rounding)


def test_out_naming_another_image_format_is_refused_before_anything_runs(tmp_path, capsys):
    assert main(["generate", "x", "--steps", "1", "-o", str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: --out ") and "expected a name ending in .png" in err
    assert list(tmp_path.iterdir()) == []


@needs_model
def test_run_reproduces_a_generated_png_through_the_node_graph(tmp_path):
    """One engine: the graph embedded in the PNG, run by the node executor, gives the same pixels."""
    out = tmp_path / "out"
    assert main(["generate", "a big green tree on the right", "--seed", "11", "--steps", "6", "--out", str(out)]) == 0
    made = out / "atelier_00001_.png"
    data = tmp_path / "data"
    assert main(["run", str(made), "--data-dir", str(data)]) == 0
    rerun = next((data / "output").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(rerun)))
    # --set changes an input by class name
    assert main(["run", str(made), "--data-dir", str(data), "--set", "KSampler.seed=12"]) == 0
    assert len(list((data / "output").glob("*.png"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "eulerr"], "Sampler 'eulerr' is not known"),
        (["--width", "100"], "Width must be a positive multiple of 8, got 100."),
        (["--steps", "0"], "Steps must be a whole number from 1 to 10000, got 0."),
        (["--cfg", "-2"], "CFG must be a number from 0 to 100, got -2.0."),
        (["--model", "/nowhere/model.safetensors"], "Model '/nowhere/model.safetensors' was not found"),
        (["--mask", "m.png"], "--mask needs --init-image"),
        (["--init-image", "/nowhere.png"], "The init image '/nowhere.png' does not exist"),
    ],
)
def test_bad_values_exit_2_with_one_sentence_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["generate", "a cat", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier: ") and message in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_run_refuses_an_invalid_workflow(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "KSampler", "inputs": {"steps": 0}}}))
    assert main(["run", str(bad), "--data-dir", str(tmp_path / "data")]) == 2
    assert "does not validate" in capsys.readouterr().err


def test_info_on_a_png_without_parameters(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["info", str(plain)]) == 2
    assert "holds no generation parameters" in capsys.readouterr().err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "atelier.cli", "generate", "x", "--steps", "0"],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert result.returncode == 2 and "Steps must be a whole number" in result.stderr


@needs_model
def test_generate_with_loras_embeds_lora_loaders_and_reruns_identically_through_the_graph(tmp_path, capsys):
    """`--lora FILE:STRENGTH` twice: the PNG's graph chains two LoraLoader nodes and its A1111 text names them;
    `atelier run` on that PNG, with the files in models/loras, gives the same pixels."""
    import shutil

    from atelier.models.checkpoint import load_checkpoint
    from tests.graph.test_comfyui_workflows import random_kohya_lora

    ckpt = load_checkpoint(EMBEDDED_PATH, device="cpu")
    random_kohya_lora(tmp_path / "style.safetensors", ckpt.unet, ckpt.text_encoder)
    out = tmp_path / "out"
    base = ["generate", "a red house", "--seed", "5", "--steps", "4", "--out", str(out)]
    assert main(base) == 0
    lora_args = ["--lora", f"{tmp_path / 'style.safetensors'}:0.7", "--lora", str(tmp_path / "style.safetensors")]
    assert main([*base, *lora_args]) == 0
    assert "style.safetensors: " in capsys.readouterr().err  # the summary of what it patches
    plain, made = out / "atelier_00001_.png", out / "atelier_00002_.png"
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(made)))
    meta = png_metadata(made)
    loaders = [n["inputs"] for n in meta["prompt"].values() if n["class_type"] == "LoraLoader"]
    assert [(n["lora_name"], n["strength_model"], n["strength_clip"]) for n in loaders] == [
        ("style.safetensors", 0.7, 0.7),
        ("style.safetensors", 1.0, 1.0),
    ]
    assert meta["parameters"].startswith("a red house <lora:style:0.7> <lora:style:1>\n")

    data = tmp_path / "data"
    (data / "models" / "loras").mkdir(parents=True)
    shutil.copyfile(tmp_path / "style.safetensors", data / "models" / "loras" / "style.safetensors")
    assert main(["run", str(made), "--data-dir", str(data)]) == 0
    rerun = next((data / "output").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(rerun)))


def test_a_missing_lora_file_is_one_sentence(tmp_path, capsys):
    assert main(["generate", "a cat", "--out", str(tmp_path), "--lora", "/nowhere/x.safetensors:0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["atelier: --lora /nowhere/x.safetensors:0.5: /nowhere/x.safetensors is not a file; expected "
                   "FILE[:STRENGTH], e.g. style.safetensors:0.8."]
