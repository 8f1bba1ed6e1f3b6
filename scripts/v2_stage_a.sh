#!/usr/bin/env bash
# Session A, call 1 of docs/world-v2.md's GPU plan, on the second world: the judge (attribute classifier with v2's
# heads) from scratch, the shipped VAE read through it (the classifier stage's round-trip check), and the text
# encoder with its image tower (clip) continued from the shipped weights on v2 captions.
#   bash scripts/v2_stage_a.sh                       on the GPU machine: writes runs/embedded, results to $OUT
#   INIT=tiny.safetensors EXTRA="--tiny --device cpu --steps 3 --batch 4 --images 32 --workers 1" \
#       bash scripts/v2_stage_a.sh                   the same commands at tiny scale on a CPU (to prove them)
# Each stage stops at its --budget (seconds) and saves a resumable <stage>.state.pt before the call's limit.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/embedded
common=(--world v2 --seed 0 --images 100000 --workers 16 --out "$run")
read -r -a extra <<<"${EXTRA:-}"
bash scripts/gpu_train.sh "${common[@]}" --init "${INIT:-atelier/assets/embedded.safetensors}" \
    --stage classifier --steps 5000 --batch 256 --budget 180 "${extra[@]}"
bash scripts/gpu_train.sh "${common[@]}" --stage clip --steps 4000 --batch 512 --budget 290 "${extra[@]}"
if [ -n "${OUT:-}" ]; then  # at most 8 files of 16 MiB come back: the fp32 text encoder (28.6 MB) in two parts
    cp "$run"/classifier.safetensors "$run"/image_encoder.safetensors "$OUT/"
    split -b 15m "$run"/text_encoder.safetensors "$OUT/text_encoder.safetensors.part-"
    tar czf "$OUT/logs.tgz" "$run"/*.jsonl
    ls -la "$OUT"
fi
