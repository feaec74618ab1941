#!/usr/bin/env bash
# CUDA + bf16 autocast smoke check of every method; fails clearly without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "nvidia-smi not found"
exec "$PY" benchmarks/check_gpu.py "$@"
