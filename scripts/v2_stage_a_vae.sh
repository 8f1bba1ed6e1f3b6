#!/usr/bin/env bash
# Session A, call 2 of docs/world-v2.md's GPU plan: the shipped VAE continued on the second world, because call 1's
# check read only 48.9% of v2 object kinds through it (the plan's bar is 95%). The vae stage judges the VAE it starts
# from and the one it trains with call 1's v2 classifier, and keeps the one the judge reads better.
#   bash scripts/v2_stage_a_vae.sh                   on the GPU machine, with .carry/stage-a/classifier.safetensors
#   START_VAE=.carry/stage-a/vae.safetensors STEPS=7000 BUDGET=520 bash scripts/v2_stage_a_vae.sh
#                                                    call 3: continue call 2's VAE (no shipped pack needed, so the
#                                                    50 MB asset can stay home and the 15.5 MB VAE can travel)
#   INIT=tiny.safetensors CLASSIFIER=c.safetensors EXTRA="--tiny --device cpu --steps 3 --batch 4 --images 32 \
#       --workers 1" bash scripts/v2_stage_a_vae.sh  the same commands at tiny scale on a CPU (to prove them)
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/embedded
read -r -a extra <<<"${EXTRA:-}"
python3 -c "import ftfy, regex" 2>/dev/null || python3 -m pip install -q --no-index --no-deps .carry/wheels/*.whl
# The shipped weights first (what --init does), then the v2 judge over the v1 classifier they hold. Loading a
# checkpoint builds its tokenizer, hence the vocabulary that gpu_train.sh also points to.
export ATELIER_CLIP_VOCAB="$PWD/.carry/bpe_simple_vocab_16e6.txt.gz"
mkdir -p "$run"
if [ -n "${START_VAE:-}" ]; then
    cp "$START_VAE" "$run/vae.safetensors"
else
    PYTHONPATH="$PWD" python3 -c "import sys; from pathlib import Path; from atelier.world.train.pack import unpack; \
unpack(Path(sys.argv[1]), Path(sys.argv[2]))" "${INIT:-atelier/assets/embedded.safetensors}" "$run"
fi
cp "${CLASSIFIER:-.carry/stage-a/classifier.safetensors}" "$run/classifier.safetensors"
bash scripts/gpu_train.sh --world v2 --seed 0 --images 100000 --captions 1 --workers 16 --out "$run" \
    --stage vae --steps "${STEPS:-3000}" --batch 128 --budget "${BUDGET:-330}" "${extra[@]}"
if [ -n "${OUT:-}" ]; then
    cp "$run"/vae.safetensors "$OUT/"
    tar czf "$OUT/logs.tgz" "$run"/*.jsonl
    ls -la "$OUT"
fi
