#!/usr/bin/env bash
# Data parallel on one machine: the same recipe as 1 process x 2 threads and as 2 processes x 1
# thread (tunekit launch -n 2), full fine-tuning and LoRA, and the gradient bytes each step sends.
# The model is the SpamAssassin causal LM of recipes/lm_pretrain_spam.yaml (1.3 M parameters,
# random init, 32 x 128 tokens a step); LoRA puts r = 8 on q, v and the MLP of every block. The
# tokenizer is trained once (a one-step run) and read by every row.
# Needs the prepared corpus (tunekit prepare spam_assassin).
#   bash bench/run_dist.sh [BUILD_DIR] [STEPS]
set -euo pipefail
BUILD=${1:-build}
STEPS=${2:-60}
cd "$(dirname "$0")/.."
TK="$BUILD/tunekit"
OUT=$(mktemp -d /tmp/tunekit-dist-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
SOURCE=recipes/lm_pretrain_spam.yaml
"$TK" train "$SOURCE" train.max_steps=1 output.dir="$OUT" output.name=tokenizer -q > "$OUT/tokenizer.log" 2>&1 ||
  { cat "$OUT/tokenizer.log"; exit 1; }
RECIPE="$OUT/recipe.yaml"
sed "s|^  tokenizer: .*|  tokenizer: {model: \"$OUT/tokenizer/tokenizer.model\"}|" "$SOURCE" > "$RECIPE"
grep -q "tokenizer: {model:" "$RECIPE" || { echo "bench/run_dist.sh: could not point $SOURCE at the trained tokenizer"; exit 1; }
COMMON=(train.max_steps="$STEPS" train.log_every=10 train.checkpoint_every=0 output.dir="$OUT")
LORA=(adapter.kind=lora adapter.r=8 adapter.alpha=16
      'adapter.targets=["blocks.*.attn.q", "blocks.*.attn.v", "blocks.*.mlp.fc1", "blocks.*.mlp.fc2"]')

# One row: NAME MODE(full|lora) LAYOUT(1x2|1x2t|2x1): the summary's samples/s and tokens/s, and
# (2 processes) rank 0's gradient bytes per step.
row() {
  local name=$1 mode=$2 layout=$3 extra=()
  [ "$mode" = lora ] && extra=("${LORA[@]}")
  local log="$OUT/$name.log"
  case $layout in
    1x2)  "$TK" train "$RECIPE" "${COMMON[@]}" "${extra[@]}" threads.torch=1 threads.blas=2 output.name="$name" > "$log" 2>&1 ;;
    1x2t) "$TK" train "$RECIPE" "${COMMON[@]}" "${extra[@]}" threads.torch=2 threads.blas=2 output.name="$name" > "$log" 2>&1 ;;
    2x1)  "$TK" launch -n 2 -- train "$RECIPE" "${COMMON[@]}" "${extra[@]}" threads.torch=1 threads.blas=1 \
            output.name="$name" > "$log" 2>&1 ;;
  esac
  local summary
  summary=$(grep '"type":"summary"' "$OUT/$name/metrics.jsonl")
  local sps tps bytes
  sps=$(sed -n 's/.*"samples_per_second":\([0-9.e+-]*\).*/\1/p' <<< "$summary")
  tps=$(sed -n 's/.*"tokens_per_second":\([0-9.e+-]*\).*/\1/p' <<< "$summary")
  bytes=$(sed -n 's/.*; \([0-9]*\) trainable gradient bytes per step.*/\1/p' "$log" | head -1)
  printf "%-5s %-4s %8.1f samples/s %9.0f tokens/s %12s\n" "$mode" "$layout" "$sps" "$tps" "${bytes:--}"
  echo "$mode $layout $sps $bytes" >> "$OUT/rows.txt"
}

echo "== $SOURCE, $STEPS steps per row (cores: $(nproc), load before: $(cut -d' ' -f1 /proc/loadavg))"
echo "mode  layout  speed                         gradient bytes/step (2 processes)"
for mode in full lora; do
  row "${mode}_1x2" "$mode" 1x2
  row "${mode}_1x2t" "$mode" 1x2t
  row "${mode}_2x1" "$mode" 2x1
done
echo "== 2 processes x 1 thread against 1 process x 2 threads (samples/s ratio)"
awk '{s[$1" "$2]=$3; if ($4 != "") b[$1]=$4}
     END {for (m in b) printf "%s: %.2fx against torch 1 / BLAS 2, %.2fx against torch 2 / BLAS 2; %d bytes (%.2f MB) allreduced per step\n",
                         m, s[m" 2x1"]/s[m" 1x2"], s[m" 2x1"]/s[m" 1x2t"], b[m], b[m]/1e6}' "$OUT/rows.txt"
