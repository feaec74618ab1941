#!/usr/bin/env bash
# GPU checks, for a machine with CUDA:
#   1. benchmarks/paper_iteration.py: one LRB-WREL iteration (bank step + student step + EMA) of
#      the paper model (Swin-B 480 px + BERT-base, random weights) at batch 8 in bf16; the median
#      time and peak memory go to the JSON file (default: $OUT/paper_iteration.json when $OUT is
#      set, else ./paper_iteration.json);
#   2. benchmarks/rmsin_check.py: the paper's network (rmsin) forward + backward at 480 px
#      (throughput, peak memory) and 300 steps of lrb-paper's first stage at 480 px on the
#      synthetic benchmark, random towers, printing the loss and a one-screen summary (JSON:
#      $OUT/rmsin_check.json or ./rmsin_check.json; CPU code path: --tiny --device cpu);
#   3. benchmarks/check_gpu.py: a bf16 smoke run of every method on a tiny synthetic benchmark
#      (skipped with --paper-only).
# Without CUDA it prints a message and exits 0. CPU check of step 1's code path:
#   .venv/bin/python benchmarks/paper_iteration.py --dry-run
# Usage: bash benchmarks/check_gpu.sh [--paper-only] [--output FILE.json]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-.venv/bin/python}
OUTPUT="${OUT:-.}/paper_iteration.json"
SMOKE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --paper-only) SMOKE=0 ;;
    --output) OUTPUT="$2"; shift ;;
    *) echo "check_gpu.sh: unknown argument $1 (use --paper-only, --output FILE)" >&2; exit 2 ;;
  esac
  shift
done
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "check_gpu: no CUDA device is available; nothing to check here (run it on a GPU machine;"
  echo "CPU check of the code path: $PY benchmarks/paper_iteration.py --dry-run)"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "nvidia-smi not found"
"$PY" benchmarks/paper_iteration.py --output "$OUTPUT"
"$PY" benchmarks/rmsin_check.py --device cuda --output "$(dirname "$OUTPUT")/rmsin_check.json"
if [ "$SMOKE" = 1 ]; then
  "$PY" benchmarks/check_gpu.py
fi
