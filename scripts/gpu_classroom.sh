#!/usr/bin/env bash
# The classroom benchmark on a lent GPU machine (no package index there): batching off vs on, side by side, for
# random SD1.5-size weights at 512x512, 20 steps (WHICH=sd15) or the embedded model at 128 (WHICH=embedded).
# Needs .carry/small (ignored by git): ftfy, wcwidth, regex, segno wheels and the CLIP vocabulary; and
# .carry/stub: an empty comfyui_frontend_package (the editor's 29 MB bundle is not needed to serve prompts).
#   WHICH=sd15 bash scripts/gpu_classroom.sh          (writes $OUT/classroom-gpu-sd15.json and the servers' logs)
#   WHICH="embedded sd15" runs both in turn; COMPILE=none serves with --compile none (CUDA graphs, no compile
#   wait); PROFILE=20 records the servers' stacks with py-spy when .carry/small/py-spy.gz is there; BATCH_SIZE=16
#   merges up to 16 images per sampling call.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/small/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:$PWD/.carry/stub" ATELIER_CLIP_VOCAB="$PWD/.carry/small/bpe_simple_vocab_16e6.txt.gz"
export PYTHONUNBUFFERED=1 ATELIER_COMPILE_CACHE="${ATELIER_COMPILE_CACHE:-/tmp/atelier-compile-cache}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
out="${OUT:-/tmp/out}"
mkdir -p "$out"
if [ -f .carry/small/py-spy.gz ]; then  # py-spy, if carried (gzipped: the carry limit is 64 MiB)
  mkdir -p /tmp/bin && gunzip -c .carry/small/py-spy.gz > /tmp/bin/py-spy && chmod +x /tmp/bin/py-spy
  export PATH="/tmp/bin:$PATH"
fi
extra=(--profile "${PROFILE:-0}")
[ -n "${COMPILE:-}" ] && extra+=(--compile "$COMPILE")
[ -n "${BATCH_SIZE:-}" ] && extra+=(--batch-size "$BATCH_SIZE")  # the server's --batch-size (default 8 on a GPU)
for which in ${WHICH:-sd15}; do
case "$which" in
  sd15) python3 benchmarks/classroom.py --sd15 --size 512 --steps 20 --learners "${LEARNERS:-24}" \
          --duration "${DURATION:-75}" --warmup "${WARMUP:-30}" --drain 60 --batching "${BATCHING:-both}" \
          --note "one H200, random SD1.5-size weights, bf16 fast path" \
          --json "$out/classroom-gpu-sd15.json" --logs "$out/logs-sd15" "${extra[@]}" ;;
  embedded) python3 benchmarks/classroom.py --size 128 --steps 20 --learners "${LEARNERS:-30}" \
          --duration "${DURATION:-45}" --warmup "${WARMUP:-20}" --drain 40 --batching "${BATCHING:-both}" \
          --note "one H200, the embedded model, fp32 fast path (its default on a GPU)" \
          --json "$out/classroom-gpu-embedded.json" --logs "$out/logs-embedded" "${extra[@]}" ;;
esac
done
