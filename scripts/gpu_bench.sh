#!/usr/bin/env bash
# Issue 19's measurements in one call on a lent GPU machine (10-minute limit): $OUT/gpu-h200.json, its log beside.
#   bash scripts/gpu_bench.sh [more benchmarks/gpu.py arguments, e.g. --variants ...]
# Needs .carry/ as scripts/prepare_carry.sh makes it (.carry/wheels or .carry/small, the CLIP vocabulary). diffusers
# is installed only with ATELIER_BENCH_DIFFUSERS=1 (its rows need a second random UNet, ~20 s of the budget).
# Every section has a budget and the JSON is rewritten after every row, so a run cut short keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/atelier-bench}
mkdir -p "$OUT"
# ATELIER_BENCH_NO_INSTALL=1: a machine that has the packages already (a workstation's smoke run).
if [ "${ATELIER_BENCH_NO_INSTALL:-0}" != 1 ]; then
    carried=.carry/wheels
    [ -d "$carried" ] || carried=.carry/small  # gpu_classroom.sh's carry: a call can run both scripts
    wheels=$(ls "$carried"/*.whl | grep -v diffusers)
    [ "${ATELIER_BENCH_DIFFUSERS:-0}" = 1 ] && wheels=$(ls "$carried"/*.whl)
    python3 -m pip install -q --no-index --no-deps $wheels 2>&1 | tail -2
fi
for vocab in .carry/bpe_simple_vocab_16e6.txt.gz .carry/small/bpe_simple_vocab_16e6.txt.gz; do
    [ -f "$vocab" ] && export ATELIER_CLIP_VOCAB="$PWD/$vocab" && break
done
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
timeout 510 python3 benchmarks/gpu.py --json "$OUT/gpu-h200.json" --budget 460 \
    --sections unet,txt2img,quality,sweep,start,profile \
    --variants readable,graphs,fp8+graphs,blocks+graphs,fp8,fp8-row \
    --budgets unet=180,txt2img=100,quality=60,sweep=40,start=100,profile=60 \
    "$@" 2>&1 | tee "$OUT/gpu-h200.log" | grep --line-buffered -v "^USDT"
echo "exit: ${PIPESTATUS[0]}"
ls -la "$OUT"
