#!/usr/bin/env python3
"""Independent Python reference for tunekit's Hugging Face support (issue 14).

Needs only torch and numpy: the safetensors reader/writer, the config.json handling and the
forwards are written here from the published file formats and formulas, so they share no code
with tunekit (C++) and no code with transformers/PEFT (not installed here). The C++ tests call it
with /usr/bin/python3. Every command is seeded and deterministic; errors print one line
"hf_reference.py: error: ..." on stderr and exit with status 1.

  make    --family {gpt2,llama,mistral,qwen2,vit} --out DIR [--dtype f32|f16|bf16] [--shards N]
          [--tied | --untied] [--kv-heads K] [--head-dim D] [--no-prefix] [--attention-bias]
          [--mlp-bias] [--model-class head|base] [--buffers] [--rope-parameters] [--seed S] ...
      A tiny random checkpoint in the Hugging Face layout: DIR/config.json (the family's real
      keys), DIR/model.safetensors or DIR/model-0000K-of-0000N.safetensors +
      DIR/model.safetensors.index.json, DIR/preprocessor_config.json (ViT), and
      DIR/reference.safetensors holding
        input    LMs: token ids int64 [2, 7]; ViT: images float32 [2, 1, 12, 12] as the data gives
                 them, x = (x01 - data_mean) / data_std with x01 in [0, 1]
        logits   float32, the reference forward in float32 from the stored (dtype-rounded)
                 weights: LMs [2, 7, vocab]; ViTForImageClassification [2, num_labels]
      ViT also: data_mean, data_std (float32 [1]: 0.2860, 0.3530 = Fashion-MNIST's),
        pixel_values float32 [2, num_channels, image_size, image_size] (the input preprocessed as
        below), features float32 [2, hidden] (final layernorm on the cls token), and for
        --model-class base (ViTModel, no classifier) pooler_output [2, hidden] instead of logits.
      ViT preprocessing of `input`: x01 = x * data_std + data_mean; bilinear resize to image_size
        (torch.nn.functional.interpolate, align_corners=False, antialias=False); a grey channel
        repeated to num_channels; (x01 - image_mean[c]) / image_std[c] with the mean/std of
        preprocessor_config.json (ImageNet's: 0.485,0.456,0.406 / 0.229,0.224,0.225).
  peft    --base DIR --out ADIR --r R --alpha A (--targets q_proj,v_proj | --targets-regex RE)
          [--dora] [--rslora] [--modules-to-save classifier] [--seed S] ...
      A LoRA/DoRA adapter exactly as PEFT saves one (ADIR/adapter_config.json,
      ADIR/adapter_model.safetensors: base_model.model.<module>.lora_A.weight [r, in],
      .lora_B.weight [out, r] (random, not zero), .lora_magnitude_vector [out] with --dora,
      base_model.model.<module>.{weight,bias} for modules_to_save) and ADIR/reference.safetensors:
      input (copied from the base) and logits (+ features for ViT) of the adapted model.
  apply   --base DIR --adapter ADIR --out FILE [--model-class head|base] [--lenient] [--new-head]
      What PeftModel.from_pretrained does with an adapter written elsewhere (tunekit): checks
      adapter_config.json and every key/shape against the base, applies W + s*B*A (DoRA: the
      magnitude times the row-normalised sum), writes FILE with logits (+ features for ViT) on the
      base's reference input, prints a JSON summary on stdout.
  forward --model DIR --out FILE [--input FILE] [--pixel-values]
      Logits of any Hugging Face directory (e.g. one tunekit wrote) on DIR/reference.safetensors'
      input or on --input FILE (a safetensors file with `input`, as `make` writes it); strict like
      a loader that must not guess: missing, unexpected or mis-shaped tensors are errors.
  selftest
      Runs this file's own checks (writer/reader round trips, sharded == single file, every dtype,
      tied/untied, GQA, head_dim, biases, prefixes, formula cross-checks, peft -> apply).

Weights: LoRA merge W' = W + s*B*A with s = alpha/r (alpha/sqrt(r) with use_rslora); DoRA
W' = m * (W + s*B*A) / ||W + s*B*A||, the norm taken per output row. GPT-2's Conv1D stores W
transposed ([in, out]); the adapter tensors have the nn.Linear shapes all the same.
"""
import argparse
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F


class RefError(Exception):
    """A problem with a file or an argument: reported as one line, exit status 1."""


def fail(message):
    raise RefError(message)


# --------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
# data_offsets: [begin, end)}} (+ "__metadata__": {str: str}), then the raw little-endian bytes,
# offsets relative to the end of the header.

# safetensors dtype -> (torch dtype, bytes per element, numpy dtype the bytes are moved with)
ST_DTYPES = {
    "F64": (torch.float64, 8, "<f8"),
    "F32": (torch.float32, 4, "<f4"),
    "F16": (torch.float16, 2, "<f2"),
    "BF16": (torch.bfloat16, 2, "<u2"),
    "I64": (torch.int64, 8, "<i8"),
    "I32": (torch.int32, 4, "<i4"),
    "I16": (torch.int16, 2, "<i2"),
    "I8": (torch.int8, 1, "i1"),
    "U8": (torch.uint8, 1, "u1"),
    "BOOL": (torch.bool, 1, "u1"),
}
TORCH_TO_ST = {v[0]: k for k, v in ST_DTYPES.items()}
STORAGE_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
CONFIG_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def st_dtype_of(tensor):
    if tensor.dtype not in TORCH_TO_ST:
        fail(f"no safetensors dtype for {tensor.dtype}")
    return TORCH_TO_ST[tensor.dtype]


def tensor_array(tensor):
    """The tensor's elements as a little-endian numpy array, row-major (no copy where the
    machine is little-endian already)."""
    t = tensor.detach().cpu().contiguous()
    name = st_dtype_of(t)
    if t.dtype == torch.bfloat16:
        # bfloat16 is the upper half of an IEEE float32; torch's rounding gave those 16 bits
        arr = t.view(torch.int16).numpy().view(np.uint16)
    elif t.dtype == torch.bool:
        arr = t.to(torch.uint8).numpy()
    else:
        arr = t.numpy()
    return arr.astype(ST_DTYPES[name][2], copy=False)


def tensor_bytes(tensor):
    return tensor_array(tensor).tobytes()


def tensor_from_bytes(raw, st_dtype, shape):
    tdtype, _, npd = ST_DTYPES[st_dtype]
    arr = np.frombuffer(raw, dtype=npd)
    if st_dtype == "BF16":
        t = torch.from_numpy(arr.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
    elif st_dtype == "BOOL":
        if arr.size and arr.max() > 1:
            fail("BOOL tensor holds bytes other than 0 and 1")
        t = torch.from_numpy(arr.astype(np.uint8)).to(torch.bool)
    else:
        t = torch.from_numpy(arr.astype(np.dtype(npd).newbyteorder("="), copy=True))
    return t.reshape(shape)


def write_safetensors_lazy(path, specs, metadata=None):
    """Writes `specs` = [(name, st_dtype, shape, make)] one tensor at a time: the header comes
    from the shapes alone, and make() is called only when its bytes are due, so a file larger
    than memory can be written. metadata defaults to {"format": "pt"} as torch-saved files have."""
    header = OrderedDict()
    header["__metadata__"] = OrderedDict(metadata if metadata is not None else {"format": "pt"})
    offset = 0
    seen = set()
    for name, st_dtype, shape, _ in specs:
        if name in seen:
            fail(f"{path}: tensor {name} twice")
        seen.add(name)
        nbytes = int(np.prod(shape, dtype=np.int64)) * ST_DTYPES[st_dtype][1]
        header[name] = OrderedDict(dtype=st_dtype, shape=[int(s) for s in shape],
                                   data_offsets=[offset, offset + nbytes])
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, st_dtype, shape, make in specs:
            t = make()
            if st_dtype_of(t) != st_dtype or list(t.shape) != [int(s) for s in shape]:
                fail(f"{path}: {name} made as {st_dtype_of(t)} {list(t.shape)}, declared {st_dtype} {list(shape)}")
            f.write(memoryview(tensor_array(t)).cast("B"))
            del t
    os.replace(tmp, path)
    return offset


def write_safetensors(path, tensors, metadata=None):
    """tensors: a mapping or a list of (name, tensor); written in that order."""
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    specs = [(n, st_dtype_of(t), list(t.shape), (lambda t=t: t)) for n, t in items]
    return write_safetensors_lazy(path, specs, metadata)


class SafetensorsFile:
    """A safetensors file checked as strictly as the format allows (header length, JSON, known
    dtypes, sizes matching shapes, data blocks contiguous and covering the rest of the file
    exactly); tensors are read one at a time on request."""

    def __init__(self, path):
        self.path = path
        if not os.path.isfile(path):
            fail(f"{path}: no such file")
        size = os.path.getsize(path)
        if size < 8:
            fail(f"{path}: truncated: {size} bytes, shorter than the 8-byte header length")
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                fail(f"{path}: header length {n} runs past the end of the file ({size} bytes): truncated")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=OrderedDict)
        except (UnicodeDecodeError, ValueError) as e:
            fail(f"{path}: header is not JSON: {e}")
        if not isinstance(header, dict):
            fail(f"{path}: header is not a JSON object")
        self.metadata = header.pop("__metadata__", None)
        if self.metadata is not None and (not isinstance(self.metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items())):
            fail(f"{path}: __metadata__ must map strings to strings")
        self.data_start = 8 + n
        self.data_size = size - 8 - n
        self.entries = OrderedDict()
        spans = []
        for name, info in header.items():
            if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
                fail(f"{path}: {name}: entry must have exactly dtype, shape, data_offsets")
            st_dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
            if st_dtype not in ST_DTYPES:
                fail(f"{path}: {name}: unknown dtype {st_dtype!r}")
            if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                fail(f"{path}: {name}: bad shape {shape!r}")
            if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                    or not 0 <= offs[0] <= offs[1]):
                fail(f"{path}: {name}: bad data_offsets {offs!r}")
            want = int(np.prod(shape, dtype=np.int64)) * ST_DTYPES[st_dtype][1]
            if offs[1] - offs[0] != want:
                fail(f"{path}: {name}: {offs[1] - offs[0]} bytes for {st_dtype} {shape} (needs {want})")
            self.entries[name] = (st_dtype, shape, offs[0], offs[1])
            spans.append((offs[0], offs[1], name))
        end = 0
        for begin, stop, name in sorted(spans):
            if begin != end:
                fail(f"{path}: {name}: data starts at {begin}, expected {end} (gap or overlap)")
            end = stop
        if end > self.data_size:
            fail(f"{path}: tensor data needs {end} bytes, the file has {self.data_size} after the header: truncated")
        if end < self.data_size:
            fail(f"{path}: {self.data_size - end} bytes after the last tensor")

    def keys(self):
        return list(self.entries)

    def nbytes(self, name):
        return self.entries[name][3] - self.entries[name][2]

    def get(self, name):
        st_dtype, shape, begin, stop = self.entries[name]
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            raw = f.read(stop - begin)
        return tensor_from_bytes(raw, st_dtype, shape)


def read_safetensors(path):
    f = SafetensorsFile(path)
    return OrderedDict((k, f.get(k)) for k in f.keys())


# --------------------------------------------------------------------------------------------
# Checkpoint directories: model.safetensors, or shards + model.safetensors.index.json.

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_json(path):
    if not os.path.isfile(path):
        fail(f"{path}: no such file")
    try:
        with open(path) as f:
            return json.load(f, object_pairs_hook=OrderedDict)
    except ValueError as e:
        fail(f"{path}: not JSON: {e}")


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def open_checkpoint(directory):
    """{name: SafetensorsFile} for every tensor of the directory's checkpoint (the single file
    wins over an index, as transformers does)."""
    single = os.path.join(directory, SINGLE_FILE)
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(single):
        f = SafetensorsFile(single)
        return OrderedDict((k, f) for k in f.keys())
    if not os.path.isfile(index_path):
        fail(f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE}")
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        fail(f"{index_path}: no weight_map")
    files = OrderedDict()
    for shard in sorted(set(weight_map.values())):
        if not isinstance(shard, str) or os.path.basename(shard) != shard:
            fail(f"{index_path}: weight_map names {shard!r}, not a file of the directory")
        files[shard] = SafetensorsFile(os.path.join(directory, shard))
    where = OrderedDict()
    total = 0
    for shard, f in files.items():
        for k in f.keys():
            if k not in weight_map:
                fail(f"{os.path.join(directory, shard)}: {k} is not in {INDEX_FILE}'s weight_map")
            if weight_map[k] != shard:
                fail(f"{os.path.join(directory, shard)}: {k} is mapped to {weight_map[k]} in {INDEX_FILE}")
            where[k] = f
            total += f.nbytes(k)
    for k, shard in weight_map.items():
        if k not in where:
            fail(f"{index_path}: {k} is mapped to {shard}, which does not hold it")
    meta = index.get("metadata", {})
    if isinstance(meta, dict) and "total_size" in meta and int(meta["total_size"]) != total:
        fail(f"{index_path}: metadata.total_size {meta['total_size']} != {total} bytes of tensor data")
    return OrderedDict((k, where[k]) for k in weight_map)


def load_checkpoint(directory):
    """All tensors of a checkpoint directory, in their stored dtypes."""
    where = open_checkpoint(directory)
    return OrderedDict((k, f.get(k)) for k, f in where.items())


def save_checkpoint(directory, tensors, shards=1):
    """Writes tensors (already in the storage dtype) as model.safetensors, or as `shards` files
    split at roughly equal byte counts with the index transformers reads."""
    items = list(tensors.items())
    if shards <= 1:
        write_safetensors(os.path.join(directory, SINGLE_FILE), items)
        return [SINGLE_FILE]
    if shards > len(items):
        fail(f"--shards {shards}: the checkpoint has only {len(items)} tensors")
    sizes = [t.numel() * t.element_size() for _, t in items]
    total = sum(sizes)
    groups = [[] for _ in range(shards)]
    done = 0
    for i, (item, size) in enumerate(zip(items, sizes)):
        # the shard whose share of the bytes this tensor starts in, leaving one tensor at least
        # for every later shard
        g = min(shards - 1, done * shards // max(total, 1))
        g = max(g, shards - (len(items) - i))
        g = min(g, i)
        groups[g].append(item)
        done += size
    names = []
    weight_map = {}
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(directory, name), group)
        names.append(name)
        for n, _ in group:
            weight_map[n] = name
    write_json(os.path.join(directory, INDEX_FILE),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    return names + [INDEX_FILE]


# --------------------------------------------------------------------------------------------
# config.json: parse into one normalised dict per family (what the forwards and the checks use).

LLAMA_FAMILIES = ("llama", "mistral", "qwen2")
FAMILIES = ("gpt2",) + LLAMA_FAMILIES + ("vit",)
HEAD_CLASS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
              "qwen2": "Qwen2ForCausalLM", "vit": "ViTForImageClassification"}
BASE_CLASS = {"gpt2": "GPT2Model", "vit": "ViTModel", "llama": "LlamaModel", "mistral": "MistralModel",
              "qwen2": "Qwen2Model"}
# the attribute of the *ForCausalLM / *ForImageClassification class that holds the base model
PREFIX = {"gpt2": "transformer.", "llama": "model.", "mistral": "model.", "qwen2": "model.", "vit": "vit."}
HEAD_KEYS = ("lm_head.", "classifier.")


def parse_config(directory_or_dict, where="config.json"):
    raw = directory_or_dict
    if not isinstance(raw, dict):
        where = os.path.join(directory_or_dict, "config.json")
        raw = read_json(where)

    def need(key, kind=int):
        if key not in raw or raw[key] is None:
            fail(f"{where}: missing key {key}")
        v = raw[key]
        if kind is int and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            fail(f"{where}: {key} must be a positive integer, not {v!r}")
        if kind is float and not isinstance(v, (int, float)):
            fail(f"{where}: {key} must be a number, not {v!r}")
        return v

    def opt(key, default):
        v = raw.get(key)
        return default if v is None else v

    family = raw.get("model_type")
    if family not in FAMILIES:
        fail(f"{where}: model_type {family!r} is not one of {', '.join(FAMILIES)}")
    archs = raw.get("architectures") or [HEAD_CLASS[family]]
    if archs[0] == HEAD_CLASS[family]:
        model_class = "head"
    elif archs[0] == BASE_CLASS[family]:
        model_class = "base"
    else:
        fail(f"{where}: architectures {archs[0]!r} is not {HEAD_CLASS[family]} or {BASE_CLASS[family]}")
    cfg = {"family": family, "model_class": model_class, "torch_dtype": raw.get("torch_dtype")}
    if family == "gpt2":
        cfg.update(vocab_size=need("vocab_size"), n_positions=need("n_positions"), n_embd=need("n_embd"),
                   n_layer=need("n_layer"), n_head=need("n_head"),
                   layer_norm_epsilon=float(opt("layer_norm_epsilon", 1e-5)),
                   activation=opt("activation_function", "gelu_new"),
                   tie_word_embeddings=bool(opt("tie_word_embeddings", True)))
        cfg["n_inner"] = opt("n_inner", 4 * cfg["n_embd"])
        if cfg["activation"] not in ("gelu_new", "gelu", "relu", "gelu_pytorch_tanh"):
            fail(f"{where}: activation_function {cfg['activation']!r} is not supported")
        if cfg["n_embd"] % cfg["n_head"]:
            fail(f"{where}: n_embd {cfg['n_embd']} is not a multiple of n_head {cfg['n_head']}")
    elif family in LLAMA_FAMILIES:
        cfg.update(vocab_size=need("vocab_size"), hidden_size=need("hidden_size"),
                   intermediate_size=need("intermediate_size"), num_hidden_layers=need("num_hidden_layers"),
                   num_attention_heads=need("num_attention_heads"),
                   rms_norm_eps=float(opt("rms_norm_eps", 1e-6)),
                   max_position_embeddings=int(opt("max_position_embeddings", 2048)),
                   tie_word_embeddings=bool(opt("tie_word_embeddings", False)))
        cfg["num_key_value_heads"] = int(opt("num_key_value_heads", cfg["num_attention_heads"]))
        if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
            fail(f"{where}: num_attention_heads {cfg['num_attention_heads']} is not a multiple of "
                 f"num_key_value_heads {cfg['num_key_value_heads']}")
        cfg["head_dim"] = int(opt("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]))
        if opt("hidden_act", "silu") != "silu":
            fail(f"{where}: hidden_act {raw['hidden_act']!r} is not silu")
        rope = raw.get("rope_parameters") or {}
        scaling = raw.get("rope_scaling") or {}
        theta = raw.get("rope_theta", rope.get("rope_theta", 10000.0))
        for r in (rope, scaling):
            kind = r.get("rope_type", r.get("type", "default"))
            if kind != "default":
                fail(f"{where}: rope type {kind!r} is not supported")
        cfg["rope_theta"] = float(theta)
        if family == "qwen2":
            cfg.update(qkv_bias=True, o_bias=False, mlp_bias=False)
            cfg["sliding_window"] = raw.get("sliding_window") if raw.get("use_sliding_window") else None
            # Qwen2 slides only in the layers from max_window_layers on
            cfg["max_window_layers"] = int(opt("max_window_layers", 0))
        else:
            bias = bool(opt("attention_bias", False))
            cfg.update(qkv_bias=bias, o_bias=bias, mlp_bias=bool(opt("mlp_bias", False)))
            cfg["sliding_window"] = raw.get("sliding_window") if family == "mistral" else None
        if model_class == "base":
            fail(f"{where}: {archs[0]} (no LM head) is not a layout this reference handles")
    else:
        cfg.update(hidden_size=need("hidden_size"), num_hidden_layers=need("num_hidden_layers"),
                   num_attention_heads=need("num_attention_heads"), intermediate_size=need("intermediate_size"),
                   image_size=need("image_size"), patch_size=need("patch_size"),
                   num_channels=int(opt("num_channels", 3)), layer_norm_eps=float(opt("layer_norm_eps", 1e-12)),
                   qkv_bias=bool(opt("qkv_bias", True)))
        if opt("hidden_act", "gelu") != "gelu":
            fail(f"{where}: hidden_act {raw['hidden_act']!r} is not gelu")
        if cfg["image_size"] % cfg["patch_size"]:
            fail(f"{where}: image_size {cfg['image_size']} is not a multiple of patch_size {cfg['patch_size']}")
        if isinstance(raw.get("id2label"), dict):
            cfg["num_labels"] = len(raw["id2label"])
        else:
            cfg["num_labels"] = int(opt("num_labels", 2))
    return cfg


def read_preprocessor(directory):
    path = os.path.join(directory, "preprocessor_config.json")
    if not os.path.isfile(path):
        return None
    raw = read_json(path)
    return {"mean": [float(v) for v in raw.get("image_mean", [0.5, 0.5, 0.5])],
            "std": [float(v) for v in raw.get("image_std", [0.5, 0.5, 0.5])],
            "do_normalize": bool(raw.get("do_normalize", True)),
            "do_resize": bool(raw.get("do_resize", True)), "size": raw.get("size")}


# --------------------------------------------------------------------------------------------
# The tensors each layout holds, in canonical names (the *ForCausalLM / *ForImageClassification
# names; ViTModel's pooler as vit.pooler.*), with their shapes and roles.

def expected_tensors(cfg):
    """OrderedDict canonical name -> (shape, role); role is one of linear, conv1d (GPT-2, stored
    [in, out]), embed, pos, cls, patch, norm, bias."""
    out = OrderedDict()

    def linear(path, n_in, n_out, bias, role="linear"):
        out[path + ".weight"] = ([n_in, n_out] if role == "conv1d" else [n_out, n_in], role)
        if bias:
            out[path + ".bias"] = ([n_out], "bias")

    def norm(path, n, bias=True):
        out[path + ".weight"] = ([n], "norm")
        if bias:
            out[path + ".bias"] = ([n], "bias")

    fam = cfg["family"]
    if fam == "gpt2":
        d, inner = cfg["n_embd"], cfg["n_inner"]
        out["transformer.wte.weight"] = ([cfg["vocab_size"], d], "embed")
        out["transformer.wpe.weight"] = ([cfg["n_positions"], d], "pos")
        for i in range(cfg["n_layer"]):
            p = f"transformer.h.{i}."
            norm(p + "ln_1", d)
            linear(p + "attn.c_attn", d, 3 * d, True, "conv1d")
            linear(p + "attn.c_proj", d, d, True, "conv1d")
            norm(p + "ln_2", d)
            linear(p + "mlp.c_fc", d, inner, True, "conv1d")
            linear(p + "mlp.c_proj", inner, d, True, "conv1d")
        norm("transformer.ln_f", d)
        if not cfg["tie_word_embeddings"]:
            linear("lm_head", d, cfg["vocab_size"], False)
    elif fam in LLAMA_FAMILIES:
        d, h, kv, dh, ff = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                            cfg["head_dim"], cfg["intermediate_size"])
        out["model.embed_tokens.weight"] = ([cfg["vocab_size"], d], "embed")
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            linear(p + "self_attn.q_proj", d, h * dh, cfg["qkv_bias"])
            linear(p + "self_attn.k_proj", d, kv * dh, cfg["qkv_bias"])
            linear(p + "self_attn.v_proj", d, kv * dh, cfg["qkv_bias"])
            linear(p + "self_attn.o_proj", h * dh, d, cfg["o_bias"])
            linear(p + "mlp.gate_proj", d, ff, cfg["mlp_bias"])
            linear(p + "mlp.up_proj", d, ff, cfg["mlp_bias"])
            linear(p + "mlp.down_proj", ff, d, cfg["mlp_bias"])
            norm(p + "input_layernorm", d, bias=False)
            norm(p + "post_attention_layernorm", d, bias=False)
        norm("model.norm", d, bias=False)
        if not cfg["tie_word_embeddings"]:
            linear("lm_head", d, cfg["vocab_size"], False)
    else:
        d, ff, ps, c = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"], cfg["num_channels"]
        n = (cfg["image_size"] // ps) ** 2
        out["vit.embeddings.cls_token"] = ([1, 1, d], "cls")
        out["vit.embeddings.position_embeddings"] = ([1, n + 1, d], "pos")
        out["vit.embeddings.patch_embeddings.projection.weight"] = ([d, c, ps, ps], "patch")
        out["vit.embeddings.patch_embeddings.projection.bias"] = ([d], "bias")
        for i in range(cfg["num_hidden_layers"]):
            p = f"vit.encoder.layer.{i}."
            for name in ("query", "key", "value"):
                linear(p + "attention.attention." + name, d, d, cfg["qkv_bias"])
            linear(p + "attention.output.dense", d, d, True)
            linear(p + "intermediate.dense", d, ff, True)
            linear(p + "output.dense", ff, d, True)
            norm(p + "layernorm_before", d)
            norm(p + "layernorm_after", d)
        norm("vit.layernorm", d)
        if cfg["model_class"] == "head":
            linear("classifier", d, cfg["num_labels"], True)
        else:
            linear("vit.pooler.dense", d, d, True)
    return out


def is_buffer(name):
    """Non-parameter tensors older files carry and loaders skip."""
    return (name.endswith(".attn.bias") or name.endswith(".attn.masked_bias")
            or name.endswith("rotary_emb.inv_freq"))


def canonical_name(cfg, name):
    """A file's key as the canonical (head-class) name: the base-model prefix is added when the
    file lacks it (GPT2Model / ViTModel style files, or files saved without it)."""
    prefix = PREFIX[cfg["family"]]
    if name.startswith(prefix) or name.startswith(HEAD_KEYS):
        return name
    return prefix + name


def class_name(cfg, canonical, model_class):
    """The canonical name as the module path of `model_class` (base classes have no prefix)."""
    prefix = PREFIX[cfg["family"]]
    if model_class == "base" and canonical.startswith(prefix):
        return canonical[len(prefix):]
    return canonical


def canonical_state(cfg, stored, where, ignored=None):
    """The stored tensors as float32 under canonical names; missing, unexpected or mis-shaped
    tensors are errors. Skipped: buffers; and, appended to `ignored`, what transformers drops
    too: a ViTModel pooler in a classification file, an lm_head.weight when the head is tied."""
    expected = expected_tensors(cfg)
    state = OrderedDict()
    for name, t in stored.items():
        if is_buffer(name):
            continue
        canon = canonical_name(cfg, name)
        if ((canon.startswith("vit.pooler.") and cfg["model_class"] == "head")
                or (canon == "lm_head.weight" and cfg.get("tie_word_embeddings"))):
            if ignored is not None:
                ignored.append(name)
            continue
        if canon not in expected:
            fail(f"{where}: unexpected tensor {name}")
        if canon in state:
            fail(f"{where}: {name} appears twice (with and without the {PREFIX[cfg['family']]} prefix)")
        if list(t.shape) != expected[canon][0]:
            fail(f"{where}: {name} has shape {list(t.shape)}, config.json implies {expected[canon][0]}")
        if not t.is_floating_point():
            fail(f"{where}: {name} is {st_dtype_of(t)}, not a float dtype")
        state[canon] = t.float()
    missing = [k for k in expected if k not in state]
    if missing:
        fail(f"{where}: missing tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return state


# --------------------------------------------------------------------------------------------
# Reference forwards (float32), written from the published formulas.

def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mean) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    x = x.float()
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def gelu_tanh(x):  # GPT-2's gelu_new
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def attend(q, k, v, mask):
    """q [B,H,N,Dh], k/v [B,H,N,Dh], mask [N,N] bool (True = may attend) or None."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def causal_mask(n, window=None):
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    mask = j <= i
    if window is not None:
        mask &= (i - j) < window
    return mask


def heads(x, h):
    b, n, _ = x.shape
    return x.view(b, n, h, -1).transpose(1, 2)


def merge_heads(x):
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def gpt2_forward(cfg, W, ids):
    b, n = ids.shape
    d, nh = cfg["n_embd"], cfg["n_head"]
    if n > cfg["n_positions"]:
        fail(f"{n} tokens exceed n_positions {cfg['n_positions']}")
    act = {"gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "gelu": gelu_erf, "relu": torch.relu}[cfg["activation"]]
    eps = cfg["layer_norm_epsilon"]
    x = W["transformer.wte.weight"][ids] + W["transformer.wpe.weight"][:n]
    mask = causal_mask(n)
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        a = layer_norm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]  # Conv1D: x @ W[in, out]
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        o = merge_heads(attend(heads(q, nh), heads(k, nh), heads(v, nh), mask))
        x = x + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = layer_norm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = act(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        x = x + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    x = layer_norm(x, W["transformer.ln_f.weight"], W["transformer.ln_f.bias"], eps)
    head = W["transformer.wte.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return {"logits": x @ head.t()}


def rotary_cos_sin(n, dim, theta):
    """HF's non-interleaved rotary: inv_freq_i = theta^(-2i/dim), angles repeated for both halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    angles = torch.arange(n, dtype=torch.float32).view(n, 1) * inv_freq.view(1, -1)
    angles = torch.cat([angles, angles], dim=-1)  # [n, dim]
    return angles.cos(), angles.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def linear(x, W, path):
    y = x @ W[path + ".weight"].t()
    return y + W[path + ".bias"] if path + ".bias" in W else y


def llama_forward(cfg, W, ids):
    b, n = ids.shape
    h, kv, dh = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    cos, sin = rotary_cos_sin(n, dh, cfg["rope_theta"])
    full_mask = causal_mask(n)
    slide_mask = causal_mask(n, cfg["sliding_window"]) if cfg.get("sliding_window") else full_mask
    x = W["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = heads(linear(a, W, p + "self_attn.q_proj"), h)
        k = heads(linear(a, W, p + "self_attn.k_proj"), kv)
        v = heads(linear(a, W, p + "self_attn.v_proj"), kv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = h // kv  # query head j reads key/value head j // group
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        mask = slide_mask if i >= cfg.get("max_window_layers", 0) else full_mask
        x = x + linear(merge_heads(attend(q, k, v, mask)), W, p + "self_attn.o_proj")
        m = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        gate = linear(m, W, p + "mlp.gate_proj")
        x = x + linear(F.silu(gate) * linear(m, W, p + "mlp.up_proj"), W, p + "mlp.down_proj")
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return {"logits": x @ head.t()}


def vit_preprocess(images, data_mean, data_std, pre, cfg):
    """Data images (normalised with the data's mean/std) -> the model's pixel_values."""
    x = images.float() * data_std.view(1, -1, 1, 1) + data_mean.view(1, -1, 1, 1)  # back to [0, 1]
    s = cfg["image_size"]
    if pre["do_resize"] and list(x.shape[-2:]) != [s, s]:
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
    if list(x.shape[-2:]) != [s, s]:
        fail(f"images are {list(x.shape[-2:])}, the model takes {s}x{s} and preprocessing does not resize")
    c = cfg["num_channels"]
    if x.shape[1] == 1 and c != 1:
        x = x.repeat(1, c, 1, 1)
    if x.shape[1] != c:
        fail(f"images have {x.shape[1]} channels, the model takes {c}")
    if pre["do_normalize"]:
        mean = torch.tensor(pre["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(pre["std"], dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


def vit_forward(cfg, W, pixels):
    b, c, s, _ = pixels.shape
    ps, d, nh = cfg["patch_size"], cfg["hidden_size"], cfg["num_attention_heads"]
    g = s // ps
    eps = cfg["layer_norm_eps"]
    # patches in row-major order, each flattened channel-major like the conv kernel [d, c, ps, ps]
    patches = pixels.reshape(b, c, g, ps, g, ps).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * ps * ps)
    proj = "vit.embeddings.patch_embeddings.projection."
    x = patches @ W[proj + "weight"].reshape(d, -1).t() + W[proj + "bias"]
    x = torch.cat([W["vit.embeddings.cls_token"].expand(b, 1, d), x], dim=1) + W["vit.embeddings.position_embeddings"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"vit.encoder.layer.{i}."
        a = layer_norm(x, W[p + "layernorm_before.weight"], W[p + "layernorm_before.bias"], eps)
        q, k, v = (heads(linear(a, W, p + "attention.attention." + n), nh) for n in ("query", "key", "value"))
        x = x + linear(merge_heads(attend(q, k, v, None)), W, p + "attention.output.dense")
        m = layer_norm(x, W[p + "layernorm_after.weight"], W[p + "layernorm_after.bias"], eps)
        x = x + linear(gelu_erf(linear(m, W, p + "intermediate.dense")), W, p + "output.dense")
    x = layer_norm(x, W["vit.layernorm.weight"], W["vit.layernorm.bias"], eps)
    out = {"features": x[:, 0]}
    if cfg["model_class"] == "head":
        out["logits"] = linear(x[:, 0], W, "classifier")
    else:
        out["pooler_output"] = torch.tanh(linear(x[:, 0], W, "vit.pooler.dense"))
    return out


def model_forward(cfg, W, inputs, pre=None, use_pixel_values=False):
    """inputs: the tensors of a reference file (input, and for ViT data_mean/data_std/pixel_values)."""
    if "input" not in inputs and not (use_pixel_values and "pixel_values" in inputs):
        fail("the input file has no tensor `input`")
    with torch.no_grad():
        if cfg["family"] == "gpt2":
            return gpt2_forward(cfg, W, check_ids(cfg, inputs["input"]))
        if cfg["family"] in LLAMA_FAMILIES:
            return llama_forward(cfg, W, check_ids(cfg, inputs["input"]))
        if use_pixel_values:
            if "pixel_values" not in inputs:
                fail("the input file has no tensor `pixel_values`")
            pixels = inputs["pixel_values"].float()
        else:
            if pre is None:
                fail("preprocessing the images needs the model's preprocessor_config.json (or use --pixel-values)")
            for k in ("data_mean", "data_std"):
                if k not in inputs:
                    fail(f"the input file has no tensor `{k}` (the data's normalisation)")
            pixels = vit_preprocess(inputs["input"], inputs["data_mean"].float(), inputs["data_std"].float(), pre, cfg)
        s = cfg["image_size"]
        if list(pixels.shape[1:]) != [cfg["num_channels"], s, s]:
            fail(f"pixel_values {list(pixels.shape)} do not fit the model's [{cfg['num_channels']}, {s}, {s}]")
        return vit_forward(cfg, W, pixels)


def check_ids(cfg, ids):
    if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
        fail(f"input must be int64 token ids [B, N], not {ids.dtype} {list(ids.shape)}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= cfg["vocab_size"]):
        fail(f"token ids outside [0, {cfg['vocab_size']})")
    return ids.long()


# --------------------------------------------------------------------------------------------
# make: a random tiny checkpoint.

def init_tensor(name, shape, role, gen):
    """Random values of a realistic scale: logits O(1), norms near 1, nothing degenerate."""
    def randn(std):  # in place: --write of a large model holds one copy of the largest tensor
        return torch.randn(shape, generator=gen).mul_(std)
    if role == "norm":
        return randn(0.1).add_(1.0)
    if role == "bias":
        return randn(0.05)
    if role == "embed":  # a tied head's logits then have a std near 1 at any width
        return randn(1.0 / math.sqrt(shape[1]))
    if role in ("pos", "cls"):
        return randn(0.1 if role == "pos" else 0.2)
    if role == "conv1d":
        return randn(0.8 / math.sqrt(shape[0]))
    if role == "patch":
        return randn(0.8 / math.sqrt(shape[1] * shape[2] * shape[3]))
    if name == "lm_head.weight":
        return randn(1.0 / math.sqrt(shape[1]))
    return randn(0.8 / math.sqrt(shape[1]))


def build_config(a):
    fam = a.family
    dtype_name = CONFIG_DTYPE_NAMES[STORAGE_DTYPES[a.dtype]]
    version = "4.44.2"
    base = a.model_class == "base"
    if base and fam in LLAMA_FAMILIES:
        fail(f"--model-class base: {BASE_CLASS[fam]} files are not a layout of issue 14 (use head)")
    if a.attention_bias and fam in ("mistral", "qwen2"):
        fail("--attention-bias is llama's (qwen2 always has q/k/v biases, mistral none)")
    if fam == "gpt2":
        tied = True if a.tied is None else a.tied
        cfg = OrderedDict(
            activation_function=a.activation, architectures=[BASE_CLASS[fam] if base else HEAD_CLASS[fam]],
            attn_pdrop=0.1, bos_token_id=a.vocab - 1, embd_pdrop=0.1, eos_token_id=a.vocab - 1,
            initializer_range=0.02, layer_norm_epsilon=1e-5, model_type="gpt2", n_ctx=a.max_positions,
            n_embd=a.hidden, n_head=a.heads, n_inner=a.intermediate if a.intermediate else None,
            n_layer=a.layers, n_positions=a.max_positions, resid_pdrop=0.1, summary_activation=None,
            summary_first_dropout=0.1, summary_proj_to_labels=True, summary_type="cls_index",
            summary_use_proj=True, torch_dtype=dtype_name, transformers_version=version, use_cache=True,
            vocab_size=a.vocab)
        if not tied:  # GPT-2 files leave the key out: tied is the default
            cfg["tie_word_embeddings"] = False
        return cfg
    if fam in LLAMA_FAMILIES:
        tied = (fam == "qwen2") if a.tied is None else a.tied
        theta = a.rope_theta if a.rope_theta else {"llama": 10000.0, "mistral": 1000000.0, "qwen2": 1000000.0}[fam]
        eps = {"llama": 1e-5, "mistral": 1e-5, "qwen2": 1e-6}[fam]
        cfg = OrderedDict(architectures=[HEAD_CLASS[fam]], attention_dropout=0.0)
        if fam == "llama":
            cfg["attention_bias"] = bool(a.attention_bias)
        cfg.update(bos_token_id=1, eos_token_id=2, hidden_act="silu", hidden_size=a.hidden,
                   initializer_range=0.02, intermediate_size=a.intermediate or 2 * a.hidden,
                   max_position_embeddings=a.max_positions)
        if fam == "llama":
            cfg["mlp_bias"] = bool(a.mlp_bias)
        elif a.mlp_bias:
            fail("--mlp-bias is llama's")
        if fam == "qwen2":  # with a sliding window, layers 1.. slide (layer 0 keeps full attention)
            cfg["max_window_layers"] = 1 if a.sliding_window else a.layers
        cfg.update(model_type=fam, num_attention_heads=a.heads, num_hidden_layers=a.layers,
                   num_key_value_heads=a.kv_heads or a.heads)
        if fam == "llama":
            cfg["pretraining_tp"] = 1
        cfg["rms_norm_eps"] = eps
        if a.rope_parameters:
            cfg["rope_parameters"] = OrderedDict(rope_theta=theta, rope_type="default")
        else:
            cfg["rope_scaling"] = None
            cfg["rope_theta"] = theta
        if fam == "mistral":
            cfg["sliding_window"] = a.sliding_window if a.sliding_window else None
        if fam == "qwen2":
            cfg["sliding_window"] = a.sliding_window if a.sliding_window else a.max_positions
        cfg.update(tie_word_embeddings=tied, torch_dtype=dtype_name, transformers_version=version,
                   use_cache=True)
        if fam == "qwen2":
            cfg["use_sliding_window"] = bool(a.sliding_window)
        cfg["vocab_size"] = a.vocab
        if a.head_dim:
            cfg["head_dim"] = a.head_dim
        return cfg
    cfg = OrderedDict(architectures=[BASE_CLASS[fam] if base else HEAD_CLASS[fam]],
                      attention_probs_dropout_prob=0.0, encoder_stride=a.patch_size, hidden_act="gelu",
                      hidden_dropout_prob=0.0, hidden_size=a.hidden)
    if not base:
        cfg["id2label"] = OrderedDict((str(i), f"LABEL_{i}") for i in range(a.labels))
    cfg.update(image_size=a.image_size, initializer_range=0.02, intermediate_size=a.intermediate or 2 * a.hidden)
    if not base:
        cfg["label2id"] = OrderedDict((f"LABEL_{i}", i) for i in range(a.labels))
    cfg.update(layer_norm_eps=1e-12, model_type="vit", num_attention_heads=a.heads, num_channels=a.channels,
               num_hidden_layers=a.layers, patch_size=a.patch_size, qkv_bias=not a.no_qkv_bias,
               torch_dtype=dtype_name, transformers_version=version)
    return cfg


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DATA_MEAN, DATA_STD = 0.2860, 0.3530


def preprocessor_config(a):
    mean = (IMAGENET_MEAN * a.channels)[:a.channels]
    std = (IMAGENET_STD * a.channels)[:a.channels]
    return OrderedDict(do_normalize=True, do_rescale=True, do_resize=True, image_mean=mean,
                       image_processor_type="ViTImageProcessor", image_std=std, resample=2,
                       rescale_factor=1 / 255, size=OrderedDict(height=a.image_size, width=a.image_size))


def file_tensors(cfg, canonical, a, dtype):
    """The canonical tensors under the names the file uses, in the storage dtype, with the
    buffers of older files when asked."""
    out = OrderedDict()
    base = cfg["model_class"] == "base"
    for name, t in canonical.items():
        fname = class_name(cfg, name, "base") if (base or a.no_prefix) else name
        out[fname] = t.to(dtype)
        if a.buffers and cfg["family"] == "gpt2" and name.endswith(".ln_1.bias"):
            stem = fname[:-len("ln_1.bias")]
            n = cfg["n_positions"]
            out[stem + "attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n).to(dtype)
            out[stem + "attn.masked_bias"] = torch.tensor(-1e4).to(dtype)
        if a.buffers and cfg["family"] in LLAMA_FAMILIES and name.endswith("self_attn.o_proj.weight"):
            dh = cfg["head_dim"]
            inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dh, 2).float() / dh))
            out[fname[:-len("o_proj.weight")] + "rotary_emb.inv_freq"] = inv
    return out


def cmd_make(a):
    os.makedirs(a.out, exist_ok=True)
    for name in os.listdir(a.out):  # a previous layout's files would shadow this one's
        if name.startswith("model") and (name.endswith(".safetensors") or name == INDEX_FILE):
            os.remove(os.path.join(a.out, name))
    raw = build_config(a)
    write_json(os.path.join(a.out, "config.json"), raw)
    cfg = parse_config(a.out)  # what a reader of the file sees, not what we meant to write
    gen = torch.Generator().manual_seed(a.seed)
    dtype = STORAGE_DTYPES[a.dtype]
    canonical = OrderedDict((n, init_tensor(n, shape, role, gen)) for n, (shape, role) in expected_tensors(cfg).items())
    stored = file_tensors(cfg, canonical, a, dtype)
    files = save_checkpoint(a.out, stored, a.shards)
    # the reference reads the checkpoint back: the logits are those of the stored, rounded weights
    W = canonical_state(cfg, load_checkpoint(a.out), a.out)
    gin = torch.Generator().manual_seed(a.seed + 1000)
    ref = OrderedDict()
    pre = None
    if cfg["family"] == "vit":
        pre_raw = preprocessor_config(a)
        write_json(os.path.join(a.out, "preprocessor_config.json"), pre_raw)
        pre = read_preprocessor(a.out)
        x01 = torch.rand(a.batch, a.data_channels, a.data_size, a.data_size, generator=gin)
        ref["input"] = (x01 - DATA_MEAN) / DATA_STD
        ref["data_mean"] = torch.tensor([DATA_MEAN])
        ref["data_std"] = torch.tensor([DATA_STD])
    else:
        vocab = cfg["vocab_size"]
        ref["input"] = torch.randint(0, vocab, (a.batch, a.seq), generator=gin, dtype=torch.int64)
    out = model_forward(cfg, W, ref, pre)
    if cfg["family"] == "vit":
        ref["pixel_values"] = vit_preprocess(ref["input"], ref["data_mean"], ref["data_std"], pre, cfg)
    ref.update(out)
    write_safetensors(os.path.join(a.out, "reference.safetensors"), ref)
    print(json.dumps({"dir": a.out, "family": cfg["family"], "class": raw["architectures"][0],
                      "dtype": a.dtype, "files": files, "tensors": len(stored),
                      "outputs": list(ref)}))


# --------------------------------------------------------------------------------------------
# PEFT adapters.

def lora_modules(cfg, model_class):
    """{module path of model_class: (canonical weight name, is_conv1d)} for every linear layer
    LoRA can sit on (embeddings, norms and the patch convolution are not linear layers)."""
    out = OrderedDict()
    for name, (shape, role) in expected_tensors(cfg).items():
        if role in ("linear", "conv1d") and name.endswith(".weight"):
            out[class_name(cfg, name[:-len(".weight")], model_class)] = (name, role == "conv1d")
    return out


def all_modules(cfg, model_class):
    """{module path of model_class: [canonical parameter names]} (for modules_to_save)."""
    out = OrderedDict()
    for name in expected_tensors(cfg):
        path, _, _ = name.rpartition(".")
        out.setdefault(class_name(cfg, path, model_class), []).append(name)
    return out


def target_matches(targets, path):
    """PEFT's rule: a string is a regular expression the whole path must match; a list names
    modules by their full path or by a suffix starting after a dot."""
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def pattern_value(patterns, path, default):
    """rank_pattern / alpha_pattern: the first key that matches the end of the path."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?{key}$", path):
            return value
    return default


def lora_scale(alpha, r, rslora):
    return alpha / math.sqrt(r) if rslora else alpha / r


def merged_weight(W_stored, is_conv1d, A, B, scale, magnitude=None):
    """The merged weight in the stored layout. In [out, in] terms: W + s*B*A, and DoRA rescales
    every output row to the magnitude: m * V / ||V||_row with V = W + s*B*A."""
    w = W_stored.t() if is_conv1d else W_stored
    v = w + scale * (B.float() @ A.float())
    if magnitude is not None:
        v = v * (magnitude.float() / v.norm(dim=1)).view(-1, 1)
    return v.t().contiguous() if is_conv1d else v


def default_model_class(cfg):
    """CAUSAL_LM adapters name the modules of the LM-head class (AutoModelForCausalLM loads it
    whatever class the file was saved from); ViT adapters those of the file's own class."""
    return cfg["model_class"] if cfg["family"] == "vit" else "head"


def cmd_peft(a):
    cfg = parse_config(a.base)
    model_class = default_model_class(cfg)
    W = canonical_state(cfg, load_checkpoint(a.base), a.base)
    modules = lora_modules(cfg, model_class)
    targets = a.targets_regex if a.targets_regex else [t for t in a.targets.split(",") if t]
    if not targets:
        fail("--targets or --targets-regex is required")
    chosen = [p for p in modules if target_matches(targets, p)]
    if not chosen:
        fail(f"{a.base}: target modules {targets} match no linear layer of the model")
    conv1d = [modules[p][1] for p in chosen]
    if any(conv1d) and not all(conv1d):
        fail("targets mix Conv1D and Linear layers: PEFT has one fan_in_fan_out per adapter")
    gen = torch.Generator().manual_seed(a.seed)
    scale = lora_scale(a.alpha, a.r, a.rslora)
    tensors = OrderedDict()
    merged = OrderedDict(W)
    for path in chosen:
        name, is_conv1d = modules[path]
        w = W[name].t() if is_conv1d else W[name]
        n_out, n_in = w.shape
        A = torch.randn(a.r, n_in, generator=gen) / math.sqrt(n_in)
        # B chosen so that s*B*A moves the weight by about 0.05 per element: visible, not dominant
        # (s*B*A)_ij has std s * sqrt(r) * std(B) / sqrt(in)
        B = torch.randn(n_out, a.r, generator=gen) * (0.05 * math.sqrt(n_in) / (scale * math.sqrt(a.r)))
        key = "base_model.model." + path
        tensors[key + ".lora_A.weight"] = A
        tensors[key + ".lora_B.weight"] = B
        magnitude = None
        if a.dora:
            v = w + scale * (B @ A)
            magnitude = v.norm(dim=1) * (0.8 + 0.4 * torch.rand(n_out, generator=gen))
            tensors[key + ".lora_magnitude_vector"] = magnitude
        merged[name] = merged_weight(W[name], is_conv1d, A, B, scale, magnitude)
    saved = []
    mts = [m for m in a.modules_to_save.split(",") if m] if a.modules_to_save else []
    every = all_modules(cfg, model_class)
    for m in mts:
        hits = [p for p in every if target_matches([m], p)]
        if not hits:
            fail(f"--modules-to-save {m}: no such module")
        for p in hits:
            for name in every[p]:
                t = W[name] + 0.1 * torch.randn(W[name].shape, generator=gen)
                tensors["base_model.model." + class_name(cfg, name, model_class)] = t
                merged[name] = t
                saved.append(name)
    task_type = a.task_type if a.task_type else ("CAUSAL_LM" if cfg["family"] != "vit" else None)
    acfg = OrderedDict(
        alpha_pattern={}, auto_mapping=None,
        base_model_name_or_path=a.base_name if a.base_name else os.path.basename(os.path.normpath(a.base)),
        bias="none", fan_in_fan_out=bool(all(conv1d)), inference_mode=True, init_lora_weights=True,
        layer_replication=None, layers_pattern=None, layers_to_transform=None, loftq_config={},
        lora_alpha=int(a.alpha) if float(a.alpha).is_integer() else a.alpha, lora_dropout=a.dropout, megatron_config=None, megatron_core="megatron.core",
        modules_to_save=mts if mts else None, peft_type="LORA", r=a.r, rank_pattern={}, revision=None,
        target_modules=targets, task_type=task_type, use_dora=bool(a.dora), use_rslora=bool(a.rslora))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(a.out, "adapter_model.safetensors"), tensors)
    ref_in = read_safetensors(os.path.join(a.base, "reference.safetensors"))
    out = model_forward(cfg, merged, ref_in, read_preprocessor(a.base))
    ref = OrderedDict((k, v) for k, v in ref_in.items() if k in ("input", "data_mean", "data_std", "pixel_values"))
    ref.update(out)
    write_safetensors(os.path.join(a.out, "reference.safetensors"), ref)
    print(json.dumps({"dir": a.out, "modules": len(chosen), "scale": scale, "use_dora": bool(a.dora),
                      "modules_to_save": saved, "tensors": len(tensors)}))


def check_adapter_config(acfg, where, cfg):
    def need(key, kinds):
        if key not in acfg:
            fail(f"{where}: missing key {key}")
        if not isinstance(acfg[key], kinds) or (isinstance(acfg[key], bool) and bool not in kinds):
            fail(f"{where}: {key} has the wrong type: {acfg[key]!r}")
        return acfg[key]
    if need("peft_type", (str,)) != "LORA":
        fail(f"{where}: peft_type {acfg['peft_type']!r} is not LORA")
    r = need("r", (int,))
    if r <= 0:
        fail(f"{where}: r must be positive, not {r}")
    need("lora_alpha", (int, float))
    targets = need("target_modules", (list, str))
    if not targets or (isinstance(targets, list) and not all(isinstance(t, str) and t for t in targets)):
        fail(f"{where}: target_modules must be a non-empty list of names or a regular expression")
    if need("bias", (str,)) != "none":
        fail(f"{where}: bias {acfg['bias']!r}: only \"none\" is handled here")
    need("fan_in_fan_out", (bool,))
    for key in ("use_rslora", "use_dora"):
        if key in acfg:
            need(key, (bool,))
    if acfg.get("modules_to_save") is not None and not isinstance(acfg["modules_to_save"], list):
        fail(f"{where}: modules_to_save must be null or a list")
    if "base_model_name_or_path" in acfg and acfg["base_model_name_or_path"] is not None:
        need("base_model_name_or_path", (str,))
    task = acfg.get("task_type")
    if cfg["family"] != "vit" and task != "CAUSAL_LM":
        fail(f"{where}: task_type {task!r}: a causal LM's adapter has task_type CAUSAL_LM")
    for key in ("layers_to_transform", "layer_replication"):
        if acfg.get(key) is not None:
            fail(f"{where}: {key} is not handled here")
    if acfg.get("lora_bias"):
        fail(f"{where}: lora_bias is not handled here")


def cmd_apply(a):
    cfg = parse_config(a.base)
    W = canonical_state(cfg, load_checkpoint(a.base), a.base)
    cpath = os.path.join(a.adapter, "adapter_config.json")
    acfg = read_json(cpath)
    if not isinstance(acfg, dict):
        fail(f"{cpath}: not a JSON object")
    check_adapter_config(acfg, cpath, cfg)
    model_class = a.model_class if a.model_class else default_model_class(cfg)
    fpath = os.path.join(a.adapter, "adapter_model.safetensors")
    tensors = read_safetensors(fpath)
    modules = lora_modules(cfg, model_class)
    every = all_modules(cfg, model_class)
    targets = acfg["target_modules"]
    exclude = acfg.get("exclude_modules")
    mts = acfg.get("modules_to_save") or []
    prefix = "base_model.model."
    lora = OrderedDict()   # module path -> {A, B, M}
    saved = OrderedDict()  # canonical parameter name -> tensor
    for key, t in tensors.items():
        if not key.startswith(prefix):
            fail(f"{fpath}: key {key} does not start with {prefix}")
        rest = key[len(prefix):]
        part = None
        for suffix, tag in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_magnitude_vector", "M")):
            if rest.endswith(suffix):
                part, path = tag, rest[:-len(suffix)]
        if part is None:
            path, _, leaf = rest.rpartition(".")
            if not any(target_matches([m], path) for m in mts):
                fail(f"{fpath}: key {key} is neither a LoRA tensor nor one of modules_to_save {mts}")
            if path not in every:
                fail(f"{fpath}: key {key}: the base has no module {path}")
            name = canonical_name(cfg, path + "." + leaf) if model_class == "base" else path + "." + leaf
            if name not in W:
                fail(f"{fpath}: key {key}: module {path} has no parameter {leaf}")
            if list(t.shape) != list(W[name].shape):
                same_in = t.dim() >= 1 and (t.dim() == 1 or list(t.shape[1:]) == list(W[name].shape[1:]))
                if not (a.new_head and path in ("classifier", "lm_head") and same_in):
                    fail(f"{fpath}: {key} has shape {list(t.shape)}, the base's {name} is {list(W[name].shape)}")
            saved[name] = t.float()
            continue
        if path not in modules:
            fail(f"{fpath}: key {key}: {path} is not a linear module of the base model "
                 f"({'module paths of ' + (HEAD_CLASS if model_class == 'head' else BASE_CLASS)[cfg['family']]})")
        lora.setdefault(path, {})[part] = t
    use_dora = bool(acfg.get("use_dora", False))
    rslora = bool(acfg.get("use_rslora", False))
    targeted = [p for p in modules if target_matches(targets, p)
                and not (exclude and target_matches(exclude, p))]
    for p in lora:
        if p not in targeted:
            fail(f"{fpath}: {p} carries LoRA tensors but target_modules {targets} does not select it "
                 f"(PEFT would ignore them)")
    for p in targeted:
        if p not in lora:
            fail(f"{fpath}: target_modules {targets} selects {p}, which has no LoRA tensors")
    merged = OrderedDict(W)
    conv1d_seen = set()
    for p in targeted:
        parts = lora[p]
        for tag, what in (("A", "lora_A.weight"), ("B", "lora_B.weight")):
            if tag not in parts:
                fail(f"{fpath}: {prefix}{p}.{what} is missing")
        if use_dora and "M" not in parts:
            fail(f"{fpath}: use_dora is true but {prefix}{p}.lora_magnitude_vector is missing")
        if not use_dora and "M" in parts:
            fail(f"{fpath}: {prefix}{p}.lora_magnitude_vector present but use_dora is false")
        name, is_conv1d = modules[p]
        conv1d_seen.add(is_conv1d)
        n_out, n_in = (W[name].shape[1], W[name].shape[0]) if is_conv1d else W[name].shape
        r = int(pattern_value(acfg.get("rank_pattern"), p, acfg["r"]))
        alpha = float(pattern_value(acfg.get("alpha_pattern"), p, acfg["lora_alpha"]))
        A, B = parts["A"], parts["B"]
        if list(A.shape) != [r, n_in]:
            fail(f"{fpath}: {prefix}{p}.lora_A.weight has shape {list(A.shape)}, expected [r={r}, in={n_in}]")
        if list(B.shape) != [n_out, r]:
            fail(f"{fpath}: {prefix}{p}.lora_B.weight has shape {list(B.shape)}, expected [out={n_out}, r={r}]")
        if use_dora and list(parts["M"].shape) != [n_out]:
            fail(f"{fpath}: {prefix}{p}.lora_magnitude_vector has shape {list(parts['M'].shape)}, expected [{n_out}]")
        merged[name] = merged_weight(W[name], is_conv1d, A, B, lora_scale(alpha, r, rslora),
                                     parts.get("M") if use_dora else None)
    if conv1d_seen and acfg["fan_in_fan_out"] != (True in conv1d_seen):
        msg = (f"{cpath}: fan_in_fan_out is {str(acfg['fan_in_fan_out']).lower()} but the targets are "
               f"{'Conv1D' if True in conv1d_seen else 'nn.Linear'} layers")
        if not a.lenient:
            fail(msg)
        print("warning: " + msg, file=sys.stderr)
    for name, t in saved.items():
        merged[name] = t
    run_cfg = dict(cfg)
    if "classifier.weight" in saved:
        run_cfg["num_labels"] = saved["classifier.weight"].shape[0]
    ref_in = read_safetensors(os.path.join(a.base, "reference.safetensors"))
    out = model_forward(run_cfg, merged, ref_in, read_preprocessor(a.base))
    write_safetensors(a.out, out)
    print(json.dumps({"out": a.out, "modules": len(targeted), "use_dora": use_dora, "use_rslora": rslora,
                      "r": acfg["r"], "lora_alpha": acfg["lora_alpha"], "fan_in_fan_out": acfg["fan_in_fan_out"],
                      "task_type": acfg.get("task_type"), "target_modules": targets,
                      "base_model_name_or_path": acfg.get("base_model_name_or_path"),
                      "modules_to_save": list(saved), "model_class": model_class}))


def cmd_forward(a):
    cfg = parse_config(a.model)
    where = open_checkpoint(a.model)
    stored = OrderedDict((k, f.get(k)) for k, f in where.items())
    dtypes = {}
    for k, t in stored.items():
        if not is_buffer(k):
            dtypes[st_dtype_of(t)] = dtypes.get(st_dtype_of(t), 0) + 1
    ignored = []
    W = canonical_state(cfg, stored, a.model, ignored)
    input_path = a.input if a.input else os.path.join(a.model, "reference.safetensors")
    inputs = read_safetensors(input_path)
    out = model_forward(cfg, W, inputs, read_preprocessor(a.model), a.pixel_values)
    write_safetensors(a.out, out)
    files = sorted(set(os.path.basename(f.path) for f in where.values()))
    print(json.dumps({"out": a.out, "family": cfg["family"], "model_class": cfg["model_class"],
                      "torch_dtype": cfg["torch_dtype"], "dtypes": dtypes, "files": files,
                      "tensors": len(W), "ignored": ignored, "outputs": list(out)}))


# --------------------------------------------------------------------------------------------
# selftest

def cmd_selftest(a):
    tmp = tempfile.mkdtemp(prefix="hf_reference_")
    failures = []

    def check(label, ok, detail=""):
        print(("ok   " if ok else "FAIL ") + label + (f": {detail}" if detail and not ok else ""))
        if not ok:
            failures.append(label)

    def close(x, y, tol=1e-5):
        return x.shape == y.shape and torch.allclose(x, y, atol=tol, rtol=tol)

    def make(name, *argv):
        d = os.path.join(tmp, name)
        run(["make", "--out", d] + list(argv))
        return d

    def run(argv):
        args = parser().parse_args(argv)
        stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")
        try:
            args.func(args)
        finally:
            sys.stdout.close()
            sys.stdout = stdout

    def ref(d, key="logits"):
        return read_safetensors(os.path.join(d, "reference.safetensors"))[key]

    def expect_error(label, argv, needle):
        try:
            run(argv)
        except RefError as e:
            check(label, needle in str(e), f"message {e!s} lacks {needle!r}")
            return
        check(label, False, "no error")

    # safetensors writer/reader: every dtype round-trips bit-exactly, bf16 = top half of float32
    x = torch.randn(3, 5)
    ts = OrderedDict((f"t_{k}", x.to(v[0]) if v[0].is_floating_point else (x * 10).to(v[0]))
                     for k, v in ST_DTYPES.items())
    ts["scalar"] = torch.tensor(-1e4)
    p = os.path.join(tmp, "rt.safetensors")
    write_safetensors(p, ts)
    back = read_safetensors(p)
    check("safetensors round trip (all dtypes)",
          all(back[k].dtype == t.dtype and torch.equal(back[k], t) for k, t in ts.items()))
    rounded = torch.tensor([1.0, -2.5, 3.0e38, 0.1]).to(torch.bfloat16)
    bits = np.frombuffer(tensor_bytes(rounded), "<u2")
    f32 = np.frombuffer(tensor_bytes(rounded.float()), "<u4")
    check("bf16 bytes are the top 16 bits of the rounded value's float32",
          np.array_equal(bits, (f32 >> 16).astype("<u2")) and not (f32 & 0xFFFF).any())
    with open(p, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    check("header 8-aligned, __metadata__ format pt",
          (8 + n) % 8 == 0 and json.loads(data[8:8 + n])["__metadata__"] == {"format": "pt"})
    for label, blob in (("truncated", data[:-3]), ("trailing bytes", data + b"\0"),
                        ("header past end", struct.pack("<Q", len(data)) + data[8:])):
        q = os.path.join(tmp, "bad.safetensors")
        with open(q, "wb") as f:
            f.write(blob)
        try:
            SafetensorsFile(q)
            check(f"reader rejects {label}", False, "accepted")
        except RefError:
            check(f"reader rejects {label}", True)

    # formula cross-checks against torch's own operators
    v = torch.randn(4, 9)
    w, b = torch.randn(9), torch.randn(9)
    check("layer_norm == F.layer_norm", close(layer_norm(v, w, b, 1e-5), F.layer_norm(v, (9,), w, b, 1e-5)))
    check("gelu_new == F.gelu(tanh)", close(gelu_tanh(v), F.gelu(v, approximate="tanh")))
    check("gelu_erf == F.gelu", close(gelu_erf(v), F.gelu(v)))
    cos, sin = rotary_cos_sin(6, 8, 10000.0)
    qv, kv_ = torch.randn(8), torch.randn(8)
    rot = lambda t, m: t * cos[m] + rotate_half(t.view(1, 8))[0] * sin[m]
    check("rotary scores depend only on the offset",
          abs(float(rot(qv, 4) @ rot(kv_, 2) - rot(qv, 3) @ rot(kv_, 1))) < 1e-5)
    # rotate_half pairs element i with i + d/2: a 2-D rotation of (x_i, x_{i+d/2}) by pos*inv_freq_i
    e = torch.zeros(8)
    e[1] = 1.0
    ang = 3 * (10000.0 ** (-2 / 8))
    check("rotate_half pairs i with i + d/2",
          close(rot(e, 3), torch.tensor([0, math.cos(ang), 0, 0, 0, math.sin(ang), 0, 0], dtype=torch.float32)))
    # the RoPE paper rotates interleaved pairs (x_2i, x_2i+1) as complex numbers; HF's converted
    # checkpoints permute q/k rows so that the pairs become (x_i, x_i+d/2): the same rotation
    hd, dm = 8, 16
    Wm, xs = torch.randn(hd, dm), torch.randn(5, dm)
    freq = 10000.0 ** (-torch.arange(0, hd, 2).float() / hd)
    cos, sin = rotary_cos_sin(5, hd, 10000.0)
    Wh = Wm.view(hd // 2, 2, dm).transpose(0, 1).reshape(hd, dm)  # HF's permutation, one head
    ok = True
    for pos in range(5):
        y = (xs[pos] @ Wm.t()).view(hd // 2, 2)
        paper = torch.view_as_real(torch.complex(y[:, 0], y[:, 1]) * torch.polar(torch.ones(hd // 2), pos * freq))
        yh = xs[pos] @ Wh.t()
        hf = yh * cos[pos] + rotate_half(yh.view(1, hd))[0] * sin[pos]
        ok &= close(hf, torch.cat([paper[:, 0], paper[:, 1]]))
    check("rotate_half == the paper's complex rotation under HF's q/k permutation", ok)

    # every family in every dtype; sharded == single file
    for fam in FAMILIES:
        single = make(f"{fam}_f32", "--family", fam)
        shard = make(f"{fam}_shard", "--family", fam, "--shards", "3")
        check(f"{fam}: sharded == single file", torch.equal(ref(single), ref(shard)))
        check(f"{fam}: logits not trivial", float(ref(single).std()) > 0.3, f"std {float(ref(single).std())}")
        out = os.path.join(tmp, f"{fam}_fwd.safetensors")
        run(["forward", "--model", shard, "--out", out])
        check(f"{fam}: forward on shards == make's reference", torch.equal(read_safetensors(out)["logits"], ref(single)))
        for dt in ("f16", "bf16"):
            d = make(f"{fam}_{dt}", "--family", fam, "--dtype", dt)
            diff = float((ref(d) - ref(single)).abs().max())
            check(f"{fam}: {dt} logits near f32 and not equal", 0 < diff < 0.1, f"max diff {diff}")
            st = SafetensorsFile(os.path.join(d, SINGLE_FILE))
            check(f"{fam}: {dt} stored as {dt.upper()}", all(e[0] == dt.upper() for e in st.entries.values()))
    # causality: changing the last token leaves earlier logits alone
    for fam in ("gpt2", "llama"):
        d = os.path.join(tmp, f"{fam}_f32")
        cfg = parse_config(d)
        W = canonical_state(cfg, load_checkpoint(d), d)
        ids = ref(d, "input").clone()
        ids[:, -1] = (ids[:, -1] + 1) % cfg["vocab_size"]
        alt = model_forward(cfg, W, {"input": ids})["logits"]
        check(f"{fam}: causal", torch.equal(alt[:, :-1], ref(d)[:, :-1]) and not torch.equal(alt[:, -1], ref(d)[:, -1]))

    # GPT-2: prefixes, buffers, Conv1D layout (the file's weight is [in, out])
    g = os.path.join(tmp, "gpt2_f32")
    for variant, argv in (("no prefix", ["--no-prefix"]), ("GPT2Model class", ["--model-class", "base"]),
                          ("old buffers", ["--buffers"])):
        d = make("gpt2_" + variant.replace(" ", "_"), "--family", "gpt2", *argv)
        check(f"gpt2 {variant}: same logits", torch.equal(ref(d), ref(g)))
    keys = load_checkpoint(os.path.join(tmp, "gpt2_no_prefix")).keys()
    check("gpt2 --no-prefix keys", "h.0.attn.c_attn.weight" in keys and "wte.weight" in keys)
    keys = load_checkpoint(os.path.join(tmp, "gpt2_old_buffers")).keys()
    check("gpt2 --buffers keys", "transformer.h.1.attn.bias" in keys and "transformer.h.1.attn.masked_bias" in keys)
    st = load_checkpoint(g)
    check("gpt2 c_attn stored [in, out]", list(st["transformer.h.0.attn.c_attn.weight"].shape) == [32, 96])
    d = make("gpt2_untied", "--family", "gpt2", "--untied")
    check("gpt2 untied: lm_head.weight stored", "lm_head.weight" in load_checkpoint(d))

    # Llama family: GQA equals the same model with the kv heads repeated; head_dim; ties; biases
    d = make("llama_gqa", "--family", "llama", "--kv-heads", "2")
    cfg = parse_config(d)
    W = canonical_state(cfg, load_checkpoint(d), d)
    full = OrderedDict(W)
    dh = cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        for proj in ("k_proj", "v_proj"):
            k = f"model.layers.{i}.self_attn.{proj}.weight"
            full[k] = W[k].view(2, dh, -1).repeat_interleave(2, dim=0).reshape(4 * dh, -1)
    cfg_full = dict(cfg, num_key_value_heads=4)
    alt = model_forward(cfg_full, full, {"input": ref(d, "input")})["logits"]
    check("llama GQA (2 of 4) == MHA with repeated kv heads", close(alt, ref(d)))
    d = make("llama_hd", "--family", "llama", "--head-dim", "16", "--kv-heads", "2")
    st = load_checkpoint(d)
    check("llama head_dim 16: q_proj [64, 32], k_proj [32, 32]",
          list(st["model.layers.0.self_attn.q_proj.weight"].shape) == [64, 32]
          and list(st["model.layers.0.self_attn.k_proj.weight"].shape) == [32, 32])
    d = make("llama_tied", "--family", "llama", "--tied")
    check("llama tied: no lm_head.weight", "lm_head.weight" not in load_checkpoint(d))
    check("llama untied (default): lm_head.weight", "lm_head.weight" in load_checkpoint(os.path.join(tmp, "llama_f32")))
    st = load_checkpoint(os.path.join(tmp, "qwen2_f32"))
    check("qwen2: q/k/v biases, no o bias, tied",
          "model.layers.0.self_attn.k_proj.bias" in st and "model.layers.0.self_attn.o_proj.bias" not in st
          and "lm_head.weight" not in st)
    d = make("llama_bias", "--family", "llama", "--attention-bias", "--mlp-bias")
    st = load_checkpoint(d)
    check("llama attention_bias: q/k/v/o biases", all(f"model.layers.0.self_attn.{p}_proj.bias" in st for p in "qkvo"))
    d = make("llama_rp", "--family", "llama", "--rope-parameters")
    raw = read_json(os.path.join(d, "config.json"))
    check("llama rope_parameters: same logits", "rope_theta" not in raw and torch.equal(ref(d), ref(os.path.join(tmp, "llama_f32"))))
    d = make("llama_buf", "--family", "llama", "--buffers")
    check("llama inv_freq buffers skipped", torch.equal(ref(d), ref(os.path.join(tmp, "llama_f32"))))
    d = make("mistral_sw", "--family", "mistral", "--sliding-window", "3")
    cfg = parse_config(d)
    W = canonical_state(cfg, load_checkpoint(d), d)
    wide = model_forward(dict(cfg, sliding_window=None), W, {"input": ref(d, "input")})["logits"]
    check("mistral sliding window 3 changes only positions >= 3",
          torch.equal(wide[:, :3], ref(d)[:, :3]) and not torch.allclose(wide[:, 3:], ref(d)[:, 3:]))

    # ViT: classification vs ViTModel, preprocessing
    v = os.path.join(tmp, "vit_f32")
    d = make("vit_base", "--family", "vit", "--model-class", "base")
    r = read_safetensors(os.path.join(d, "reference.safetensors"))
    check("ViTModel: same features, pooler_output, no logits",
          torch.equal(r["features"], ref(v, "features")) and "pooler_output" in r and "logits" not in r)
    keys = load_checkpoint(d).keys()
    check("ViTModel keys without vit., with pooler", "embeddings.cls_token" in keys and "pooler.dense.weight" in keys)
    rv = read_safetensors(os.path.join(v, "reference.safetensors"))
    check("vit input [2,1,12,12], pixel_values [2,3,16,16]",
          list(rv["input"].shape) == [2, 1, 12, 12] and list(rv["pixel_values"].shape) == [2, 3, 16, 16])
    out = os.path.join(tmp, "vit_pv.safetensors")
    run(["forward", "--model", v, "--out", out, "--pixel-values"])
    check("vit forward on pixel_values == on the data images", close(read_safetensors(out)["logits"], rv["logits"]))
    cfg = parse_config(v)
    W = canonical_state(cfg, load_checkpoint(v), v)
    conv = F.conv2d(rv["pixel_values"], W["vit.embeddings.patch_embeddings.projection.weight"],
                    W["vit.embeddings.patch_embeddings.projection.bias"], stride=4).flatten(2).transpose(1, 2)
    g4 = rv["pixel_values"].reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 16, 48)
    mine = g4 @ W["vit.embeddings.patch_embeddings.projection.weight"].reshape(32, -1).t() + W["vit.embeddings.patch_embeddings.projection.bias"]
    check("vit patch embedding == F.conv2d", close(conv, mine))

    # adapters: peft -> apply reproduces the reference; each variant changes the logits
    cases = [("llama_f32", ["--targets", "q_proj,v_proj"]),
             ("qwen2_f32", ["--targets", "q_proj,k_proj,v_proj,o_proj", "--dora"]),
             ("llama_gqa", ["--targets", "k_proj,down_proj", "--rslora"]),
             ("mistral_f32", ["--targets-regex", r".*\.(q_proj|up_proj)"]),
             ("gpt2_f32", ["--targets", "c_attn,c_proj"]),
             ("gpt2_bf16", ["--targets", "c_fc", "--dora"]),
             ("gpt2_GPT2Model_class", ["--targets", "c_attn"]),
             ("vit_f32", ["--targets", "query,value", "--modules-to-save", "classifier"]),
             ("vit_base", ["--targets", "query,value,dense", "--dora"])]
    for base, argv in cases:
        bdir = os.path.join(tmp, base)
        adir = os.path.join(tmp, "ad_" + base + "_" + str(len(argv)))
        run(["peft", "--base", bdir, "--out", adir, "--r", "4", "--alpha", "8"] + argv)
        out = os.path.join(tmp, "applied.safetensors")
        run(["apply", "--base", bdir, "--adapter", adir, "--out", out])
        key = "logits" if base != "vit_base" else "features"
        mine, theirs, orig = read_safetensors(out)[key], ref(adir, key), ref(bdir, key)
        label = f"peft+apply {base} {' '.join(argv)}"
        check(label + ": apply == peft reference", close(mine, theirs))
        check(label + ": adapter changes the output", float((theirs - orig).abs().max()) > 1e-3)
    # the merge formula on one weight, by hand
    Wt, A, B = torch.randn(5, 3), torch.randn(2, 3), torch.randn(5, 2)
    m = torch.rand(5) + 0.5
    V = Wt + 4.0 * (B @ A)
    check("DoRA rows have the magnitude's norm", close(merged_weight(Wt, False, A, B, 4.0, m).norm(dim=1), m))
    check("Conv1D merge == transposed Linear merge",
          close(merged_weight(Wt.t(), True, A, B, 4.0, m), merged_weight(Wt, False, A, B, 4.0, m).t()))
    check("LoRA merge", close(merged_weight(Wt, False, A, B, 4.0), V))
    cfgj = read_json(os.path.join(tmp, "ad_gpt2_f32_2", "adapter_config.json"))
    check("gpt2 adapter: fan_in_fan_out true, CAUSAL_LM",
          cfgj["fan_in_fan_out"] is True and cfgj["task_type"] == "CAUSAL_LM" and cfgj["base_model_name_or_path"] == "gpt2_f32")
    keys = read_safetensors(os.path.join(tmp, "ad_qwen2_f32_3", "adapter_model.safetensors"))
    check("DoRA key names",
          "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector" in keys
          and list(keys["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape) == [4, 32])

    # apply refuses what PEFT would silently misload
    adir = os.path.join(tmp, "ad_llama_f32_2")
    bad = os.path.join(tmp, "bad_adapter")

    def broken(edit_cfg=None, edit_tensors=None):
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(adir, bad)
        c = read_json(os.path.join(bad, "adapter_config.json"))
        t = read_safetensors(os.path.join(bad, "adapter_model.safetensors"))
        if edit_cfg:
            edit_cfg(c)
        if edit_tensors:
            edit_tensors(t)
        write_json(os.path.join(bad, "adapter_config.json"), c)
        write_safetensors(os.path.join(bad, "adapter_model.safetensors"), t)
        return ["apply", "--base", os.path.join(tmp, "llama_f32"), "--adapter", bad, "--out", os.path.join(tmp, "x.st")]

    q0 = "base_model.model.model.layers.0.self_attn.q_proj"
    expect_error("apply: wrong module name", broken(edit_tensors=lambda t: t.update(
        {q0.replace("layers.0", "layers.9") + ".lora_A.weight": t[q0 + ".lora_A.weight"]})), "not a linear module")
    expect_error("apply: missing lora_B", broken(edit_tensors=lambda t: t.pop(q0 + ".lora_B.weight")), "lora_B.weight is missing")
    expect_error("apply: A transposed", broken(edit_tensors=lambda t: t.update(
        {q0 + ".lora_A.weight": t[q0 + ".lora_A.weight"].t().contiguous()})), "lora_A.weight has shape")
    expect_error("apply: untargeted module", broken(edit_cfg=lambda c: c.update(target_modules=["q_proj"])), "does not select")
    expect_error("apply: no prefix", broken(edit_tensors=lambda t: t.update(
        {"model.layers.0.self_attn.q_proj.lora_A.weight": t.pop(q0 + ".lora_A.weight")})), "does not start with")
    expect_error("apply: fan_in_fan_out on Linear", broken(edit_cfg=lambda c: c.update(fan_in_fan_out=True)), "fan_in_fan_out")
    expect_error("apply: task_type", broken(edit_cfg=lambda c: c.update(task_type=None)), "task_type")
    expect_error("apply: peft_type", broken(edit_cfg=lambda c: c.update(peft_type="LOHA")), "peft_type")
    _broken_model(tmp)
    expect_error("forward: missing tensor", ["forward", "--model", os.path.join(tmp, "bad_model"),
                                             "--out", os.path.join(tmp, "y.st")], "missing tensor model.norm.weight")

    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'FAILED ' + str(len(failures)) if failures else 'all passed'}")
    if failures:
        sys.exit(1)


def _broken_model(tmp):
    """A copy of the tiny llama checkpoint without its final norm (for the selftest)."""
    src, dst = os.path.join(tmp, "llama_f32"), os.path.join(tmp, "bad_model")
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), dst)
    shutil.copy(os.path.join(src, "reference.safetensors"), dst)
    st = load_checkpoint(src)
    st.pop("model.norm.weight")
    write_safetensors(os.path.join(dst, SINGLE_FILE), st)
    return True


# --------------------------------------------------------------------------------------------

def parser():
    p = argparse.ArgumentParser(prog="hf_reference.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make", help="write a tiny random checkpoint + reference logits")
    m.add_argument("--family", required=True, choices=FAMILIES)
    m.add_argument("--out", required=True)
    m.add_argument("--dtype", choices=tuple(STORAGE_DTYPES), default="f32")
    m.add_argument("--shards", type=int, default=1)
    tie = m.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=None)
    tie.add_argument("--untied", dest="tied", action="store_false")
    m.add_argument("--kv-heads", type=int, default=0, help="num_key_value_heads (default: --heads)")
    m.add_argument("--head-dim", type=int, default=0, help="written as config head_dim when given")
    m.add_argument("--no-prefix", action="store_true", help="keys without transformer./model./vit.")
    m.add_argument("--attention-bias", action="store_true", help="llama: q/k/v/o biases")
    m.add_argument("--mlp-bias", action="store_true", help="llama: gate/up/down biases")
    m.add_argument("--model-class", choices=("head", "base"), default="head",
                   help="base: GPT2Model / ViTModel (keys without prefix; ViT: pooler, no classifier)")
    m.add_argument("--buffers", action="store_true", help="gpt2: attn.bias/attn.masked_bias; llama: rotary_emb.inv_freq")
    m.add_argument("--rope-parameters", action="store_true", help="theta in rope_parameters, not rope_theta")
    m.add_argument("--rope-theta", type=float, default=0.0)
    m.add_argument("--sliding-window", type=int, default=0, help="mistral/qwen2 sliding_window (qwen2: use_sliding_window)")
    m.add_argument("--activation", default="gelu_new", choices=("gelu_new", "gelu", "relu"), help="gpt2")
    m.add_argument("--no-qkv-bias", action="store_true", help="vit")
    m.add_argument("--vocab", type=int, default=96)
    m.add_argument("--hidden", type=int, default=32)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--intermediate", type=int, default=0, help="0: 2*hidden (gpt2: n_inner null = 4*n_embd)")
    m.add_argument("--max-positions", type=int, default=64)
    m.add_argument("--image-size", type=int, default=16)
    m.add_argument("--patch-size", type=int, default=4)
    m.add_argument("--channels", type=int, default=3)
    m.add_argument("--labels", type=int, default=5)
    m.add_argument("--data-size", type=int, default=12, help="ViT input images are data-size square")
    m.add_argument("--data-channels", type=int, default=1)
    m.add_argument("--batch", type=int, default=2)
    m.add_argument("--seq", type=int, default=7)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_make)

    q = sub.add_parser("peft", help="write a PEFT LoRA/DoRA adapter + the adapted model's logits")
    q.add_argument("--base", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--r", type=int, required=True)
    q.add_argument("--alpha", type=float, required=True)
    q.add_argument("--targets", default="", help="comma-separated, written as the list given")
    q.add_argument("--targets-regex", default="", help="target_modules as one regular expression")
    q.add_argument("--dora", action="store_true")
    q.add_argument("--rslora", action="store_true")
    q.add_argument("--modules-to-save", default="", help="comma-separated, e.g. classifier")
    q.add_argument("--dropout", type=float, default=0.05)
    q.add_argument("--task-type", default="", help="default: CAUSAL_LM for LMs, null for ViT")
    q.add_argument("--base-name", default="", help="base_model_name_or_path (default: the base dir's name)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_peft)

    ap = sub.add_parser("apply", help="load an adapter as PEFT would and write the logits")
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-class", choices=("head", "base"), default="",
                    help="the class the module paths name (default: LMs the LM-head class, ViT the config's)")
    ap.add_argument("--lenient", action="store_true", help="a wrong fan_in_fan_out is a warning (PEFT fixes it)")
    ap.add_argument("--new-head", action="store_true", help="modules_to_save classifier/lm_head may change the outputs")
    ap.set_defaults(func=cmd_apply)

    fw = sub.add_parser("forward", help="logits of a Hugging Face directory")
    fw.add_argument("--model", required=True)
    fw.add_argument("--out", required=True)
    fw.add_argument("--input", default="", help="safetensors with `input` (default: MODEL/reference.safetensors)")
    fw.add_argument("--pixel-values", action="store_true", help="ViT: feed the input file's pixel_values as they are")
    fw.set_defaults(func=cmd_forward)

    st = sub.add_parser("selftest", help="run this file's own checks")
    st.set_defaults(func=cmd_selftest)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    torch.manual_seed(0)
    try:
        args.func(args)
    except RefError as e:
        print(f"hf_reference.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
