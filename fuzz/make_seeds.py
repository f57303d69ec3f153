#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/): small files in the shapes the
tests use (tests/test_*.cpp) plus the repository's recipes. Run from the repository root; the
output is committed, so this only needs running again when a seed is added."""
import gzip, json, os, shutil, struct, glob

OUT = "fuzz/corpus"


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def jdump(x):
    return json.dumps(x, indent=2)


# recipe: the quick-start recipes and a few experiments / Hugging Face ones, as they are.
for p in sorted(glob.glob("recipes/*.yaml"))[:8] + sorted(glob.glob("recipes/*/*.yaml"))[:6]:
    put("recipe", os.path.basename(p), open(p, "rb").read())
put("recipe", "text_inline.yaml", "model: {kind: text, task: causal_lm}\ndata: {dataset: text, train_file: t.jsonl}\n"
    "sweep: {variants: [{name: a, set: {adapter.r: 4}}], grid: {optimizer.lr: [1e-3, 3e-3]}, seeds: [1, 2]}\n")

# overrides: one key=value per line.
for i, s in enumerate(["adapter.r=4", "optimizer.lr=1e-3\ntrain.epochs=2", "sweep.grid.adapter.r=[1, 2, 4]",
                       "model.kind=text\nmodel.task=causal_lm", "data.classes=[1, 2]\nmodel.num_classes=2",
                       "adapter.kind=hora\nadapter.hypernet.share=layer", "lab.kind=moe", "adapter={kind: dora, r: 2}"]):
    put("overrides", f"set{i}.txt", s)


# safetensors: the format written by hand (8-byte length, JSON header, data).
def st(tensors, metadata=None):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
put("safetensors", "f32.safetensors", st([("w", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)), ("b", "F32", [3], f32(0, 1, 2))]))
put("safetensors", "mixed.safetensors",
    st([("h", "F16", [2], b"\x00\x3c\x00\x40"), ("bf", "BF16", [2, 1], b"\x80\x3f\x00\x40"),
        ("i", "I64", [1], struct.pack("<q", 7)), ("s", "F32", [], f32(3.5)), ("e", "F32", [0, 4], b"")],
       {"format": "pt", "tunekit": "{\"kind\":\"lora\"}"}))
put("safetensors", "empty.safetensors", st([]))
put("safetensors", "adapter.safetensors",
    st([("base_model.model.blocks.0.attn.q.lora_A.weight", "F32", [1, 2], f32(1, 2)),
        ("base_model.model.blocks.0.attn.q.lora_B.weight", "F32", [2, 1], f32(3, 4))], {"format": "pt"}))

# adapter_config: PEFT's LoraConfig as tests/test_hf_adapters.cpp writes it, and variants.
peft = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "google/vit-base-patch16-224",
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
        "lora_alpha": 16, "lora_dropout": 0.1, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "r": 8, "rank_pattern": {}, "revision": None,
        "target_modules": ["query", "value"], "task_type": None, "use_dora": False, "use_rslora": False}
put("adapter_config", "lora.json", jdump(peft))
put("adapter_config", "dora.json", jdump(dict(peft, use_dora=True, modules_to_save=["classifier"], use_rslora=True)))
put("adapter_config", "regex.json", jdump(dict(peft, target_modules=".*\\.(q_proj|v_proj)", task_type="CAUSAL_LM")))
put("adapter_config", "all_linear.json", jdump(dict(peft, target_modules="all-linear")))
put("adapter_config", "refused.json", jdump(dict(peft, rank_pattern={"q": 4}, init_lora_weights="pissa")))
put("adapter_config", "hora.json", jdump({"peft_type": "HORA", "r": 4, "lora_alpha": 8, "target_modules": ["q"],
                                           "tunekit": {"kind": "hora"}}))

# state_json: what save_checkpoint writes.
put("state_json", "state.json", jdump({"epoch": 1, "batch_in_epoch": 20, "step": 120, "samples": 7680,
                                       "best_metric": 0.85, "best_epoch": 0, "train_seconds": 12.5}))
put("state_json", "trainable_only.json", jdump({"epoch": 0, "step": 3, "trainable_only": True}))
put("state_json", "empty.json", "{}")


# idx: tiny images and labels, raw and gzip.
def idx(shape, values):
    return bytes([0, 0, 8, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + bytes(values)


put("idx", "images-idx3-ubyte", idx([2, 2, 3], range(12)))
put("idx", "labels-idx1-ubyte", idx([3], [1, 5, 9]))
put("idx", "images-idx3-ubyte.gz", gzip.compress(idx([1, 3, 3], range(9)), mtime=0))


# text_file: the first byte picks the format (byte % 3: jsonl, csv, tsv) and the flags
# (0x10: no label field, 0x20: a group field, 0x40: format auto from the extension).
def pick(fmt, no_label=False, group=False, auto=False):
    flags = (0x10 if no_label else 0) | (0x20 if group else 0) | (0x40 if auto else 0)
    return bytes([next(b for b in range(256) if b % 3 == fmt and (b & 0x70) == flags)])


put("text_file", "plain.jsonl", pick(0) + b'{"text": "free money", "label": "spam"}\n{"text": "hi \\u00e9", "label": "ham"}\n')
put("text_file", "group.jsonl", pick(0, group=True, auto=True) +
    b'{"id": "1", "group": "easy_ham", "label": "ham", "text": "Subject: x\\nbody"}\n\n{"text": "a", "label": 1, "group": "g"}\n')
put("text_file", "plain.csv", pick(1) + b'text,label\n"quoted, with comma",pos\n"multi\nline ""q""",neg\nplain,pos\n')
put("text_file", "nolabel.csv", pick(1, no_label=True) + b"id,text\r\n1,hello\r\n2,\"world\"\r\n")
put("text_file", "sst2.tsv", pick(2) + b"sentence\tlabel\nit 's a charming journey .\t1\nbad .\t0\n")
put("text_file", "lm.tsv", pick(2, no_label=True, auto=True) + b"text\tgroup\nsome text\ta\n")

# mail: the test's multipart message and plain ones.
put("mail", "multipart.eml",
    "From someone@example.com  Thu Aug 22 12:36:23 2002\r\n"
    "Received: from mail (localhost [127.0.0.1])\r\n\tby host; Thu, 22 Aug 2002\r\n"
    "Subject: Cheap   offer\r\n  for you\r\n"
    "Content-Type: multipart/alternative; boundary=\"BND\"\r\n\r\npreamble\r\n"
    "--BND\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "Caf=E9 deals =3D great,=\r\n still.\r\n"
    "--BND\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "PGh0bWw+PGJvZHk+PHA+Q2xpY2sgPGI+aGVyZTwvYj4gJmFtcDsgd2luPC9wPjwvYm9keT48L2h0bWw+\r\n"
    "--BND\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n--BND--\r\n")
put("mail", "plain.eml", "Subject: hi\nX-Spam: no\n\nline  one\n\n\n\nline two\n")
put("mail", "html.eml", "Subject: =?iso-8859-1?q?caf=E9?=\nContent-Type: text/html\n\n<html><body><p>A &amp; B &lt;x&gt;"
    "</p><br>&nbsp;<a href=\"http://x\">link</a><!-- c --></body></html>\n")
put("mail", "nested.eml", "Subject: nested\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: "
    "multipart/alternative; boundary=\"inner\"\n\n--inner\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
    "aGVsbG8gd29ybGQ=\n--inner--\n--outer\nContent-Type: application/octet-stream\n\nAAAA\n--outer--\n")

# hf_config: the families' config.json as tests/test_hf_checkpoint.cpp writes them.
llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 32,
         "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
         "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32"}
put("hf_config", "llama.json", jdump(llama))
put("hf_config", "qwen2.json", jdump(dict(llama, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                                          tie_word_embeddings=True, use_sliding_window=False, sliding_window=8)))
put("hf_config", "mistral.json", jdump(dict(llama, architectures=["MistralForCausalLM"], model_type="mistral",
                                            sliding_window=32, torch_dtype="bfloat16", head_dim=16)))
put("hf_config", "llama3.json", jdump(dict({k: v for k, v in llama.items() if k != "rope_theta"},
                                           rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                                           attention_bias=True, mlp_bias=True)))
put("hf_config", "gpt2.json", jdump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 50,
                                     "n_positions": 32, "n_embd": 16, "n_layer": 2, "n_head": 2, "n_inner": None,
                                     "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
                                     "torch_dtype": "float32"}))
put("hf_config", "vit.json", jdump({"architectures": ["ViTForImageClassification"], "model_type": "vit",
                                    "image_size": 8, "patch_size": 4, "num_channels": 3, "hidden_size": 16,
                                    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
                                    "layer_norm_eps": 1e-12, "qkv_bias": True, "hidden_act": "gelu",
                                    "id2label": {"0": "cat", "1": "dog", "2": "bird"},
                                    "label2id": {"cat": 0, "dog": 1, "bird": 2}, "torch_dtype": "float32"}))

# hf_index: the index transformers writes (the target puts model-00001-of-00001.safetensors beside it).
shard = "model-00001-of-00001.safetensors"
put("hf_index", "index.json", jdump({"metadata": {"total_size": 8}, "weight_map": {"w": shard}}))
put("hf_index", "two.json", jdump({"metadata": {"total_size": 16}, "weight_map": {"w": shard, "v": "model-00002-of-00002.safetensors"}}))
put("hf_index", "bad.json", jdump({"weight_map": {"w": "../" + shard}}))


# tokenizer: a sentencepiece ModelProto written by hand (a few pieces, byte fallback, no
# normalisation table), unigram and BPE.
def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 5:
        return key + struct.pack("<f", payload)
    return key + varint(len(payload)) + payload


def spm(model_type):
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3), ("<pad>", 0.0, 3)]
    pieces += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    words = ["\u2581", "\u2581Hello", "\u2581fuzz", "e", "l", "o", "H", ",", "!", "t", "1", "2", "3", "\u2581\u00e9t\u00e9"]
    pieces += [(w, -1.0 - i, 1) for i, w in enumerate(words)]
    out = b""
    for p, score, typ in pieces:
        out += field(1, 2, field(1, 2, p.encode()) + field(2, 5, score) + field(3, 0, typ))
    trainer = field(3, 0, model_type) + field(4, 0, len(pieces)) + field(35, 0, 1) + field(40, 0, 0) + \
        field(41, 0, 1) + field(42, 0, 2) + field(43, 0, 3)
    normalizer = field(1, 2, b"identity") + field(3, 0, 1) + field(4, 0, 1) + field(5, 0, 1)
    return out + field(2, 2, trainer) + field(3, 2, normalizer)


put("tokenizer", "unigram.model", spm(1))
put("tokenizer", "bpe.model", spm(2))


# tokenizer_json: Hugging Face tokenizer.json files with a BPE model, small enough to mutate: GPT-2's
# byte-level layout (256 byte tokens, a few merges, <|endoftext|>), Llama 3's (a Split regex,
# ByteLevel without its regex, ignore_merges, merges as pairs), Qwen2's (NFC, Sequence of Split and
# ByteLevel), and Llama 2's sentencepiece-style layout (Replace/Prepend normalizer, byte fallback,
# the Replace/ByteFallback/Fuse/Strip decoder); plus a Digits pre-tokenizer and an unsupported model.
def byte_level_vocab():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): i for i, c in enumerate(sorted(cs, key=lambda c: bs[cs.index(c)]))}


def bpe_json(vocab, merges, pre, decoder, added=(), normalizer=None, **model):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges}
    m.update(model)
    tokens = [{"id": i, "content": c, "single_word": False, "lstrip": l, "rstrip": r, "normalized": False,
               "special": s} for i, c, l, r, s in added]
    return json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": tokens,
                       "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": None,
                       "decoder": decoder, "model": m}, ensure_ascii=False)


bl = byte_level_vocab()
bl_merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "Ġ w"]
for k, (a, b) in enumerate(m.split(" ") for m in bl_merges):
    bl[a + b] = 256 + k
bl["<|endoftext|>"] = len(bl)
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
put("tokenizer_json", "gpt2.json", bpe_json(bl, bl_merges, byte_level, {"type": "ByteLevel"},
                                            [(len(bl) - 1, "<|endoftext|>", False, False, True)]))
llama3_split = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
l3 = dict(bl)
l3["<|begin_of_text|>"], l3["<|eot_id|>"] = len(l3), len(l3) + 1
put("tokenizer_json", "llama3.json", bpe_json(
    l3, [m.split(" ") for m in bl_merges],
    {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": llama3_split}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    [(len(l3) - 2, "<|begin_of_text|>", False, False, True), (len(l3) - 1, "<|eot_id|>", False, False, True)],
    ignore_merges=True))
qw = dict(bl)
qw["<|im_start|>"], qw["<|im_end|>"] = len(qw), len(qw) + 1
put("tokenizer_json", "qwen2.json", bpe_json(
    qw, bl_merges,
    {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": llama3_split.replace("\\p{N}{1,3}", "\\p{N}")}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
    {"type": "ByteLevel"}, [(len(qw) - 2, "<|im_start|>", False, False, True), (len(qw) - 1, "<|im_end|>", False, False, True)],
    normalizer={"type": "NFC"}))
sp = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp["<0x%02X>" % b] = len(sp)
sp_merges = ["▁ t", "h e", "▁t he", "▁ a", "e r", "i n"]
for p in "▁ t h e a r i n o s".split(" "):
    sp.setdefault(p, len(sp))
for a, b in (m.split(" ") for m in sp_merges):
    sp.setdefault(a + b, len(sp))
put("tokenizer_json", "llama2.json", bpe_json(
    sp, sp_merges, None,
    {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                      {"type": "ByteFallback"}, {"type": "Fuse"},
                                      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    [(0, "<unk>", False, False, True), (1, "<s>", False, False, True), (2, "</s>", False, False, True)],
    normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    unk_token="<unk>", byte_fallback=True, fuse_unk=True))
put("tokenizer_json", "metaspace_digits.json", bpe_json(
    sp, sp_merges,
    {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                           {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                            "split": False}]},
    {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
    [(3, "<0x00>", True, True, False)], unk_token="<unk>", byte_fallback=True))
put("tokenizer_json", "unigram.json", json.dumps({"model": {"type": "Unigram", "vocab": [["a", -1.0]]}}))
