#!/usr/bin/env python3
"""PyTorch eager side of `make bench-llm` (issue 17): one row (a shape and a mode) of the
100M-500M-parameter benchmark, timed as bench/bench_llm.cpp times the same row in tunekit.

The models are plain nn.Modules written from the published formulas, as an eager user runs
them with transformers' eager attention (torch 1.13 has no fused attention):
  - GPT-2 (GPT2LMHeadModel): learned positions, LayerNorm, fused c_attn (q, k, v in one
    projection), gelu_new written out as transformers' NewGELUActivation, tied head;
  - Qwen2 (Qwen2ForCausalLM): RMSNorm in float32, rotary (rotate_half, inv_freq =
    theta^(-2i/d)), grouped-query attention by repeating the kv heads, q/k/v biases, SwiGLU,
    tied head.
Weights are nn.Linear's [out, in] (GPT-2's Conv1D stores the transpose; the products are the same).
Initialisation as transformers' _init_weights: normal(0, 0.02), biases 0, norms 1, GPT-2's c_proj
weights normal(0, 0.02 / sqrt(2 n_layer)); seeded.

Modes: full (AdamW on every parameter), lora (PEFT's LoRA: A Kaiming-uniform, B = 0, scale
alpha/r, on q_proj,v_proj; on GPT-2 on c_attn, the fused q/k/v projection, as PEFT's default
target for GPT-2), dora (PEFT's DoRA forward: result + (m/||W + s B A||_row - 1) * base +
m/||W + s B A||_row * s * B A x, the norm detached, B A built each forward), infer (prefill of
--seq tokens, then --new greedy tokens with a key/value cache grown by torch.cat as transformers'
DynamicCache; the prefill computes the head at the last position only, as generate does).
A training step = forward, next-token loss (full-vocabulary logits + F.cross_entropy),
backward, clip_grad_norm_(1.0), AdamW step, zero_grad. --compute bf16 runs forward and loss
under torch.cpu.amp.autocast(dtype=torch.bfloat16).

  /usr/bin/python3 bench/torch_llm.py --shape gpt2 --mode lora [--steps 2] [--warmup 1]
      [--threads 1] [--compute fp32|bf16] [--sgemm-gflops G] [--tiny] [--check]

--tiny shrinks the shape (2 layers, d 64, vocab 512, context 32) for quick checks; --check
compares the model's logits (B random, so the adapters matter) with tests/hf_reference.py's
forward on the merged weights, and the cached greedy decode with a full re-run, then exits.

Output: one JSON object per line ("what": model, step, summary); summary has step_s_median,
tokens_per_s, peak_rss_mb (VmHWM: this process's peak, so one row per process), flops_step
and mfu (against --sgemm-gflops), or for infer prefill_tokens_per_s / decode_tokens_per_s.
"""
import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

SHAPES = {
    "gpt2": dict(family="gpt2", vocab=50257, d=768, layers=12, heads=12, kv_heads=12, head_dim=64, ff=3072,
                 seq=256, batch=4, positions=1024),
    "gpt2-32k": dict(family="gpt2", vocab=32000, d=768, layers=12, heads=12, kv_heads=12, head_dim=64, ff=3072,
                     seq=256, batch=4, positions=1024),
    "qwen": dict(family="qwen2", vocab=151936, d=896, layers=24, heads=14, kv_heads=2, head_dim=64, ff=4864,
                 seq=256, batch=1, rope_theta=1e6, rms_eps=1e-6),
}
TINY = dict(vocab=512, d=64, layers=2, heads=4, head_dim=16, ff=160, seq=32, positions=160)


def emit(**fields):
    print(json.dumps(fields), flush=True)


def peak_rss_mb():
    """VmHWM of this process in MiB (ru_maxrss would also count the forked parent's pages)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


# ------------------------------------------------------------------------------------------
# FLOPs a step must do (the same formula as bench_llm.cpp's step_flops; printed in the table).
#   linear: 2 * tokens * (every projection's in*out, the head's d*V included)
#   core:   the attention core at causal cost, 2 products (Q K^T, P V) of 2*Dh FLOPs per head
#           and (query, key) pair with key <= query: 4 * H * Dh * N(N+1)/2 per sequence and layer
#   full:   3 * (linear + core)
#   lora, dora: (linear + core) forward + (linear - layer 0's q/k/v products) input gradients
#           + 2 * core (the core's backward) + 3 * adapter products (2 * tokens * r * (in + out) each)
#   infer:  prefill = linear without the head + the head at one position per row + core
def step_flops(s, mode, r):
    d, L, H, KV, Dh, ff, V, N, B = (s["d"], s["layers"], s["heads"], s["kv_heads"], s["head_dim"], s["ff"],
                                    s["vocab"], s["seq"], s["batch"])
    if s["family"] == "gpt2":
        qkv, proj, mlp = d * 3 * d, d * d, 2 * d * ff
        adapter_io = [(d, 3 * d)]  # c_attn
    else:
        qkv, proj, mlp = d * (H + 2 * KV) * Dh, H * Dh * d, 3 * d * ff
        adapter_io = [(d, H * Dh), (d, KV * Dh)]  # q_proj, v_proj
    T = B * N
    layer_lin = 2.0 * T * (qkv + proj + mlp)
    head = 2.0 * T * d * V
    linear = L * layer_lin + head
    core = L * B * 4.0 * H * Dh * N * (N + 1) / 2
    forward = linear + core
    if mode == "full":
        return 3 * forward
    if mode in ("lora", "dora"):
        adapters = L * sum(2.0 * T * r * (i + o) for i, o in adapter_io)
        return forward + (linear - 2.0 * T * qkv) + 2 * core + 3 * adapters
    if mode == "infer":
        return L * layer_lin + 2.0 * B * d * V + core
    raise ValueError(mode)


# ------------------------------------------------------------------------------------------
# Adapters as PEFT computes them.
class AdaptedLinear(nn.Module):
    def __init__(self, n_in, n_out, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.kind = None

    def add_adapter(self, kind, r, alpha):
        self.kind = kind
        self.lora_A = nn.Parameter(torch.empty(r, self.weight.shape[1]))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.weight.shape[0], r))
        self.scaling = alpha / r
        if kind == "dora":  # PEFT's lora_magnitude_vector: ||W + s B A||_row at the start
            with torch.no_grad():
                self.magnitude = nn.Parameter(self._weight_norm())

    def _weight_norm(self):
        lora_weight = self.lora_B @ self.lora_A  # PEFT builds B A [out, in]
        return torch.linalg.norm(self.weight + self.scaling * lora_weight, dim=1)

    def forward(self, x):
        result = F.linear(x, self.weight, self.bias)
        if self.kind == "lora":
            return result + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        if self.kind == "dora":
            # PEFT's DoraLinearLayer with the base result reused (no dropout): the norm detached
            weight_norm = self._weight_norm().detach()
            mag_norm_scale = (self.magnitude / weight_norm).view(1, -1)
            lora_result = F.linear(F.linear(x, self.lora_A), self.lora_B)
            base = result - self.bias if self.bias is not None else result
            return result + (mag_norm_scale - 1) * base + mag_norm_scale * lora_result * self.scaling
        return result


def merged(m):
    """m's effective [out, in] weight (for --check)."""
    w = m.weight.detach()
    if m.kind is None:
        return w
    v = w + m.scaling * (m.lora_B @ m.lora_A).detach()
    if m.kind == "dora":
        v = v * (m.magnitude.detach() / v.norm(dim=1)).view(-1, 1)
    return v


# ------------------------------------------------------------------------------------------
# GPT-2
def gelu_new(x):  # transformers' NewGELUActivation, as written there
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Gpt2Block(nn.Module):
    def __init__(self, s):
        super().__init__()
        d = s["d"]
        self.h, self.d = s["heads"], d
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = AdaptedLinear(d, 3 * d)
        self.c_proj = AdaptedLinear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = AdaptedLinear(d, s["ff"])
        self.mlp_c_proj = AdaptedLinear(s["ff"], d)

    def forward(self, x, cache, layer):
        b, n, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(self.d, dim=2)
        q, k, v = (t.view(b, n, self.h, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            if layer < len(cache):
                k = torch.cat((cache[layer][0], k), dim=2)
                v = torch.cat((cache[layer][1], v), dim=2)
                cache[layer] = (k, v)
            else:
                cache.append((k, v))
        x = x + self.c_proj(attention(q, k, v).transpose(1, 2).reshape(b, n, self.d))
        return x + self.mlp_c_proj(gelu_new(self.c_fc(self.ln_2(x))))


def attention(q, k, v):
    """transformers' eager attention: scores, causal mask (queries are the last n positions),
    softmax in float32, P V."""
    n, m = q.shape[2], k.shape[2]
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if n > 1:
        causal = torch.ones(n, m, dtype=torch.bool).tril(m - n)
        scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(probs, v)


class Gpt2(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        self.wte = nn.Embedding(s["vocab"], s["d"])
        self.wpe = nn.Embedding(s["positions"], s["d"])
        self.h = nn.ModuleList(Gpt2Block(s) for _ in range(s["layers"]))
        self.ln_f = nn.LayerNorm(s["d"], eps=1e-5)

    def forward(self, ids, cache=None, start=0, last_only=False):
        pos = torch.arange(start, start + ids.shape[1])
        x = self.wte(ids) + self.wpe(pos)
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:]
        return F.linear(x, self.wte.weight)

    def adapter_hosts(self):
        return [b.c_attn for b in self.h]

    def init_weights(self, gen):
        c_proj_std = 0.02 / math.sqrt(2 * self.s["layers"])
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, c_proj_std if name.endswith("c_proj.weight") else 0.02, generator=gen)

    def reference_weights(self):
        """tests/hf_reference.py's GPT-2 names, Conv1D layout [in, out]."""
        W = {"transformer.wte.weight": self.wte.weight.detach(), "transformer.wpe.weight": self.wpe.weight.detach(),
             "transformer.ln_f.weight": self.ln_f.weight.detach(), "transformer.ln_f.bias": self.ln_f.bias.detach()}
        for i, b in enumerate(self.h):
            p = f"transformer.h.{i}."
            for name, m in (("attn.c_attn", b.c_attn), ("attn.c_proj", b.c_proj), ("mlp.c_fc", b.c_fc),
                            ("mlp.c_proj", b.mlp_c_proj)):
                W[p + name + ".weight"] = merged(m).t()
                W[p + name + ".bias"] = m.bias.detach()
            for ln in ("ln_1", "ln_2"):
                W[p + ln + ".weight"] = getattr(b, ln).weight.detach()
                W[p + ln + ".bias"] = getattr(b, ln).bias.detach()
        return W


# ------------------------------------------------------------------------------------------
# Qwen2
class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class QwenLayer(nn.Module):
    def __init__(self, s):
        super().__init__()
        d, self.h, self.kv, self.dh = s["d"], s["heads"], s["kv_heads"], s["head_dim"]
        self.input_layernorm = RMSNorm(d, s["rms_eps"])
        self.q_proj = AdaptedLinear(d, self.h * self.dh)
        self.k_proj = AdaptedLinear(d, self.kv * self.dh)
        self.v_proj = AdaptedLinear(d, self.kv * self.dh)
        self.o_proj = AdaptedLinear(self.h * self.dh, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d, s["rms_eps"])
        self.gate_proj = AdaptedLinear(d, s["ff"], bias=False)
        self.up_proj = AdaptedLinear(d, s["ff"], bias=False)
        self.down_proj = AdaptedLinear(s["ff"], d, bias=False)

    def forward(self, x, cos, sin, cache, layer):
        b, n, _ = x.shape
        a = self.input_layernorm(x)
        q = self.q_proj(a).view(b, n, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(a).view(b, n, self.kv, self.dh).transpose(1, 2)
        v = self.v_proj(a).view(b, n, self.kv, self.dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if layer < len(cache):
                k = torch.cat((cache[layer][0], k), dim=2)
                v = torch.cat((cache[layer][1], v), dim=2)
                cache[layer] = (k, v)
            else:
                cache.append((k, v))
        group = self.h // self.kv  # transformers' repeat_kv: expand, then reshape
        m = k.shape[2]
        k = k[:, :, None].expand(b, self.kv, group, m, self.dh).reshape(b, self.h, m, self.dh)
        v = v[:, :, None].expand(b, self.kv, group, m, self.dh).reshape(b, self.h, m, self.dh)
        x = x + self.o_proj(attention(q, k, v).transpose(1, 2).reshape(b, n, self.h * self.dh))
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Qwen2(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        self.embed_tokens = nn.Embedding(s["vocab"], s["d"])
        self.layers = nn.ModuleList(QwenLayer(s) for _ in range(s["layers"]))
        self.norm = RMSNorm(s["d"], s["rms_eps"])
        dh = s["head_dim"]
        self.inv_freq = 1.0 / (s["rope_theta"] ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))

    def forward(self, ids, cache=None, start=0, last_only=False):
        n = ids.shape[1]
        angles = torch.arange(start, start + n, dtype=torch.float32).view(n, 1) * self.inv_freq.view(1, -1)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        return F.linear(x, self.embed_tokens.weight)

    def adapter_hosts(self):
        return [m for layer in self.layers for m in (layer.q_proj, layer.v_proj)]

    def init_weights(self, gen):
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)

    def reference_weights(self):
        W = {"model.embed_tokens.weight": self.embed_tokens.weight.detach(), "model.norm.weight": self.norm.weight.detach()}
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                m = getattr(layer, name)
                W[p + "self_attn." + name + ".weight"] = merged(m)
                if m.bias is not None:
                    W[p + "self_attn." + name + ".bias"] = m.bias.detach()
            for name in ("gate_proj", "up_proj", "down_proj"):
                W[p + "mlp." + name + ".weight"] = merged(getattr(layer, name))
            for ln in ("input_layernorm", "post_attention_layernorm"):
                W[p + ln + ".weight"] = getattr(layer, ln).weight.detach()
        return W

    def reference_config(self):
        s = self.s
        return {"num_attention_heads": s["heads"], "num_key_value_heads": s["kv_heads"], "head_dim": s["head_dim"],
                "rms_norm_eps": s["rms_eps"], "rope_theta": s["rope_theta"], "sliding_window": None,
                "num_hidden_layers": s["layers"], "tie_word_embeddings": True}


# ------------------------------------------------------------------------------------------
def load_reference():
    path = os.path.join(HERE, "..", "tests", "hf_reference.py")
    spec = importlib.util.spec_from_file_location("hf_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def greedy(model, ids, new, s):
    """Prefill ids, then new - 1 cached steps; returns (tokens [B, new], prefill s, decode s)."""
    cache = []
    t0 = time.perf_counter()
    nxt = model(ids, cache, 0, last_only=True)[:, -1].argmax(-1, keepdim=True)
    t1 = time.perf_counter()
    out = [nxt]
    for i in range(new - 1):
        nxt = model(nxt, cache, ids.shape[1] + i)[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
    t2 = time.perf_counter()
    return torch.cat(out, dim=1), t1 - t0, t2 - t1


def check(model, s, a):
    """Logits against tests/hf_reference.py on the merged weights (adapters with B random), and
    the cached greedy decode against re-running the whole context each token."""
    ref = load_reference()
    gen = torch.Generator().manual_seed(a.seed + 7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, AdaptedLinear) and m.kind is not None:
                m.lora_B.normal_(0.0, 0.05, generator=gen)
                if m.kind == "dora":
                    m.magnitude.mul_(1.0 + 0.1 * torch.rand(m.magnitude.shape, generator=gen))
        ids = torch.randint(0, s["vocab"], (2, s["seq"]), generator=gen)
        mine = model(ids)
        W = model.reference_weights()
        if s["family"] == "gpt2":
            cfg = {"n_embd": s["d"], "n_head": s["heads"], "n_positions": s["positions"], "activation": "gelu_new",
                   "layer_norm_epsilon": 1e-5, "n_layer": s["layers"], "tie_word_embeddings": True}
            theirs = ref.gpt2_forward(cfg, W, ids)["logits"]
        else:
            theirs = ref.llama_forward(model.reference_config(), W, ids)["logits"]
        diff = float((mine - theirs).abs().max())
        prompt = ids[:, : s["seq"] // 2]
        cached, _, _ = greedy(model, prompt, 8, s)
        context = prompt
        for _ in range(8):
            context = torch.cat((context, model(context)[:, -1].argmax(-1, keepdim=True)), dim=1)
        same = bool((context[:, prompt.shape[1]:] == cached).all())
    ok = diff < 1e-4 and same
    emit(what="check", ok=ok, max_abs_diff=diff, cached_decode_matches=same, mode=a.mode)
    return ok


def train_rows(model, s, a, trainable):
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=gen)
    model.train()
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with torch.cpu.amp.autocast(enabled=a.compute == "bf16", dtype=torch.bfloat16):
            logits = model(ids)
            # transformers' causal-LM loss: shift, upcast, cross-entropy over the full vocabulary
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, s["vocab"]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        del logits
        warm = step < a.warmup
        emit(what="step", step=step, warmup=warm, seconds=round(seconds, 4), loss=round(float(loss), 5))
        if not warm:
            times.append(seconds)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=tuple(SHAPES), default="gpt2")
    p.add_argument("--mode", choices=("full", "lora", "dora", "infer"), default="lora")
    p.add_argument("--steps", type=int, default=2, help="timed steps (infer: timed generations)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--new", type=int, default=64, help="infer: greedy tokens generated")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--compute", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--sgemm-gflops", type=float, default=0.0, help="the run's sgemm peak (MFU); 0: no MFU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a small model of the shape's family (checks)")
    p.add_argument("--check", action="store_true", help="check against tests/hf_reference.py and exit")
    a = p.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.r < 1 or a.new < 1:
        p.error("--steps, --r and --new must be at least 1, --warmup at least 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    s = dict(SHAPES[a.shape])
    if a.tiny:
        s.update(TINY)
        s["kv_heads"] = s["heads"] if s["family"] == "gpt2" else 2
        s["ff"] = 4 * s["d"] if s["family"] == "gpt2" else s["ff"]
    torch.manual_seed(a.seed)
    model = Gpt2(s) if s["family"] == "gpt2" else Qwen2(s)
    with torch.no_grad():
        model.init_weights(torch.Generator().manual_seed(a.seed))
    if a.mode in ("lora", "dora"):
        model.requires_grad_(False)
        for m in model.adapter_hosts():
            m.add_adapter(a.mode, a.r, a.alpha)
    elif a.mode == "infer":
        model.requires_grad_(False)
    trainable = [q for q in model.parameters() if q.requires_grad]
    total = sum(q.numel() for q in model.parameters())
    flops = step_flops(s, a.mode, a.r)
    emit(what="model", impl="pytorch-eager", shape=a.shape, mode=a.mode, family=s["family"], params_total=total,
         params_trainable=sum(q.numel() for q in trainable), flops_step=flops, batch=s["batch"], seq=s["seq"])
    if a.check:
        return 0 if check(model, s, a) else 1
    summary = dict(what="summary", impl="pytorch-eager", torch=torch.__version__, shape=a.shape, mode=a.mode,
                   compute=a.compute, threads=torch.get_num_threads(),
                   openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS", ""), batch=s["batch"], seq=s["seq"],
                   params_total=total, params_trainable=sum(q.numel() for q in trainable), flops_step=flops)
    if a.mode == "infer":
        model.eval()
        ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=torch.Generator().manual_seed(a.seed + 1))
        pre, dec = [], []
        with torch.no_grad(), torch.cpu.amp.autocast(enabled=a.compute == "bf16", dtype=torch.bfloat16):
            for rep in range(a.warmup + a.steps):
                _, tp, td = greedy(model, ids, a.new, s)
                emit(what="step", step=rep, warmup=rep < a.warmup, prefill_s=round(tp, 4), decode_s=round(td, 4))
                if rep >= a.warmup:
                    pre.append(tp)
                    dec.append(td)
        tp, td = statistics.median(pre), statistics.median(dec)
        summary.update(prefill_s_median=round(tp, 4), decode_s_median=round(td, 4),
                       prefill_tokens_per_s=round(s["batch"] * s["seq"] / tp, 1),
                       decode_tokens_per_s=round(s["batch"] * (a.new - 1) / td, 2), new_tokens=a.new,
                       step_s_median=round(tp, 4), tokens_per_s=round(s["batch"] * s["seq"] / tp, 1))
        seconds = tp
    else:
        seconds = train_rows(model, s, a, trainable)
        summary.update(steps=a.steps, step_s_median=round(seconds, 4),
                       tokens_per_s=round(s["batch"] * s["seq"] / seconds, 1))
    summary.update(peak_rss_mb=round(peak_rss_mb(), 1), gflops=round(flops / seconds / 1e9, 2),
                   sgemm_gflops=a.sgemm_gflops,
                   mfu=round(flops / seconds / 1e9 / a.sgemm_gflops, 4) if a.sgemm_gflops > 0 else None)
    emit(**summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
