#!/usr/bin/python3
"""The ops of a LibTorch profiler trace (bench_llm --profile FILE) by self time.

usage: /usr/bin/python3 bench/profile_top.py TRACE [--top 25]

Self time = an op's duration less that of the ops nested in it, per thread. The line "outside
any op" is the span of the trace not covered by a top-level op: tunekit's own kernels that are
not ATen ops (the fused LM loss's rows, the causal attention's forward, gelu_new's forward) and
the step's glue.
"""
import argparse
import collections
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    try:
        with open(a.trace) as f:
            events = [e for e in json.load(f) if e.get("ph") == "X"]
    except (OSError, ValueError) as e:
        sys.exit(f"profile_top.py: {a.trace}: {e}")
    if not events:
        sys.exit(f"profile_top.py: {a.trace}: no complete ('X') events")
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    self_us = collections.Counter()
    calls = collections.Counter()
    covered = 0.0
    t0 = min(e["ts"] for e in events)
    t1 = max(e["ts"] + e["dur"] for e in events)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, child time, event]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                end, child, done = stack.pop()
                self_us[done["name"]] += done["dur"] - child
            if stack:
                stack[-1][1] += e["dur"]
            else:
                covered += e["dur"]
            stack.append([e["ts"] + e["dur"], 0.0, e])
            calls[e["name"]] += 1
        for end, child, done in stack:
            self_us[done["name"]] += done["dur"] - child
    span = t1 - t0
    print(f"{a.trace}: {span / 1e6:.3f} s traced, {len(by_thread)} thread(s)")
    print(f"{'self ms':>10} {'share':>6} {'calls':>6}  op")
    for name, us in self_us.most_common(a.top):
        print(f"{us / 1e3:10.1f} {100 * us / span:5.1f}% {calls[name]:6d}  {name}")
    print(f"{(span - covered) / 1e3:10.1f} {100 * (span - covered) / span:5.1f}%         outside any op")


if __name__ == "__main__":
    main()
