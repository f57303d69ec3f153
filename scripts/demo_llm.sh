#!/usr/bin/env bash
# The LLM demo behind `make demo-llm`: pre-train a small Llama from a config.json (random
# initialisation) on the SpamAssassin mails with a sentencepiece BPE tokenizer trained on them,
# write it out as a Hugging Face directory (`tunekit merge --format hf`, tokenizer files
# included), fine-tune that directory with LoRA (model.from_hf) on a chat-format instruction set
# built from the same mails, evaluate the answers on held-out mails and generate for one of them.
# Every step starts its run over (--overwrite), so the demo can be run again.
set -euo pipefail
TUNEKIT=${1:-build/tunekit}
PYTHON=${PYTHON:-/usr/bin/python3}
start=$(date +%s)
declare -a STEPS=()
step() {  # step NAME COMMAND...: runs it, records its wall time
  local name=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  STEPS+=("$name|$(( $(date +%s) - t0 ))s")
}

echo "== 1/5 data: tunekit prepare spam_assassin, spam_chat"
step "prepare spam_assassin" "$TUNEKIT" prepare spam_assassin
step "prepare spam_chat" "$TUNEKIT" prepare spam_chat

echo "== 2/5 pre-training a Llama from recipes/llm/llama_tiny/config.json: recipes/llm/llama_pretrain_spam.yaml"
step "pre-train (tokenizer + LM)" "$TUNEKIT" train recipes/llm/llama_pretrain_spam.yaml --overwrite
step "eval pre-trained (test perplexity)" "$TUNEKIT" eval runs/llama_pretrain_spam --split test

echo "== 3/5 as a Hugging Face directory: tunekit merge --format hf"
step "merge --format hf" "$TUNEKIT" merge runs/llama_pretrain_spam --format hf --out runs/llama_pretrain_spam/hf
ls runs/llama_pretrain_spam/hf

echo "== 4/5 LoRA chat fine-tuning of that directory: recipes/llm/llama_chat_lora_spam.yaml"
step "fine-tune (LoRA, chat)" "$TUNEKIT" train recipes/llm/llama_chat_lora_spam.yaml --overwrite
step "eval fine-tuned (held-out mails)" "$TUNEKIT" eval runs/llama_chat_lora_spam --split test

echo "== 5/5 generation for a held-out mail (--chat applies the run's template)"
prompt=$("$PYTHON" -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r["messages"][0]["content"]); sys.stderr.write("expected answer: %s\n" % r["messages"][1]["content"])' .data/spam-chat/test_spam.jsonl)
step "generate --chat" "$TUNEKIT" generate runs/llama_chat_lora_spam --chat --prompt "$prompt" --max-new-tokens 8
subject=$("$PYTHON" -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r["messages"][0]["content"]); sys.stderr.write("expected subject: %s\n" % r["messages"][1]["content"])' .data/spam-chat/test_subject.jsonl)
step "generate --chat (subject)" "$TUNEKIT" generate runs/llama_chat_lora_spam --chat --prompt "$subject" --max-new-tokens 24

echo
echo "== summary (LLM demo wall time $(( $(date +%s) - start ))s)"
printf '| %-36s | %8s |\n' "step" "time"
for s in "${STEPS[@]}"; do printf '| %-36s | %8s |\n' "${s%%|*}" "${s##*|}"; done
"$TUNEKIT" report runs/llama_pretrain_spam runs/llama_chat_lora_spam
