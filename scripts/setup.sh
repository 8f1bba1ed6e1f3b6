#!/usr/bin/env bash
# Creates .venv and installs Atelier into it. Idempotent: a second run with nothing changed takes ~1 s.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     runtime + the reference implementations the tests compare against
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3

[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# One stamp per (extra, pyproject) so nothing is reinstalled when nothing changed.
stamp=".venv/.setup-stamp-${extra:-run}-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0

# PyTorch: keep whatever build is there; else CUDA where a GPU is visible, the pinned CPU build otherwise.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" torch
    else
        "${pip[@]}" torch==2.13.0
    fi
fi

# The CLIP BPE vocabulary ships inside open-clip-torch (bpe_simple_vocab_16e6.txt.gz). We only read that data
# file, so install it without its dependencies (which would pull torchvision and another torch).
"${pip[@]}" --no-deps open-clip-torch==3.3.0

if [ "$extra" = "test" ]; then
    "${pip[@]}" -e ".[test,cluster]"  # cluster: the Ray workers' tests
    # End-to-end tests drive the system Chromium (Debian's package); browser downloads are not possible here.
    if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
    fi
else
    "${pip[@]}" -e .
fi
# Byte-compiled once here, Atelier's modules load ~0.2 s sooner on every command, also where PYTHONDONTWRITEBYTECODE
# keeps Python from caching them itself (measured on `atelier generate` with the embedded model, 2 CPU cores).
.venv/bin/python -m compileall -q atelier >/dev/null
rm -f .venv/.setup-stamp-"${extra:-run}"-*
touch "$stamp"
