#!/usr/bin/env bash
# Runs the libFuzzer targets built in BUILD (make fuzz) for SECONDS each, one after another:
#   fuzz/run.sh BUILD SECONDS [TARGET...]     (targets: the fuzz_* executables; default all)
# Each starts from its committed seeds (fuzz/corpus/<target>) and a working corpus kept in
# BUILD/fuzz-corpus/<target>; logs go to BUILD/fuzz-logs/<target>.log and crashing inputs to
# BUILD/fuzz-artifacts/<target>/. Prints one line of figures per target and exits 1 if any found
# a crash, a leak, a sanitizer report, an input slower than 10 s or one over 2 GB.
# FUZZ_FORK=1 keeps a target going after a finding (libFuzzer's -fork=1 -ignore_crashes=1 ...),
# so one run collects every distinct crashing input.
set -u
build=${1:?usage: fuzz/run.sh BUILD SECONDS [TARGET...]}
seconds=${2:?usage: fuzz/run.sh BUILD SECONDS [TARGET...]}
shift 2
src=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$src"/fuzz_*.cpp; do t=$(basename "$f" .cpp); targets+=("${t#fuzz_}"); done
fi
failed=0
printf '%-15s %8s %10s %8s %7s %7s %7s  %s\n' target seconds execs exec/s cov ft corpus result
for t in "${targets[@]}"; do
  exe="$build/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "$t: $exe not built"; failed=1; continue; }
  corpus="$build/fuzz-corpus/$t" artifacts="$build/fuzz-artifacts/$t/" log="$build/fuzz-logs/$t.log"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  fork=()
  [ -n "${FUZZ_FORK:-}" ] && fork=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  "$exe" "${fork[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts" "$corpus" "$src/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -1)
  if [ -z "$execs" ]; then  # fork mode: "#EXECS: cov: C ft: F corp: N exec/s R ..."
    execs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' <<<"$last")
    elapsed=$(sed -n 's/.* time: \([0-9]*\)s.*/\1/p' <<<"$last")
    rate=$(( ${execs:-0} / (${elapsed:-1} > 0 ? ${elapsed:-1} : 1) ))
  fi
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(ls "$corpus" | wc -l)
  result=ok
  if [ $rc -ne 0 ] || [ -n "$(ls "$artifacts")" ]; then
    result="FOUND (rc $rc): $(ls "$artifacts" | head -3 | tr '\n' ' ')see $log"
    failed=1
  fi
  printf '%-15s %8s %10s %8s %7s %7s %7s  %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
    "$corp" "$result"
done
exit $failed
