#!/usr/bin/env bash
# The GPU check, in one go on a lent GPU machine (about 10 minutes): build the environment
# (faiss-gpu where pip has a wheel for this Python, else faiss-cpu and the torch CUDA fallback),
# run the GPU-marked tests, time encode and search on GPU against CPU, write $OUT/gpu-report.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
python3 -m venv .venv-gpu
B=.venv-gpu/bin
"$B/pip" install --quiet --upgrade pip
# The CUDA build of torch 2.13.0 is PyPI's default; the project's constraints pin the same versions.
"$B/pip" install --quiet torch==2.13.0 torchvision==0.28.0
"$B/pip" install --quiet -e '.[test]' || exit 1
if "$B/pip" install --quiet faiss-gpu-cu12 2>/dev/null; then
  "$B/pip" uninstall --quiet -y faiss-cpu || true
  echo "faiss: faiss-gpu-cu12" | tee "$OUT/faiss.txt"
else
  echo "faiss: faiss-cpu (no faiss-gpu wheel here; torch CUDA fallback)" | tee "$OUT/faiss.txt"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
timeout 240 "$B/python" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -20 | tee "$OUT/gpu-tests.txt"
timeout 300 "$B/python" benchmarks/gpu_check.py "$OUT/gpu-report.json" 2>&1 | tail -40
