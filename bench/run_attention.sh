#!/usr/bin/env bash
# Attention variants, tunekit vs PyTorch eager, forward+backward ms per call, and the ratio.
#   bash bench/run_attention.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
"$BUILD/bench_attention" | tee /tmp/tunekit-attn.txt
OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/torch_attention.py --threads 1 | tee /tmp/torch-attn.txt
echo "== PyTorch eager ms / tunekit ms (above 1: tunekit faster)"
awk 'NR==FNR { if ($3 ~ /^[0-9.]+$/) t[$1" "$2]=$3; next }
     ($3 ~ /^[0-9.]+$/) && (($1" "$2) in t) { printf "%-6s %-26s %6.2fx\n", $1, $2, $3 / t[$1" "$2] }' \
  /tmp/tunekit-attn.txt /tmp/torch-attn.txt
