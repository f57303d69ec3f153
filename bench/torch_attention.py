#!/usr/bin/env python3
"""PyTorch eager twin of bench_attention: the same attention layer (q, k, v, o projections,
softmax or sigmoid scores with b = -log n, optional SDPA/value gates) forward+backward time at the
ViT and text shapes; then the causal core alone ("causal <heads>-<N> <ms>") at the Qwen2.5-0.5B head
shape (14 heads, 2 KV heads, Dh 64) and GPT-2's (12 heads, Dh 64), batch 1, as transformers' eager
attention computes it: repeat_kv (expand + reshape), matmul, masked_fill(-inf), softmax, matmul,
forward + backward. Run as: OPENBLAS_NUM_THREADS=2 python3 bench/torch_attention.py --threads 1"""
import argparse, math, time
import torch, torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=1)
p.add_argument("--iters", type=int, default=30)
p.add_argument("--causal-only", action="store_true")
p.add_argument("--lengths", default="256,1024,2048")
a = p.parse_args()
torch.set_num_threads(a.threads)


class Attn(nn.Module):
    def __init__(s, d, h, n, score, gate):
        super().__init__()
        s.h, s.score, s.gate, s.bias = h, score, gate, -math.log(n)
        s.q, s.k, s.v, s.o = (nn.Linear(d, d) for _ in range(4))
        if gate != "none":
            s.g = nn.Linear(d, h if gate == "sdpa_headwise" else d)

    def forward(s, x, mask=None):
        B, N, C = x.shape
        h, dh = s.h, C // s.h
        g = torch.sigmoid(s.g(x)) if s.gate != "none" else None
        v = s.v(x)
        if s.gate == "value":
            v = v * g
        q, k, v = (t.view(B, N, h, dh).transpose(1, 2) for t in (s.q(x), s.k(x), v))
        sc = q @ k.transpose(-2, -1) / math.sqrt(dh)
        if mask is not None:
            sc = sc.masked_fill(~mask, float("-inf"))
        w = sc.softmax(-1) if s.score == "softmax" else torch.sigmoid(sc + s.bias)
        out = (w @ v).transpose(1, 2)
        if s.gate == "sdpa_elementwise":
            out = out * g.view(B, N, h, dh)
        if s.gate == "sdpa_headwise":
            out = out * g.view(B, N, h, 1)
        return s.o(out.reshape(B, N, C))


def ms_per_call(n, step):
    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n * 1e3


def causal(q, k, v, h, kv, dh):
    b, n, _ = q.shape
    q = q.view(b, n, h, dh).transpose(1, 2)
    k, v = (t.view(b, n, kv, dh).transpose(1, 2) for t in (k, v))
    k = k[:, :, None].expand(b, kv, h // kv, n, dh).reshape(b, h, n, dh)  # repeat_kv
    v = v[:, :, None].expand(b, kv, h // kv, n, dh).reshape(b, h, n, dh)
    s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(dh)
    s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.matmul(s.softmax(-1), v).transpose(1, 2).reshape(b, n, h * dh)


def bench_causal():
    print(f"{'causal':<6} {'heads-N':<12} {'eager ms':>10}")
    for name, h, kv, dh in (("qwen", 14, 2, 64), ("gpt2", 12, 12, 64)):
        for n in (int(x) for x in a.lengths.split(",")):
            torch.manual_seed(0)
            q = torch.randn(1, n, h * dh, requires_grad=True)
            k, v = (torch.randn(1, n, kv * dh, requires_grad=True) for _ in range(2))
            up = torch.randn(1, n, h * dh)
            step = lambda: torch.autograd.grad(causal(q, k, v, h, kv, dh), (q, k, v), up)
            print(f"{'causal':<6} {f'{name}-{n}':<12} {ms_per_call(max(2, a.iters * 256 // n), step):>10.2f}")


if a.causal_only:
    bench_causal()
    raise SystemExit(0)

print(f"{'shape':<6} {'variant':<26} {'fwd+bwd ms':>12}")
for name, B, N, d, H, causal in (("vit", 64, 50, 128, 4, False), ("text", 16, 128, 128, 4, True)):
    torch.manual_seed(0)
    x = torch.randn(B, N, d, requires_grad=True)
    mask = torch.ones(N, N, dtype=torch.bool).tril() if causal else None
    for score, gate in (("softmax", "none"), ("sigmoid", "none"), ("softmax", "sdpa_elementwise"),
                        ("sigmoid", "sdpa_elementwise"), ("softmax", "sdpa_headwise"), ("softmax", "value")):
        m = Attn(d, H, N, score, gate)
        for _ in range(3):
            m(x, mask).sum().backward()
        t = time.perf_counter()
        for _ in range(a.iters):
            m(x, mask).sum().backward()
        label = score if gate == "none" else f"{score}+{gate}"
        print(f"{name:<6} {label:<26} {(time.perf_counter() - t) / a.iters * 1e3:>12.3f}")
bench_causal()
