// Writes a Hugging Face tokenizer.json equivalent to one of js-tiktoken's encodings, the way
// Llama 3's tokenizer.json is laid out (Llama 3 uses cl100k_base's split regex family): the ranks
// become a byte-level BPE vocabulary (id = rank), the merges are derived from the ranks (for each
// token, the last pair tiktoken's own merge loop forms when it stops below the token's rank, as
// Hugging Face's tiktoken converter does), ignore_merges is on (a pre-token that is one token is
// that token, as tiktoken does), the pre-tokenizer is a Split on the encoding's regex followed by
// ByteLevel without its own regex, and the special tokens are added tokens (ids missing between
// them filled with reserved special tokens, as Llama 3 fills its range).
//   node tests/npm/tiktoken_to_hf.js MODULES ENCODING OUT.json      (ENCODING: cl100k_base)
'use strict';
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const [modules, encoding, out] = process.argv.slice(2);
if (!out) {
  process.stderr.write('usage: node tiktoken_to_hf.js MODULES ENCODING OUT.json\n');
  process.exit(1);
}
const req = createRequire(path.join(path.resolve(modules), '..', 'resolver.js'));
const ranksFile = req(`js-tiktoken/ranks/${encoding}`);
const base64 = req('base64-js');

// GPT-2's reversible map from bytes to printable characters.
function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
  const map = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCharCode(cs[i]); });
  return map;
}
const byteChar = bytesToUnicode();
const toText = (bytes) => Array.from(bytes, (b) => byteChar[b]).join('');

// rank by the token's bytes (as a latin1 string key), and the tokens in rank order.
const rankOf = new Map();
const tokens = [];
for (const line of ranksFile.bpe_ranks.split('\n').filter(Boolean)) {
  const [, offsetStr, ...items] = line.split(' ');
  items.forEach((b64, i) => {
    const bytes = base64.toByteArray(b64);
    const rank = Number.parseInt(offsetStr, 10) + i;
    rankOf.set(Buffer.from(bytes).toString('latin1'), rank);
    tokens[rank] = bytes;
  });
}

// tiktoken's merge loop on `bytes`, stopping before any merge of rank >= maxRank.
function mergeBelow(bytes, maxRank) {
  let parts = Array.from(bytes, (b) => String.fromCharCode(b));
  for (;;) {
    let best = -1, bestRank = Infinity;
    for (let i = 0; i + 1 < parts.length; i++) {
      const r = rankOf.get(parts[i] + parts[i + 1]);
      if (r !== undefined && r < bestRank) { best = i; bestRank = r; }
    }
    if (best < 0 || bestRank >= maxRank) return parts;
    parts = parts.slice(0, best).concat([parts[best] + parts[best + 1]], parts.slice(best + 2));
  }
}

const vocab = {};
const merges = [];
tokens.forEach((bytes, rank) => {
  if (!bytes) return;
  vocab[toText(bytes)] = rank;
  if (bytes.length < 2) return;
  const parts = mergeBelow(bytes, rank);
  if (parts.length !== 2) throw new Error(`token ${rank} is not formed by one merge (${parts.length} parts)`);
  merges.push(parts.map((p) => toText(Buffer.from(p, 'latin1'))));
});
const added = [];
const special = Object.entries(ranksFile.special_tokens).sort((a, b) => a[1] - b[1]);
let next = tokens.length;
for (const [content, id] of special) {
  for (; next < id; next++) added.push({ id: next, content: `<|reserved_special_token_${next}|>` });
  added.push({ id, content });
  next = id + 1;
}
const tokenizer = {
  version: '1.0', truncation: null, padding: null,
  added_tokens: added.map((a) => ({ ...a, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
  normalizer: null,
  pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: ranksFile.pat_str }, behavior: 'Isolated', invert: false },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
  post_processor: null,
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges },
};
fs.writeFileSync(out, JSON.stringify(tokenizer));
