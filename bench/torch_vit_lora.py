#!/usr/bin/env python3
"""PyTorch eager anchor for bench/run.sh: the two ViT recipes of the demo, rebuilt in plain
PyTorch and trained the way tunekit trains them, so the samples/s of the two can be compared.

  stage 1 (recipes/vit_pretrain_fmnist.yaml): a ViT (patch 4, dim 128, depth 4, 4 heads, MLP x2,
          539,525 parameters) trained in full on Fashion-MNIST classes 0-4, AdamW lr 1e-3;
  stage 2 (recipes/vit_lora_fmnist.yaml): that model frozen, LoRA (r 8, alpha 16, B = 0) on
          blocks.*.attn.q and blocks.*.attn.v plus a new 5-class head, classes 5-9, AdamW lr 3e-3.

Both stages: batch 64, weight decay 0.01, linear warm-up (100 / 50 steps) then cosine decay,
global gradient-norm clipping at 1.0, 10 % of the training split held out per class (as
`data.val_fraction: 0.1`), images scaled to [0, 1] then standardised with mean 0.2860, sd 0.3530.
The timed part of a step is the same as tunekit's: batch gather, forward, backward, clipping and
the optimizer step. Thread policy as the recipes' `threads: {torch: 1, blas: 0}` (LibTorch one
thread, OpenBLAS every core):

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/torch_vit_lora.py --threads 1 [--steps N]

Output (bench/run.sh reads the two "samples/s" lines):
  pretrain classes0-4: <samples/s> samples/s, test acc <accuracy>
  lora trainable params: <n> of <total>
  lora classes5-9: <samples/s> samples/s, test acc <accuracy>
"""
import argparse
import gzip
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530
DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
PREPARED_ROOT = ".data/fashion-mnist"  # `tunekit prepare fashion_mnist` writes it (with a MANIFEST)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=0, help="optimizer steps per stage (0: --epochs epochs)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (OpenBLAS: OPENBLAS_NUM_THREADS)")
    p.add_argument("--root", default="", help="directory of the IDX files (default: as tunekit's data.root)")
    p.add_argument("--attn", choices=("softmax", "sigmoid"), default="softmax",
                   help="score function; sigmoid uses the bias -log(n), n = patches + 1, as model.attention")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def read_idx(root, stem):
    """One IDX file (raw or .gz) as a numpy array."""
    path = os.path.join(root, stem)
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(root, prefix, classes):
    """Images [N, 1, 28, 28] (standardised) and labels renumbered 0..k-1, for the given classes."""
    x = torch.from_numpy(read_idx(root, prefix + "-images-idx3-ubyte").copy())
    y = torch.from_numpy(read_idx(root, prefix + "-labels-idx1-ubyte").astype(np.int64))
    keep = torch.zeros_like(y, dtype=torch.bool)
    new = torch.full_like(y, -1)
    for i, c in enumerate(classes):
        keep |= y == c
        new[y == c] = i
    x = x[keep].float().div(255.0).sub(MEAN).div(STD).unsqueeze(1)
    return x, new[keep]


def hold_out(x, y, fraction, seed):
    """Drops a seeded `fraction` of every class (the validation share tunekit keeps aside)."""
    g = torch.Generator().manual_seed(seed)
    kept = []
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        kept.append(idx[int(round(fraction * len(idx))):])
    kept = torch.cat(kept).sort().values
    return x[kept], y[kept]


class LoRALinear(nn.Module):
    """h = W0 x + b + (alpha / r) B A x with W0, b frozen; A Kaiming-uniform, B = 0 (adapters/lora.h)."""

    def __init__(self, base, r=8, alpha=16.0):
        super().__init__()
        self.base, self.scaling = base, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


class SelfAttention(nn.Module):
    """q, k, v, o projections; softmax or sigmoid scores (models/attention.h)."""

    def __init__(self, dim, heads, score, n):
        super().__init__()
        self.heads, self.score, self.bias = heads, score, -math.log(n)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, n, c = x.shape
        dh = c // self.heads
        q, k, v = (t.view(b, n, self.heads, dh).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        s = q @ k.transpose(-2, -1) / math.sqrt(dh)
        p = s.softmax(-1) if self.score == "softmax" else torch.sigmoid(s + self.bias)
        return self.o((p @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + fc2(gelu(fc1(norm2(x)))) (models/block.h)."""

    def __init__(self, dim, heads, mlp_ratio, score, n):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, score, n)
        hidden = int(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Conv patch embedding, class token, learned positions, blocks, final norm, head on the class token (models/vit.h)."""

    def __init__(self, image=28, patch=4, dim=128, depth=4, heads=4, mlp_ratio=2.0, classes=5, score="softmax"):
        super().__init__()
        n = (image // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, score, n) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        h = self.patch_embed(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], 1) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, 0])


def scheduled_lr(base, step, total, warmup):
    """Linear warm-up, then cosine decay to 0 (schedule.kind: cosine)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * t))


def train(model, x, y, params, lr, warmup, args, bs=64):
    """Trains like tunekit's loop; returns samples/s over the timed part of the steps."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    per_epoch = len(x) // bs
    total = args.steps if args.steps > 0 else per_epoch * args.epochs
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    step, samples, seconds = 0, 0, 0.0
    while step < total:
        perm = torch.randperm(len(x), generator=g)
        for b in range(per_epoch):
            if step == total:
                break
            t0 = time.perf_counter()
            idx = perm[b * bs:(b + 1) * bs]
            loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            loss.backward()
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(lr, step, total, warmup)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - t0
            samples += len(idx)
            step += 1
    return samples / seconds


@torch.no_grad()
def accuracy(model, x, y, bs=512):
    model.eval()
    hits = sum((model(x[i:i + bs]).argmax(-1) == y[i:i + bs]).sum().item() for i in range(0, len(x), bs))
    return hits / len(x)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    root = args.root or (PREPARED_ROOT if os.path.exists(os.path.join(PREPARED_ROOT, "MANIFEST")) else DEBIAN_ROOT)
    pre, post = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)

    model = ViT(score=args.attn)
    x, y = hold_out(*load_split(root, "train", pre), 0.1, args.seed)
    sps = train(model, x, y, list(model.parameters()), 1e-3, 100, args)
    print(f"pretrain classes0-4: {sps:.1f} samples/s, test acc {accuracy(model, *load_split(root, 't10k', pre)):.4f}",
          flush=True)

    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.blocks:
        block.attn.q, block.attn.v = LoRALinear(block.attn.q), LoRALinear(block.attn.v)
    model.head = nn.Linear(model.head.in_features, len(post))
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    print(f"lora trainable params: {sum(p.numel() for p in params)} of {total}", flush=True)
    x, y = hold_out(*load_split(root, "train", post), 0.1, args.seed)
    sps = train(model, x, y, params, 3e-3, 50, args)
    print(f"lora classes5-9: {sps:.1f} samples/s, test acc {accuracy(model, *load_split(root, 't10k', post)):.4f}",
          flush=True)


if __name__ == "__main__":
    main()
