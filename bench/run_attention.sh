#!/usr/bin/env bash
# Attention variants, tunekit vs PyTorch eager, forward+backward ms per call, and the ratio; then
# the causal core (Qwen2.5-0.5B and GPT-2 head shapes, N 256/1024/2048, batch 1): tunekit's
# kernel, tunekit's ATen path and PyTorch eager.
#   bash bench/run_attention.sh [BUILD_DIR] [--causal-only]
# Both sides run with the OpenBLAS core tunekit selects (OPENBLAS_CORETYPE, util/threads.h),
# OpenBLAS on 2 threads and one LibTorch intra-op thread.
set -euo pipefail
BUILD=${1:-build}
ONLY=${2:-}
cd "$(dirname "$0")/.."
[ -x "$BUILD/bench_attention" ] || { echo "run_attention.sh: $BUILD/bench_attention not found" >&2; exit 1; }
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -x "$BUILD/bench_llm" ]; then
  OPENBLAS_CORETYPE=$("$BUILD/bench_llm" --print-core)
  export OPENBLAS_CORETYPE
fi
export OPENBLAS_NUM_THREADS=${THREADS:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunekit-attn-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$BUILD/bench_attention" $ONLY | tee "$WORK/tunekit.txt"
/usr/bin/python3 bench/torch_attention.py --threads 1 $ONLY | tee "$WORK/torch.txt"
echo "== PyTorch eager ms / tunekit ms (above 1: tunekit faster)"
awk 'NR==FNR { if ($1 != "causal" && $3 ~ /^[0-9.]+$/) t[$1" "$2]=$3; next }
     $1 != "causal" && ($3 ~ /^[0-9.]+$/) && (($1" "$2) in t) { printf "%-6s %-26s %6.2fx\n", $1, $2, $3 / t[$1" "$2] }' \
  "$WORK/tunekit.txt" "$WORK/torch.txt"
echo "== causal core: ATen path / kernel and PyTorch eager / kernel (above 1: the kernel faster)"
awk 'NR==FNR { if ($1 == "causal" && $3 ~ /^[0-9.]+$/) { k[$2]=$3; a[$2]=$4 }; next }
     $1 == "causal" && ($3 ~ /^[0-9.]+$/) && ($2 in k) {
       printf "%-12s kernel %9.2f ms  ATen %9.2f ms (%5.2fx)  eager %9.2f ms (%5.2fx)\n", $2, k[$2], a[$2], a[$2] / k[$2], $3, $3 / k[$2] }' \
  "$WORK/tunekit.txt" "$WORK/torch.txt"
