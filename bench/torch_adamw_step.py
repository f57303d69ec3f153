"""One torch.optim.AdamW step over N float32 parameters (16 tensors), PyTorch's side of the
FusedAdamW figures (tests/test_fused_adamw.cpp, FusedAdamWBench.DISABLED_Step: the same layout,
lr 1e-4, weight decay 0.01, the median of 3 steps after one that creates the state). PyTorch
1.13's default on CPU: foreach=None, which its adamw() turns into the per-parameter loop
(foreach=False); --foreach times the multi-tensor path.
  /usr/bin/python3 bench/torch_adamw_step.py [--n 124000000] [--threads 1] [--foreach]
"""
import argparse
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=124_000_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--foreach", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    params = []
    for i in range(16):
        t = torch.randn(a.n // 16 + (1 if i < a.n % 16 else 0), requires_grad=True)
        t.grad = torch.randn_like(t)
        params.append(t)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, foreach=True if a.foreach else None)
    opt.step()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    print(f"adamw step: torch.optim.AdamW{' foreach' if a.foreach else ''}, {a.n} float parameters, "
          f"{a.threads} thread(s): {s:.3f} s ({28 * a.n / s / 1e9:.1f} GB/s of the 28 bytes/parameter a one-pass "
          f"step must move)")


if __name__ == "__main__":
    main()
