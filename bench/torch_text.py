#!/usr/bin/env python3
"""PyTorch eager anchor for the text recipes: the same text Transformer as tunekit's
(token + learned position embeddings, pre-norm blocks with q/k/v/o, GELU MLP, final LayerNorm,
causal + padding mask) timed on the same shapes:
  lm    causal-LM pre-training, full training, tied head   -> tokens/s
  lora  classification with LoRA (r=8) on q and v + head   -> samples/s
Token ids are random (speed does not depend on them). Same Debian libtorch as tunekit.
  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/torch_text.py --threads 1 --steps 200"""
import argparse, math, resource, time
import torch, torch.nn as nn, torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--vocab", type=int, default=4000); p.add_argument("--seq", type=int, default=128)
p.add_argument("--dim", type=int, default=128); p.add_argument("--depth", type=int, default=4)
p.add_argument("--heads", type=int, default=4); p.add_argument("--mlp", type=float, default=4.0)
p.add_argument("--bs", type=int, default=32); p.add_argument("--steps", type=int, default=200)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
PAD = 3

class LoRALinear(nn.Module):
    def __init__(s, base, r=8, alpha=16):
        super().__init__(); s.base = base; s.scale = alpha / r
        s.A = nn.Parameter(torch.empty(r, base.in_features)); nn.init.kaiming_uniform_(s.A, a=math.sqrt(5))
        s.B = nn.Parameter(torch.zeros(base.out_features, r))
    def forward(s, x): return s.base(x) + (x @ s.A.t() @ s.B.t()) * s.scale

class Attn(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.h = h; s.q = nn.Linear(d, d); s.k = nn.Linear(d, d); s.v = nn.Linear(d, d); s.o = nn.Linear(d, d)
    def forward(s, x, mask):
        B, N, C = x.shape; h = s.h
        q, k, v = (m(x).view(B, N, h, C // h).transpose(1, 2) for m in (s.q, s.k, s.v))
        sc = (q @ k.transpose(-2, -1) / math.sqrt(C // h)).masked_fill(~mask, float("-inf"))
        return s.o((sc.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))

class Block(nn.Module):
    def __init__(s, d, h, r):
        super().__init__(); s.n1 = nn.LayerNorm(d); s.at = Attn(d, h); s.n2 = nn.LayerNorm(d)
        s.fc1 = nn.Linear(d, int(d * r)); s.fc2 = nn.Linear(int(d * r), d)
    def forward(s, x, mask):
        x = x + s.at(s.n1(x), mask); return x + s.fc2(F.gelu(s.fc1(s.n2(x))))

class TextTransformer(nn.Module):
    def __init__(s, lm, ncls=2):
        super().__init__(); s.lm = lm
        s.emb = nn.Embedding(a.vocab, a.dim); s.pos = nn.Parameter(torch.randn(1, a.seq, a.dim) * 0.02)
        s.blocks = nn.ModuleList(Block(a.dim, a.heads, a.mlp) for _ in range(a.depth)); s.norm = nn.LayerNorm(a.dim)
        if not lm: s.head = nn.Linear(a.dim, ncls)
    def forward(s, ids):
        B, N = ids.shape
        h = s.emb(ids) + s.pos[:, :N]
        keys = ((ids != PAD) | (torch.arange(N) == 0)).view(B, 1, 1, N)
        mask = keys & torch.ones(N, N, dtype=torch.bool).tril()
        for b in s.blocks: h = b(h, mask)
        h = s.norm(h)
        if s.lm: return F.linear(h, s.emb.weight)
        valid = (ids != PAD).unsqueeze(-1).float()
        return s.head((h * valid).sum(1) / valid.sum(1).clamp_min(1))

def timed(model, params, loss_fn, steps):
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(4, a.vocab, (a.bs, a.seq), generator=g) for _ in range(8)]
    labels = torch.randint(0, 2, (a.bs,), generator=g)
    for i in range(3):  # warm-up
        loss = loss_fn(model(batches[i]), batches[i], labels); opt.zero_grad(); loss.backward(); opt.step()
    t0 = time.perf_counter()
    for i in range(steps):
        ids = batches[i % len(batches)]
        loss = loss_fn(model(ids), ids, labels); opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    return steps * a.bs / (time.perf_counter() - t0)

lm_loss = lambda out, ids, y: F.cross_entropy(out[:, :-1].reshape(-1, a.vocab), ids[:, 1:].reshape(-1), ignore_index=PAD)
m = TextTransformer(lm=True)
sps = timed(m, list(m.parameters()), lm_loss, a.steps)
print(f"lm   (causal LM, full training): {sps:.1f} samples/s = {sps * a.seq:.0f} tokens/s")

c = TextTransformer(lm=False)
for p_ in c.parameters(): p_.requires_grad_(False)
for b in c.blocks: b.at.q = LoRALinear(b.at.q); b.at.v = LoRALinear(b.at.v)
for p_ in c.head.parameters(): p_.requires_grad_(True)
params = [p_ for p_ in c.parameters() if p_.requires_grad]
sps = timed(c, params, lambda out, ids, y: F.cross_entropy(out, y), a.steps)
print(f"lora (classifier, LoRA q,v r=8 + head): {sps:.1f} samples/s = {sps * a.seq:.0f} tokens/s "
      f"({sum(p_.numel() for p_ in params)} trainable)")
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
