#!/usr/bin/env bash
# The two-stage demo behind `make demo`: pretrain a ViT on Fashion-MNIST classes 0-4, adapt it
# to classes 5-9 with LoRA and a new head, evaluate both, export the LoRA model to TorchScript
# (adapters merged, parity-checked), and print one table. Each run starts over (--overwrite), so
# the demo can be run again.
set -euo pipefail
TUNEKIT=${1:-build/tunekit}
start=$(date +%s)

echo "== 1/2 pretrain: recipes/vit_pretrain_fmnist.yaml"
"$TUNEKIT" train recipes/vit_pretrain_fmnist.yaml --overwrite
"$TUNEKIT" eval runs/vit_pretrain_fmnist --split test

echo "== 2/2 LoRA fine-tune on classes 5-9: recipes/vit_lora_fmnist.yaml"
"$TUNEKIT" train recipes/vit_lora_fmnist.yaml --overwrite
"$TUNEKIT" eval runs/vit_lora_fmnist --split test

echo "== export"
"$TUNEKIT" export runs/vit_pretrain_fmnist
"$TUNEKIT" export runs/vit_lora_fmnist

echo
echo "== summary (demo wall time $(( $(date +%s) - start ))s)"
"$TUNEKIT" report runs/vit_pretrain_fmnist runs/vit_lora_fmnist
echo
echo "Load the fine-tuned model in Python:"
echo "  python3 -c \"import torch; m = torch.jit.load('runs/vit_lora_fmnist/export/model.pt'); print(m(torch.zeros(1, 1, 28, 28)))\""
