#!/usr/bin/env bash
# `make bench-llm` (issue 17): tunekit (build/bench_llm) against PyTorch eager (bench/torch_llm.py)
# at 100M-500M parameters, in one run: the sgemm peak first (bench_llm --sgemm, under the thread
# policy both sides then use), then every row on both sides, one process per side and row (so a
# row's peak RSS is its own), one after the other (never two at once); one markdown table per
# shape, the issue's goal ratios and the machine line.
#   bash bench/run_llm.sh [BUILD_DIR]
# Shapes: gpt2 (GPT-2-small, vocab 50,257, batch 4 x 256), gpt2-32k (the same with vocab 32,000),
# qwen (Qwen2.5-0.5B: d 896, 24 layers, 14 heads / 2 KV heads, SwiGLU 4864, vocab 151,936, tied,
# batch 1 x 256). Modes: full, lora, dora (r 16, alpha 32 on q and v; GPT-2's fused c_attn),
# infer (prefill of 256 tokens, then 64 greedy tokens with the KV cache).
# Environment (the same on both sides where both have it):
#   THREADS (2): OpenBLAS threads; TORCH_THREADS (1): LibTorch intra-op threads (tunekit's default
#     policy, util/threads.h); STEPS (2) timed steps (infer: generations) after WARMUP (1);
#   ROWS: the rows to run, e.g. "gpt2" (every mode of a shape) or "qwen:lora qwen:dora" (default:
#     every shape and mode); COMPUTE (fp32 | bf16 | auto: tunekit resolves it, eager then runs what
#     tunekit chose); FROZEN (fp32 | bf16 | int8, tunekit only); CHECKPOINTING (0 | 1, tunekit only);
#     LOSS_CHUNK (1024: tunekit's fused LM-head loss chunk, 0 = plain logits); NEW (64); TINY (0 | 1:
#     a 2-layer model of each shape, to check the script); OPENBLAS_CORETYPE (default: the core
#     bench_llm --print-core selects); TUNEKIT_MALLOC (keep | system: tunekit's allocator policy,
#     util/memory.h); EAGER_MALLOC (system: eager as users run it, glibc's malloc defaults | keep:
#     eager under the same thresholds as tunekit's policy, through GLIBC_TUNABLES).
# The default full run takes about 10 minutes on an idle 2-core machine (20 under load).
set -euo pipefail
BUILD=${1:-build}
THREADS=${THREADS:-2}
TORCH_THREADS=${TORCH_THREADS:-1}
STEPS=${STEPS:-2}
WARMUP=${WARMUP:-1}
ROWS=${ROWS:-gpt2 gpt2-32k qwen}
COMPUTE=${COMPUTE:-fp32}
FROZEN=${FROZEN:-fp32}
CHECKPOINTING=${CHECKPOINTING:-0}
LOSS_CHUNK=${LOSS_CHUNK:-1024}
NEW=${NEW:-64}
TINY=${TINY:-0}
EAGER_MALLOC=${EAGER_MALLOC:-system}
case "$EAGER_MALLOC" in
  system) EAGER_ENV=() ;;
  keep) EAGER_ENV=(env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1099511627776) ;;  # 1 TiB: never trims
  *) echo "run_llm.sh: EAGER_MALLOC: '$EAGER_MALLOC' is not one of system, keep" >&2; exit 1 ;;
esac
PY=/usr/bin/python3
cd "$(dirname "$0")/.."
[ -x "$BUILD/bench_llm" ] || { echo "run_llm.sh: $BUILD/bench_llm not found (cmake --build $BUILD --target bench_llm)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunekit-llm-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=$THREADS
# One OpenBLAS core for the sgemm peak and both sides: the one tunekit selects (util/threads.h:
# on a CPU newer than the installed OpenBLAS knows, OpenBLAS alone falls back to its generic
# "Prescott" kernels, 4-6x slower), unless OPENBLAS_CORETYPE is set already.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  OPENBLAS_CORETYPE=$("$BUILD/bench_llm" --print-core)
  export OPENBLAS_CORETYPE
fi
echo "== OpenBLAS core for both sides: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average before: $LOAD_BEFORE"

TK_THREADS=(--torch-threads "$TORCH_THREADS" --blas-threads "$THREADS")
echo "== GEMM peak: OPENBLAS_NUM_THREADS=$THREADS $BUILD/bench_llm --sgemm --compute $COMPUTE ${TK_THREADS[*]} --json"
"$BUILD/bench_llm" --sgemm --compute "$COMPUTE" "${TK_THREADS[@]}" --json > "$WORK/sgemm.jsonl"
cat "$WORK/sgemm.jsonl"
# MFU is counted against the peak in the dtype the matmuls run in (the sgemm peak for fp32)
PEAK=$($PY -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["gflops_compute"])' "$WORK/sgemm.jsonl")

# The rows: "shape" expands to its four modes.
rows=()
for r in ${ROWS//,/ }; do
  case "$r" in
    *:*) rows+=("$r") ;;
    *) for m in full lora dora infer; do rows+=("$r:$m"); done ;;
  esac
done

COMMON=(--steps "$STEPS" --warmup "$WARMUP" --new "$NEW" --sgemm-gflops "$PEAK")
[ "$TINY" = 1 ] && COMMON+=(--tiny)
TK_EXTRA=(--compute "$COMPUTE" --frozen "$FROZEN" --loss-chunk "$LOSS_CHUNK")
[ "$CHECKPOINTING" = 1 ] && TK_EXTRA+=(--checkpointing)
for row in "${rows[@]}"; do
  shape=${row%%:*}
  mode=${row#*:}
  tk="$WORK/tunekit.$shape.$mode.jsonl"
  py="$WORK/eager.$shape.$mode.jsonl"
  echo "== $shape $mode: tunekit: $BUILD/bench_llm --shape $shape --mode $mode ${COMMON[*]} ${TK_EXTRA[*]} ${TK_THREADS[*]} --json"
  if ! "$BUILD/bench_llm" --shape "$shape" --mode "$mode" "${COMMON[@]}" "${TK_EXTRA[@]}" "${TK_THREADS[@]}" \
       --json > "$tk" 2> "$tk.err"; then
    echo "   tunekit failed: $(tail -1 "$tk.err")"
  fi
  grep -h '"summary"' "$tk" || true
  # eager runs what tunekit computed in (COMPUTE=auto resolved by tunekit's detection)
  eager_compute=$($PY -c 'import json,sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j.get("what") == "summary": print("bf16" if j["compute_dtype"] == "BFloat16" else "fp32")' "$tk" 2>/dev/null || true)
  [ -n "$eager_compute" ] || eager_compute=$([ "$COMPUTE" = bf16 ] && echo bf16 || echo fp32)
  echo "== $shape $mode: eager: $PY bench/torch_llm.py --shape $shape --mode $mode ${COMMON[*]} --compute $eager_compute --threads $TORCH_THREADS"
  if ! "${EAGER_ENV[@]}" $PY bench/torch_llm.py --shape "$shape" --mode "$mode" "${COMMON[@]}" --compute "$eager_compute" \
       --threads "$TORCH_THREADS" > "$py" 2> "$py.err"; then
    echo "   eager failed: $(tail -1 "$py.err")"
  fi
  grep -h '"summary"' "$py" || true
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== load average after: $LOAD_AFTER"
echo

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
$PY - "$WORK" "$CPU" "$LOAD_BEFORE" "$LOAD_AFTER" "$THREADS" "$TORCH_THREADS" "$STEPS" "$WARMUP" "$TINY" "$EAGER_MALLOC" "${rows[@]}" <<'EOF'
import json, os, sys

work, cpu, load_before, load_after, threads, torch_threads, steps, warmup, tiny, eager_malloc = sys.argv[1:11]
rows = sys.argv[11:]


def read(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                j = json.loads(line)
                out.setdefault(j["what"], j)
    return out.get("summary")


sgemm = json.loads(open(os.path.join(work, "sgemm.jsonl")).readline())
res = {}
for row in rows:
    shape, mode = row.split(":")
    res[(shape, mode)] = (read(f"{work}/tunekit.{shape}.{mode}.jsonl"), read(f"{work}/eager.{shape}.{mode}.jsonl"))

TITLES = {"gpt2": "GPT-2-small shape (124 M parameters: d 768, 12 layers, 12 heads, vocab 50,257, batch 4 x 256 tokens)",
          "gpt2-32k": "GPT-2-small shape with vocab 32,000 (batch 4 x 256 tokens)",
          "qwen": "Qwen2.5-0.5B shape (494 M parameters: d 896, 24 layers, 14 heads / 2 KV heads, SwiGLU 4864, "
                  "vocab 151,936, tied, batch 1 x 256 tokens)"}
MODE = {"full": "full fine-tuning", "lora": "LoRA r 16 on q, v", "dora": "DoRA r 16 on q, v"}


def gib(s):
    return f"{s['peak_rss_mb'] / 1024:.2f} GiB" if s else "failed"


def num(s, key, fmt):
    return fmt.format(s[key]) if s and s.get(key) is not None else ("failed" if not s else "-")


def ratio(a, b, key):
    return f"{a[key] / b[key]:.2f}x" if a and b and b.get(key) else "-"


def mfu(s):
    return f"{100 * s['mfu']:.0f} %" if s and s.get("mfu") is not None else "-"


shapes = []
for shape, _ in res:
    if shape not in shapes:
        shapes.append(shape)
for shape in shapes:
    print(f"**{TITLES.get(shape, shape)}**" + (" (TINY=1: 2 layers, d 64, vocab 512, 32 tokens)" if tiny == "1" else ""))
    print()
    print("| mode | tunekit tok/s | eager tok/s | ratio | tunekit step s | eager step s | tunekit MFU | eager MFU "
          "| tunekit peak RSS | eager peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (sh, mode), (tk, py) in res.items():
        if sh != shape:
            continue
        if mode != "infer":
            name = MODE[mode] + (" (c_attn: q, k, v fused, as PEFT)" if shape.startswith("gpt2") and mode != "full" else "")
            print(f"| {name} | {num(tk, 'tokens_per_s', '{:.1f}')} | {num(py, 'tokens_per_s', '{:.1f}')} "
                  f"| {ratio(tk, py, 'tokens_per_s')} | {num(tk, 'step_s_median', '{:.2f}')} "
                  f"| {num(py, 'step_s_median', '{:.2f}')} | {mfu(tk)} | {mfu(py)} | {gib(tk)} | {gib(py)} |")
        else:
            new = (tk or py or {}).get("new_tokens", 64)
            print(f"| inference: prefill {(tk or py or {}).get('seq', '')} tokens | "
                  f"{num(tk, 'prefill_tokens_per_s', '{:.1f}')} | {num(py, 'prefill_tokens_per_s', '{:.1f}')} "
                  f"| {ratio(tk, py, 'prefill_tokens_per_s')} | {num(tk, 'prefill_s_median', '{:.2f}')} "
                  f"| {num(py, 'prefill_s_median', '{:.2f}')} | {mfu(tk)} | {mfu(py)} | {gib(tk)} | {gib(py)} |")
            per = lambda s: (f"{s['decode_s_median'] / (new - 1):.3f}" if s else "failed")
            print(f"| inference: decode {new} tokens, KV cache (s per token) | "
                  f"{num(tk, 'decode_tokens_per_s', '{:.1f}')} | {num(py, 'decode_tokens_per_s', '{:.1f}')} "
                  f"| {ratio(tk, py, 'decode_tokens_per_s')} | {per(tk)} | {per(py)} | - | - | | |")
    print()
    for (sh, mode), (tk, py) in res.items():  # both sides count the FLOPs with the same formula
        if sh == shape and tk and py and abs(tk["flops_step"] - py["flops_step"]) > 1e-6 * py["flops_step"]:
            print(f"WARNING: {shape} {mode}: the two sides count different FLOPs ({tk['flops_step']:.4g} vs {py['flops_step']:.4g})  ")
    g = lambda m, side: res.get((shape, m), (None, None))[side]
    if g("lora", 0) and g("full", 1):
        line = f"LoRA peak RSS / eager full-FT peak RSS: tunekit {100 * g('lora', 0)['peak_rss_mb'] / g('full', 1)['peak_rss_mb']:.0f} %"
        if g("lora", 1):
            line += f", eager {100 * g('lora', 1)['peak_rss_mb'] / g('full', 1)['peak_rss_mb']:.0f} %"
        print(line + " (goal: tunekit <= 40 %)  ")
    if g("dora", 0) and g("lora", 0):
        line = f"DoRA step / LoRA step: tunekit {g('dora', 0)['step_s_median'] / g('lora', 0)['step_s_median']:.2f}x"
        if g("dora", 1) and g("lora", 1):
            line += f", eager {g('dora', 1)['step_s_median'] / g('lora', 1)['step_s_median']:.2f}x"
        print(line + " (goal: tunekit <= 1.15x)  ")
    if g("full", 0):
        s = g("full", 0)
        print(f"tunekit settings: compute {s['compute_why']}; frozen {s['frozen']}; activation checkpointing "
              f"{'on' if s['checkpointing'] else 'off'}; loss chunk {s['loss_chunk'] or 'off (plain logits)'}  ")
    print()

print(f"Machine: {cpu}; bf16 instructions: {sgemm.get('bf16_features') or 'none'}; OpenBLAS core {sgemm['blas_core']}; "
      f"threads: OpenBLAS {threads}, LibTorch/torch intra-op {torch_threads} (both sides); sgemm peak "
      f"{sgemm['gflops']:.1f} GFLOP/s (median of {', '.join(f'{k} {v:.1f}' for k, v in sgemm['shapes'].items())}); "
      f"{steps} timed steps after {warmup} warm-up, median; load average before {load_before}, after {load_after}.")
tk_alloc = next((t["allocator"] for t, _ in res.values() if t and t.get("allocator")), "unknown")
eager_alloc = ("glibc's malloc defaults" if eager_malloc == "system"
               else "the same thresholds as tunekit (GLIBC_TUNABLES)")
print()
print(f"Allocator: tunekit {tk_alloc.removeprefix('memory: ')}; eager {eager_alloc}.")
if sgemm.get("compute_dtype", "Float") != "Float":
    print()
    print(f"Compute {sgemm['compute_dtype']} ({sgemm['compute_why']}): MFU against the {sgemm['compute_dtype']} GEMM peak "
          f"{sgemm['gflops_compute']:.1f} GFLOP/s (median of "
          f"{', '.join(f'{k} {v:.1f}' for k, v in sgemm['shapes_compute'].items())}), not the sgemm peak.")
print()
print("MFU = FLOPs a step must do / step time / sgemm peak. linear = 2 x tokens x every projection's in x out "
      "(the LM head's d x V included); core = causal attention, 4 x H x Dh x N(N+1)/2 per sequence and layer. "
      "Full = 3 x (linear + core); LoRA and DoRA = (linear + core) + (linear - layer 0's q/k/v products: input "
      "gradients) + 2 x core + 3 x adapter products (2 x tokens x r x (in + out)); DoRA's norm is not counted. "
      "Inference = the prefill: linear without the head, the head at each row's last token, core. Decode is "
      "memory-bound: no MFU.")
EOF
