#!/usr/bin/env bash
# Benchmark: tunekit's pretrain and LoRA recipes beside the PyTorch eager anchor
# (bench/torch_vit_lora.py: the same model, data, optimizer, schedule, clipping and thread
# policy, for the same number of steps), in one run.
#   bash bench/run.sh [BUILD_DIR] [STEPS]
set -euo pipefail
BUILD=${1:-build}
STEPS=${2:-420}   # 420 x 64 = 26,880 samples, about one epoch of the 5-class split
cd "$(dirname "$0")/.."
echo "== tunekit (C++), $STEPS steps per recipe"
"$BUILD/bench_train" --steps "$STEPS" recipes/vit_pretrain_fmnist.yaml recipes/vit_lora_fmnist.yaml | tee /tmp/tunekit-bench.txt
ANCHOR=bench/torch_vit_lora.py
echo "== PyTorch eager anchor: OPENBLAS_NUM_THREADS=2 /usr/bin/python3 $ANCHOR --threads 1 --steps $STEPS"
OPENBLAS_NUM_THREADS=2 /usr/bin/python3 "$ANCHOR" --threads 1 --steps "$STEPS" | tee /tmp/torch-bench.txt
tk_pre=$(awk '$1=="vit_pretrain_fmnist"{print $3}' /tmp/tunekit-bench.txt)
tk_lora=$(awk '$1=="vit_lora_fmnist"{print $3}' /tmp/tunekit-bench.txt)
py_pre=$(sed -n 's/^pretrain.*: \([0-9.]*\) samples\/s.*/\1/p' /tmp/torch-bench.txt)
py_lora=$(sed -n 's/^lora classes.*: \([0-9.]*\) samples\/s.*/\1/p' /tmp/torch-bench.txt)
echo "== ratio tunekit / PyTorch eager"
awk -v a="$tk_pre" -v b="$py_pre" 'BEGIN{printf "pretrain: %.0f vs %.0f samples/s = %.2fx\n", a, b, a/b}'
awk -v a="$tk_lora" -v b="$py_lora" 'BEGIN{printf "lora:     %.0f vs %.0f samples/s = %.2fx\n", a, b, a/b}'
