#!/usr/bin/env python3
"""PyTorch eager reference for issue 14's performance item: one LoRA training step on a
Qwen2-family causal LM (by default Qwen2.5-0.5B's shape), to set next to tunekit's step on the
same shape in the same run.

The model is plain nn.Modules with the Hugging Face module names (model.layers.N.self_attn.q_proj,
...) and the published formulas: RMSNorm in float32, HF's non-interleaved rotary
(rotate_half, inv_freq = 1/theta^(2i/d)), grouped-query attention by repeating the kv heads,
q/k/v biases, SwiGLU MLP, tied head. The base is frozen; LoRA (A Kaiming-uniform, B = 0, scale
alpha/r) sits on --targets; AdamW on the LoRA parameters only, gradient-norm clipping at --clip,
loss = next-token cross-entropy. A timed step = forward, loss, backward, clipping, optimizer
step, zero_grad.

  /usr/bin/python3 bench/torch_hf_lora.py [--steps 3] [--threads N]           # random base
  /usr/bin/python3 bench/torch_hf_lora.py --write DIR [--dtype bf16]          # write a checkpoint, exit
  /usr/bin/python3 bench/torch_hf_lora.py --load DIR [--steps 3]              # train on that checkpoint
  /usr/bin/python3 bench/torch_hf_lora.py --layers 2 --hidden 64 --heads 4 --kv-heads 2 \\
      --head-dim 16 --intermediate 128 --vocab 256 --check                  # small, checked

--write streams the tensors one at a time (config.json + model.safetensors in the Hugging Face
layout, written by tests/hf_reference.py's own safetensors writer), so writing the full shape
needs about one tensor's memory beyond Python's. --load reads the file tensor by tensor into the
float32 model. --check compares this model's logits (B = 0, then with B random) against
tests/hf_reference.py's forward on the same weights.

Output: one JSON object per line, each with "what": model, write, load, check, step (one per
step), summary (step_s_median over the steps after --warmup, tokens_per_s, peak_rss_mb from
getrusage, params_total, params_trainable, threads).
"""
import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import sys
import time
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def load_reference():
    """tests/hf_reference.py as a module (config.json keys, safetensors writer/reader, reference forward)."""
    path = os.path.join(HERE, "..", "tests", "hf_reference.py")
    spec = importlib.util.spec_from_file_location("hf_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = load_reference()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def emit(**fields):
    print(json.dumps(fields), flush=True)


class Linear(nn.Module):
    """A frozen y = x W^T + b with an optional LoRA branch (alpha/r) * B A x."""

    def __init__(self, n_in, n_out, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(n_out), requires_grad=False) if bias else None
        self.lora_A = None
        self.lora_B = None
        self.scaling = 0.0

    def add_lora(self, r, alpha):
        self.lora_A = nn.Parameter(torch.empty(r, self.weight.shape[1]))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.weight.shape[0], r))
        self.scaling = alpha / r

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.h, self.kv, self.dh = (cfg["hidden_size"], cfg["num_attention_heads"],
                                       cfg["num_key_value_heads"], cfg["head_dim"])
        self.q_proj = Linear(d, self.h * self.dh, cfg["qkv_bias"])
        self.k_proj = Linear(d, self.kv * self.dh, cfg["qkv_bias"])
        self.v_proj = Linear(d, self.kv * self.dh, cfg["qkv_bias"])
        self.o_proj = Linear(self.h * self.dh, d, cfg["o_bias"])

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv, self.dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.dh))
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.h * self.dh))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, ff, bias = cfg["hidden_size"], cfg["intermediate_size"], cfg["mlp_bias"]
        self.gate_proj = Linear(d, ff, bias)
        self.up_proj = Linear(d, ff, bias)
        self.down_proj = Linear(ff, d, bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class CausalLM(nn.Module):
    """Qwen2ForCausalLM's (and LlamaForCausalLM's) module tree and forward."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.lm_head = None if cfg["tie_word_embeddings"] else Linear(cfg["hidden_size"], cfg["vocab_size"], False)
        dh = cfg["head_dim"]
        self.inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))

    def forward(self, ids):
        n = ids.shape[1]
        angles = torch.arange(n, dtype=torch.float32).view(n, 1) * self.inv_freq.view(1, -1)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)  # True = masked (a later position)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head)


def config_from_args(a):
    """config.json of the shape the flags give (the keys tests/hf_reference.py writes)."""
    ns = types.SimpleNamespace(
        family=a.family, dtype=a.dtype, model_class="head", attention_bias=False, mlp_bias=False,
        tied=not a.untied, rope_theta=a.rope_theta, rope_parameters=False, sliding_window=0,
        vocab=a.vocab, hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
        head_dim=a.head_dim if a.head_dim != a.hidden // a.heads else 0, intermediate=a.intermediate,
        max_positions=a.max_positions)
    raw = ref.build_config(ns)
    raw["rms_norm_eps"] = a.rms_eps
    if a.family == "qwen2":
        raw["sliding_window"] = a.max_positions
    return raw


def write_checkpoint(a):
    os.makedirs(a.write, exist_ok=True)
    raw = config_from_args(a)
    ref.write_json(os.path.join(a.write, "config.json"), raw)
    cfg = ref.parse_config(raw)
    dtype = ref.STORAGE_DTYPES[a.dtype]
    st_dtype = ref.TORCH_TO_ST[dtype]
    gen = torch.Generator().manual_seed(a.seed)
    specs = [(name, st_dtype, shape,
              (lambda name=name, shape=shape, role=role: ref.init_tensor(name, shape, role, gen).to(dtype)))
             for name, (shape, role) in ref.expected_tensors(cfg).items()]
    t0 = time.perf_counter()
    nbytes = ref.write_safetensors_lazy(os.path.join(a.write, ref.SINGLE_FILE), specs)
    emit(what="write", dir=a.write, dtype=a.dtype, tensors=len(specs), data_bytes=nbytes,
         file_bytes=os.path.getsize(os.path.join(a.write, ref.SINGLE_FILE)),
         seconds=round(time.perf_counter() - t0, 3), peak_rss_mb=round(peak_rss_mb(), 1))


def random_init(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)


def load_into(model, cfg, directory):
    """Copies the checkpoint into the model tensor by tensor (dtype converted on the way)."""
    params = dict(model.named_parameters())
    where = ref.open_checkpoint(directory)
    loaded = set()
    with torch.no_grad():
        for name, f in where.items():
            if ref.is_buffer(name):
                continue
            canon = ref.canonical_name(cfg, name)
            if canon not in params:
                ref.fail(f"{directory}: unexpected tensor {name}")
            t = f.get(name)
            if list(t.shape) != list(params[canon].shape):
                ref.fail(f"{directory}: {name} has shape {list(t.shape)}, the model {list(params[canon].shape)}")
            params[canon].copy_(t)
            loaded.add(canon)
            del t
    missing = [n for n in params if "lora_" not in n and n not in loaded]
    if missing:
        ref.fail(f"{directory}: missing tensor {missing[0]}")


def lora_linears(model, targets):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, Linear) and name.rsplit(".", 1)[-1] in targets]


def check_against_reference(model, cfg, a):
    """This module's logits against hf_reference's forward on the same weights, with B = 0 and
    with B random (the reference then uses the merged W + s*B*A)."""
    gen = torch.Generator().manual_seed(a.seed + 7)
    ids = torch.randint(0, cfg["vocab_size"], (2, min(a.seq, 16)), generator=gen)
    W = {n: p.detach() for n, p in model.named_parameters() if "lora_" not in n}
    results = []
    outputs = []
    with torch.no_grad():
        for label in ("B=0", "B random"):
            if label == "B random":
                for _, m in lora_linears(model, a.targets):
                    m.lora_B.normal_(0.0, 0.05, generator=gen)
                for name, m in lora_linears(model, a.targets):
                    W[name + ".weight"] = ref.merged_weight(m.weight, False, m.lora_A, m.lora_B, m.scaling)
            mine = model(ids)
            theirs = ref.llama_forward(cfg, W, ids)["logits"]
            diff = float((mine - theirs).abs().max())
            results.append((label, diff))
            outputs.append(mine)
        for _, m in lora_linears(model, a.targets):
            m.lora_B.zero_()
    effect = float((outputs[1] - outputs[0]).abs().max())  # the LoRA branch must matter
    ok = all(d < 1e-4 for _, d in results) and effect > 1e-3
    emit(what="check", ok=ok, lora_effect=effect, **{f"max_abs_diff {label}": d for label, d in results})
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=("qwen2", "llama", "mistral"), default="qwen2")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=4864)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--max-positions", type=int, default=32768)
    p.add_argument("--rope-theta", type=float, default=1000000.0)
    p.add_argument("--rms-eps", type=float, default=1e-6)
    p.add_argument("--untied", action="store_true", help="a separate lm_head (Qwen2.5-0.5B ties it)")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj",
                   help="comma-separated module names among q/k/v/o_proj, gate/up/down_proj")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clipping (0: none)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", default="", help="write a random checkpoint of the shape to DIR and exit")
    p.add_argument("--dtype", choices=tuple(ref.STORAGE_DTYPES), default="f32", help="storage dtype for --write")
    p.add_argument("--load", default="", help="train on the checkpoint in DIR (its config.json gives the shape)")
    p.add_argument("--check", action="store_true", help="compare the logits with tests/hf_reference.py first")
    a = p.parse_args()
    a.targets = [t for t in a.targets.split(",") if t]
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    try:
        if a.write:
            write_checkpoint(a)
            return 0
        raw = ref.read_json(os.path.join(a.load, "config.json")) if a.load else config_from_args(a)
        cfg = ref.parse_config(raw)
        if cfg["family"] not in ref.LLAMA_FAMILIES:
            ref.fail(f"model_type {cfg['family']!r}: this bench runs the llama/mistral/qwen2 shape")
        model = CausalLM(cfg)
        if a.load:
            t0 = time.perf_counter()
            load_into(model, cfg, a.load)
            emit(what="load", dir=a.load, seconds=round(time.perf_counter() - t0, 3),
                 peak_rss_mb=round(peak_rss_mb(), 1))
        else:
            random_init(model, a.seed)
        hosts = lora_linears(model, a.targets)
        if not hosts:
            ref.fail(f"--targets {a.targets} match no linear layer")
        for _, m in hosts:
            m.add_lora(a.r, a.alpha)
        trainable = [q for q in model.parameters() if q.requires_grad]
        total = sum(q.numel() for q in model.parameters())
        emit(what="model", family=cfg["family"], layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"],
             heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"], head_dim=cfg["head_dim"],
             intermediate=cfg["intermediate_size"], vocab=cfg["vocab_size"], tied=cfg["tie_word_embeddings"],
             source=a.load or "random", lora_modules=len(hosts), r=a.r, alpha=a.alpha,
             params_total=total, params_trainable=sum(q.numel() for q in trainable))
        if a.check and not check_against_reference(model, cfg, a):
            return 1
        opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=a.weight_decay)
        gen = torch.Generator().manual_seed(a.seed + 1)
        ids = torch.randint(0, cfg["vocab_size"], (a.batch, a.seq), generator=gen)
        model.train()
        times = []
        for step in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            logits = model(ids)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
            loss.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, a.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            del logits
            emit(what="step", step=step, warmup=step < a.warmup, seconds=round(seconds, 4), loss=round(float(loss), 5))
            if step >= a.warmup:
                times.append(seconds)
        median = statistics.median(times) if times else float("nan")
        emit(what="summary", impl="pytorch-eager", torch=torch.__version__, threads=torch.get_num_threads(),
             batch=a.batch, seq=a.seq, steps=len(times), step_s_median=round(median, 4),
             tokens_per_s=round(a.batch * a.seq / median, 1) if times else None,
             peak_rss_mb=round(peak_rss_mb(), 1), params_total=total,
             params_trainable=sum(q.numel() for q in trainable))
    except ref.RefError as e:
        print(f"torch_hf_lora.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
