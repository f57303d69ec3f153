#!/usr/bin/env bash
# Benchmark for issue 14's performance item: load a random Qwen2.5-0.5B-shaped checkpoint
# (bfloat16 safetensors, written here) into tunekit and into the PyTorch eager reference
# (bench/torch_hf_lora.py), then time the same LoRA training step (batch 1 x 256 tokens by
# default) on both, with the same threads, in one run; prints a markdown table.
#   bash bench/run_hf.sh [BUILD_DIR] [STEPS]
# Environment: THREADS (2: OpenBLAS threads, where the GEMMs run) and TORCH_THREADS (1: LibTorch's
# intra-op pool), the same on both sides: tunekit's default policy (util/threads.h) and
# bench/run.sh's. TORCH_THREADS=2 with THREADS=2 puts two OpenMP and two OpenBLAS threads on
# two cores, and libgomp's spin-waiting then costs both sides about 1.7x on this shape. WARMUP (1),
# BATCH (1), SEQ (256), R (16), ALPHA (32), TARGETS (q_proj,k_proj,v_proj,o_proj), and SHAPE:
# extra torch_hf_lora.py --write flags for a smaller model, e.g.
#   SHAPE="--layers 2 --hidden 64 --heads 4 --kv-heads 2 --head-dim 16 --intermediate 128 --vocab 256" bash bench/run_hf.sh
# The checkpoint (~1 GB at the full shape) lives in a temporary directory removed at the end.
# Each process holds the model in float32 (~2 GB at the full shape); they run one after the other.
# Both sides use the same libopenblas: an OPENBLAS_CORETYPE in the environment (e.g. SkylakeX on
# a CPU newer than the installed OpenBLAS knows, which otherwise falls back to its SSE3
# "Prescott" kernels) reaches both; the table's last line names the core in use.
set -euo pipefail
BUILD=${1:-build}
STEPS=${2:-3}
THREADS=${THREADS:-2}
TORCH_THREADS=${TORCH_THREADS:-1}
WARMUP=${WARMUP:-1}
BATCH=${BATCH:-1}
SEQ=${SEQ:-256}
R=${R:-16}
ALPHA=${ALPHA:-32}
TARGETS=${TARGETS:-q_proj,k_proj,v_proj,o_proj}
SHAPE=${SHAPE:-}
PY=/usr/bin/python3
cd "$(dirname "$0")/.."
[ -x "$BUILD/bench_hf" ] || { echo "run_hf.sh: $BUILD/bench_hf not found (make -C $BUILD bench_hf)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunekit-hf-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
MODEL="$WORK/model"
COMMON=(--steps "$STEPS" --warmup "$WARMUP" --batch "$BATCH" --seq "$SEQ" --r "$R" --alpha "$ALPHA" --targets "$TARGETS")
echo "== load average before: $(uptime)"

echo "== writing a random checkpoint: $PY bench/torch_hf_lora.py --write $MODEL --dtype bf16 $SHAPE"
# shellcheck disable=SC2086  # SHAPE is a list of flags
$PY bench/torch_hf_lora.py --write "$MODEL" --dtype bf16 $SHAPE | tee "$WORK/write.jsonl"

TK_THREADS=(--torch-threads "$TORCH_THREADS" --blas-threads "$THREADS")
echo "== tunekit: OPENBLAS_NUM_THREADS=$THREADS $BUILD/bench_hf --model $MODEL ${COMMON[*]} ${TK_THREADS[*]} --json"
OPENBLAS_NUM_THREADS=$THREADS "$BUILD/bench_hf" --model "$MODEL" "${COMMON[@]}" "${TK_THREADS[@]}" --json \
  > "$WORK/tunekit.jsonl"

echo "== PyTorch eager: OPENBLAS_NUM_THREADS=$THREADS $PY bench/torch_hf_lora.py --load $MODEL ${COMMON[*]} --threads $TORCH_THREADS"
OPENBLAS_NUM_THREADS=$THREADS $PY bench/torch_hf_lora.py --load "$MODEL" "${COMMON[@]}" --threads "$TORCH_THREADS" \
  | tee "$WORK/torch.jsonl"

echo "== load average after: $(uptime)"
echo
$PY - "$WORK/tunekit.jsonl" "$WORK/torch.jsonl" "$WORK/write.jsonl" "$THREADS" <<'EOF'
import json, sys

def read(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            j = json.loads(line)
            out.setdefault(j["what"], j)
    return out

tk, py, wr = (read(p) for p in sys.argv[1:4])
mib = 1024.0 * 1024.0
n_mb = tk["load"]["model_bytes"] / mib           # N: the model's float32 parameters
# The same count on the Python side: its params_total includes the LoRA parameters.
py_n_mb = (py["model"]["params_total"] - py["model"]["params_trainable"]) * 4 / mib
ts, ps = tk["summary"], py["summary"]
w = wr["write"]
print(f"Random {tk['model']['describe']}")
print(f"checkpoint: {w['dtype']} safetensors, {w['file_bytes'] / mib:.1f} MiB ({tk['load']['storage_dtype']} read); "
      f"batch {ts['batch']} x {ts['seq']} tokens; LoRA r {tk['model']['r']}, alpha {tk['model']['alpha']:g} "
      f"on {tk['model']['lora_modules']} layers; threads: tunekit {ts['threads']}, PyTorch torch {ps['threads']}, "
      f"OPENBLAS_NUM_THREADS={sys.argv[4]}; {ts['steps']} timed steps after warm-up")
print()
print("| | tunekit | PyTorch eager |")
print("|---|---:|---:|")
print(f"| load (s) | {tk['load']['seconds']:.2f} | {py['load']['seconds']:.2f} |")
lb = tk.get("load_breakdown")
if lb:
    print(f"| building the model alone (allocation, no random init), timed separately (s) | {lb['build_s']:.2f} | - |")
print(f"| N = model parameters, float32 (MiB) | {n_mb:.1f} | {py_n_mb:.1f} |")
print(f"| RSS before load (MiB) | {tk['load']['rss_before_mb']:.1f} | - |")
print(f"| peak RSS after load (MiB) | {tk['load']['peak_rss_mb']:.1f} | {py['load']['peak_rss_mb']:.1f} |")
print(f"| (peak RSS - RSS before) / N | {tk['load']['load_rss_over_model']:.3f} | - |")
print(f"| peak RSS after load / N | {tk['load']['peak_rss_mb'] / n_mb:.3f} | {py['load']['peak_rss_mb'] / py_n_mb:.3f} |")
print(f"| step, median (s) | {ts['step_s_median']:.3f} | {ps['step_s_median']:.3f} |")
print(f"| tokens/s | {ts['tokens_per_s']:.1f} | {ps['tokens_per_s']:.1f} |")
print(f"| peak RSS, whole run (MiB) | {ts['peak_rss_mb']:.0f} | {ps['peak_rss_mb']:.0f} |")
print()
ratio = ts["step_s_median"] / ps["step_s_median"]
print(f"step time tunekit / PyTorch eager: {ratio:.2f}x ({'slower' if ratio > 1 else 'faster'}: "
      f"tokens/s ratio {ts['tokens_per_s'] / ps['tokens_per_s']:.2f})")
print(f"sgemm peak (1024^3, best of 3, tunekit's threads, OpenBLAS core {ts['blas_core']}): {ts['sgemm_gflops']:.1f} GFLOP/s; tunekit MFU {100 * ts['mfu']:.1f}% "
      f"(3x forward FLOPs), {100 * ts['mfu_executed']:.1f}% (executed: frozen base without weight gradients)")
EOF
