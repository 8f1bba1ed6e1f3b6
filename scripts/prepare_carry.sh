#!/usr/bin/env bash
# Prepare .carry/ (ignored by git) for the lent GPU machines, which have Python 3.12 + torch but no package index:
#   .carry/wheels/*.whl                 pure-Python deps they lack (ftfy, wcwidth, regex, tqdm) and, for
#                                       benchmarks/gpu.py, diffusers without its pipelines (the full wheel would push
#                                       the travelling working tree over its 64 MiB limit)
#   .carry/bpe_simple_vocab_16e6.txt.gz the CLIP vocabulary (from the open-clip-torch package)
#   .carry/DejaVuSans.ttf               a font with accents for the French captions of `atelier eval`'s sample sheet
#   .carry/small/                       scripts/gpu_classroom.sh's carry: ftfy, wcwidth, regex, tqdm, segno wheels
#                                       and the vocabulary (1.9 MB: it fits beside the tree, whose 57.6 MiB leave 6)
#   .carry/stub/                        an empty comfyui_frontend_package: a server needs no 29 MB editor bundle to
#                                       serve prompts (the benchmark's learners are HTTP + WebSocket clients)
# Then name ".carry" in the device call's `carry` and read it as scripts/gpu_train.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .carry/wheels && mkdir -p .carry/wheels  # two versions of a wheel would make pip refuse both
pip=(.venv/bin/python -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d .carry/wheels)
"${pip[@]}" ftfy wcwidth regex tqdm importlib_metadata zipp
"${pip[@]}" diffusers==0.42.1
# Drop diffusers' pipeline subpackages but SDXL's (models, schedulers and loaders stay): ~3 MB instead of ~5 MB.
.venv/bin/python - <<'PY'
import glob, zipfile, os
KEEP = {"stable_diffusion_xl"}  # benchmarks/gpu.py's SDXL txt2img row runs StableDiffusionXLPipeline
src = glob.glob(".carry/wheels/diffusers-0.42.1-*.whl")[0]
tmp = src + ".tmp"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        parts = item.filename.split("/")
        if parts[:2] == ["diffusers", "pipelines"] and len(parts) > 3 and parts[2] not in KEEP:
            continue
        zout.writestr(item, zin.read(item.filename))
os.replace(tmp, src)
PY
cp .venv/lib/python3.11/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz .carry/
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf .carry/
rm -rf .carry/small && mkdir -p .carry/small .carry/stub/comfyui_frontend_package/static  # one version of each
cp .carry/wheels/{ftfy,wcwidth,regex,tqdm}-*.whl .carry/bpe_simple_vocab_16e6.txt.gz .carry/small/
.venv/bin/python -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d .carry/small segno
touch .carry/stub/comfyui_frontend_package/__init__.py
ls -la .carry .carry/wheels .carry/small
