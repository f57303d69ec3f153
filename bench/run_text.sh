#!/usr/bin/env bash
# Benchmark, text: tunekit's LM pre-training and LoRA classification recipes beside the PyTorch
# eager anchor (bench/torch_text.py: the same model and shapes, random ids), in one run.
# Needs the prepared corpus (tunekit prepare spam_assassin), for the tokenizer and the data.
#   bash bench/run_text.sh [BUILD_DIR] [STEPS]
set -euo pipefail
BUILD=${1:-build}
STEPS=${2:-200}
cd "$(dirname "$0")/.."
echo "== tunekit (C++), $STEPS steps per recipe"
"$BUILD/bench_train" --steps "$STEPS" recipes/lm_pretrain_spam.yaml recipes/text_lora_spam.yaml | tee /tmp/tunekit-text-bench.txt
echo "== PyTorch eager anchor: OPENBLAS_NUM_THREADS=2 python3 bench/torch_text.py --threads 1 --steps $STEPS"
OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/torch_text.py --threads 1 --steps "$STEPS" | tee /tmp/torch-text-bench.txt
tk_lm=$(awk '$1=="lm_pretrain_spam"{print $4}' /tmp/tunekit-text-bench.txt)
tk_lora=$(awk '$1=="text_lora_spam"{print $3}' /tmp/tunekit-text-bench.txt)
py_lm=$(sed -n 's/^lm .*= \([0-9.]*\) tokens\/s.*/\1/p' /tmp/torch-text-bench.txt)
py_lora=$(sed -n 's/^lora .*: \([0-9.]*\) samples\/s.*/\1/p' /tmp/torch-text-bench.txt)
echo "== ratio tunekit / PyTorch eager"
awk -v a="$tk_lm" -v b="$py_lm" 'BEGIN{printf "LM pre-training: %.0f vs %.0f tokens/s = %.2fx\n", a, b, a/b}'
awk -v a="$tk_lora" -v b="$py_lora" 'BEGIN{printf "LoRA classifier: %.1f vs %.1f samples/s = %.2fx\n", a, b, a/b}'
