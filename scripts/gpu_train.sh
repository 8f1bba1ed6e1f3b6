#!/usr/bin/env bash
# Train the embedded model on a GPU machine with no package index (the lent H100/H200 machines).
#   bash scripts/gpu_train.sh [atelier.world.train arguments...]
# Runs one process per GPU with torchrun (DDP). Needs .carry/ (ignored by git) prepared on the workstation:
#   .carry/wheels/*.whl                 pure-Python deps missing there (ftfy, wcwidth, regex, tqdm) for its Python
#   .carry/bpe_simple_vocab_16e6.txt.gz the CLIP vocabulary (from the open-clip-torch package)
#   .carry/DejaVuSans.ttf               a font with accents, for sample sheets drawn there
# When $OUT is set, the packed checkpoint (split in 15 MB parts), its extras and the logs are copied there.
set -euo pipefail
cd "$(dirname "$0")/.."
# NVLink multicast stays off on shared hosts (see the device notes).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -c "import ftfy, regex" 2>/dev/null || python3 -m pip install -q --no-index --no-deps .carry/wheels/*.whl
export ATELIER_CLIP_VOCAB="$PWD/.carry/bpe_simple_vocab_16e6.txt.gz" ATELIER_FONT="$PWD/.carry/DejaVuSans.ttf" PYTHONPATH="$PWD"
ngpu=$(nvidia-smi -L | wc -l)
nvidia-smi -L
torchrun --standalone --nproc_per_node="$ngpu" -m atelier.world.train "$@"

if [ -n "${OUT:-}" ]; then
    run=runs/embedded
    for f in "$run"/*.safetensors; do
        case "$f" in *-extras.safetensors) cp "$f" "$OUT/";; */embedded.safetensors) split -b 15m "$f" "$OUT/embedded.part-";; esac
    done
    tar czf "$OUT/logs.tgz" "$run"/*.jsonl
    ls -la "$OUT"
fi
