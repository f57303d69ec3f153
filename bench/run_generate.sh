#!/usr/bin/env bash
# Benchmark for issue 16's generation item: a random Llama-family model of a few million
# parameters (bench/bench_generate.cpp), a 32-token prompt, 256 greedy tokens with the key/value
# cache and without it (the whole context re-run every step), and 256 single-token steps at the
# final context; prints the tokens/s both ways and the ratios as a markdown table.
#   bash bench/run_generate.sh [BUILD_DIR]
# Environment: THREADS (OpenBLAS threads; default: tunekit's policy, all cores), REPEATS (3),
# PROMPT (32), NEW (256), SHAPE (extra bench_generate flags, e.g. "--layers 8 --hidden 512").
set -euo pipefail
BUILD=${1:-build}
REPEATS=${REPEATS:-3}
PROMPT=${PROMPT:-32}
NEW=${NEW:-256}
SHAPE=${SHAPE:-}
PY=/usr/bin/python3
cd "$(dirname "$0")/.."
[ -x "$BUILD/bench_generate" ] || { echo "run_generate.sh: $BUILD/bench_generate not found (cmake --build $BUILD --target bench_generate)" >&2; exit 1; }
FLAGS=(--prompt "$PROMPT" --new "$NEW" --repeats "$REPEATS" --json)
[ -n "${THREADS:-}" ] && FLAGS+=(--blas-threads "$THREADS")
echo "== load average before: $(uptime)"
# shellcheck disable=SC2086  # SHAPE is a list of flags
OUT=$("$BUILD/bench_generate" "${FLAGS[@]}" $SHAPE)
echo "== load average after: $(uptime)"
echo
$PY - "$OUT" <<'PYEOF'
import json, sys
j = json.loads(sys.argv[1].strip().splitlines()[-1])
print(f"Random {j['model']}; threads: {j['threads']}")
same = all(r["same_tokens"] for r in j["lengths"])
print(f"prompt {j['prompt_tokens']} tokens, {j['new_tokens']} new greedy tokens "
      f"({'identical' if same else 'NOT identical'} with and without the cache)")
print()
print("| new tokens | with cache (s) | tokens/s | without cache (s) | tokens/s | without / with |")
print("|---:|---:|---:|---:|---:|---:|")
for r in j["lengths"]:
    print(f"| {r['new_tokens']} | {r['cache_s']:.3f} | {r['cache_tokens_per_s']:.1f} | {r['no_cache_s']:.3f} | "
          f"{r['no_cache_tokens_per_s']:.1f} | {r['no_cache_over_cache']:.2f} |")
print()
print(f"{j['new_tokens']} tokens with the cache: {j['cache_s']:.3f} s (prefill {j['cache_prefill_s']:.4f} s, "
      f"decode {j['cache_decode_tokens_per_s']:.1f} tokens/s); {j['new_tokens']} single-token steps at the final "
      f"context of {j['final_context']} tokens: {j['single_steps_s']:.3f} s")
print(f"cached generation / single-token steps: {j['cache_over_single_steps']:.2f}; "
      f"no-cache / cache: {j['no_cache_over_cache']:.2f}")
PYEOF
