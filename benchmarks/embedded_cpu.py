"""How fast the embedded model makes one image on this machine: the workshop laptop's budget.

    .venv/bin/python benchmarks/embedded_cpu.py [--repeat 5] [--device cpu] [--json out.json]

1. Generation time: one 20-step, CFG 7.5 image at the native size (128x128), euler/normal, in a warm process
   (prompt encoding + sampling + VAE decode; the model already loaded). Median of --repeat runs.
2. Command time: `atelier generate "<prompt>"` from process start to the PNG on disk, as a user runs it.
   Median of --repeat runs.
Bars from the issue: generation <= 1.5 s and command <= 5 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "un soleil jaune au-dessus d'une maison rouge"


def generation_seconds(repeat: int, device: str) -> list[float]:
    from atelier.generation import GenerationParams, run
    from atelier.models.checkpoint import load_checkpoint
    from atelier.models.library import embedded_model_path

    ckpt = load_checkpoint(embedded_model_path(), device=device)
    params = GenerationParams(PROMPT, seed=1, steps=20, cfg=7.5, width=128, height=128)
    run(ckpt, params)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(ckpt, params)
        times.append(time.perf_counter() - start)
    return times


def command_seconds(repeat: int) -> list[float]:
    exe = Path(sys.executable).with_name("atelier")
    times = []
    with tempfile.TemporaryDirectory() as out:
        for i in range(repeat + 1):
            start = time.perf_counter()
            subprocess.run([str(exe), "generate", PROMPT, "--seed", str(i), "--out", out], check=True,
                           capture_output=True)
            if i:  # the first run warms the OS file cache
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    gen = generation_seconds(args.repeat, args.device)
    cmd = command_seconds(args.repeat)
    result = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "generation_s_median": round(statistics.median(gen), 3),
        "generation_s": [round(t, 3) for t in gen],
        "command_s_median": round(statistics.median(cmd), 3),
        "command_s": [round(t, 3) for t in cmd],
    }
    print(f"cores {result['cpu_count']}, torch {result['torch']} ({result['torch_threads']} threads)")
    print(f"generation, 20 steps CFG 7.5 128x128: median {result['generation_s_median']:.2f} s (bar 1.5 s)")
    print(f"`atelier generate` start to PNG:      median {result['command_s_median']:.2f} s (bar 5 s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
