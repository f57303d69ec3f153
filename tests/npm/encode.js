// Encodes texts with an npm tokenizer, for tests/test_tokenizer_npm.cpp and bench/run_tokenizer.sh:
// one node process for all texts, read from a file and written as JSON lines.
//   node tests/npm/encode.js MODULES ENCODER IN [OUT] [--special] [--text] [--unicode-space] [--time]
// MODULES: the node_modules directory scripts/npm_tokenizers.sh prints.
// ENCODER: gpt-3-encoder | js-tiktoken | gpt-tokenizer (GPT-2's vocabulary, the byte-level BPE of
//          encoder.json + vocab.bpe) | js-tiktoken-cl100k (cl100k_base).
// IN: records "<byte length>\n<bytes>" one after another, or a .jsonl file whose lines' "text"
//     fields are the texts. Bytes are decoded as Node's TextDecoder does: every invalid UTF-8
//     sequence becomes U+FFFD (WHATWG's maximal-subpart rule), a leading BOM is kept.
// OUT: one line per text, the ids as a JSON array, or {"ids": [...], "text": "..."} with --text
//      (the text as decoded, so the caller sees the replaced string).
// --special: "<|endoftext|>" (cl100k: its special tokens) written in a text is the special token,
//            as a Hugging Face tokenizer with it among added_tokens does; without, it is text.
// --unicode-space: js-tiktoken with the split regex's \s and \S spelled out as Unicode's White_Space
//            property, the \s of Python's regex module (GPT-2's own encoder.py), of Oniguruma (Hugging
//            Face tokenizers) and of Rust's regex (tiktoken). JavaScript's \s differs from it in two
//            code points: U+0085 (NEL) is not in it and U+FEFF (BOM) is; texts with neither get
//            the same ids either way.
// --time: encodes every text twice (the first pass with empty caches, the second warm) and prints
//         {"encoder", "texts", "bytes", "tokens", "cold_s", "warm_s"} on stdout.
'use strict';
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

function fail(msg) {
  process.stderr.write(`encode.js: ${msg}\n`);
  process.exit(1);
}

function readTexts(file) {
  const buf = fs.readFileSync(file);
  const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  if (file.endsWith('.jsonl')) {
    return decoder.decode(buf).split('\n').filter((l) => l.trim() !== '').map((l, i) => {
      const t = JSON.parse(l).text;
      if (typeof t !== 'string') fail(`${file}:${i + 1}: no "text" string`);
      return t;
    });
  }
  const texts = [];
  let at = 0;
  while (at < buf.length) {
    const nl = buf.indexOf(10, at);
    if (nl < 0) fail(`${file}: a record without its length line at byte ${at}`);
    const n = Number(buf.toString('latin1', at, nl));
    if (!Number.isInteger(n) || n < 0 || nl + 1 + n > buf.length) fail(`${file}: bad record length at byte ${at}`);
    texts.push(decoder.decode(buf.subarray(nl + 1, nl + 1 + n)));
    at = nl + 1 + n;
  }
  return texts;
}

// Unicode's White_Space property (PropList.txt): what \s means outside JavaScript.
const kWhiteSpace = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

// `pattern` with \s inside a class, \s and \S outside one written as White_Space.
function withUnicodeSpace(pattern) {
  return pattern.replace(/\[\^?\\s/g, (m) => m.slice(0, -2) + kWhiteSpace)
    .replace(/\\s/g, `[${kWhiteSpace}]`).replace(/\\S/g, `[^${kWhiteSpace}]`);
}

// Returns text -> ids for the named encoder, loaded from MODULES.
function encoderOf(modules, name, special, unicodeSpace) {
  if (unicodeSpace && !name.startsWith('js-tiktoken')) fail('--unicode-space is for js-tiktoken only');
  const req = createRequire(path.join(path.resolve(modules), '..', 'resolver.js'));
  if (name === 'gpt-3-encoder') {
    if (special) fail('gpt-3-encoder has no special tokens (it encodes "<|endoftext|>" as text)');
    const g = req('gpt-3-encoder');
    return (t) => g.encode(t);
  }
  if (name === 'js-tiktoken' || name === 'js-tiktoken-cl100k') {
    const { Tiktoken } = req('js-tiktoken/lite');
    const ranks = req(name === 'js-tiktoken' ? 'js-tiktoken/ranks/gpt2' : 'js-tiktoken/ranks/cl100k_base');
    const enc = new Tiktoken(unicodeSpace ? { ...ranks, pat_str: withUnicodeSpace(ranks.pat_str) } : ranks);
    return special ? (t) => enc.encode(t, 'all', []) : (t) => enc.encode(t, [], []);
  }
  if (name === 'gpt-tokenizer') {
    const g = req('gpt-tokenizer/cjs/encoding/r50k_base');
    const opts = special ? { allowedSpecial: g.ALL_SPECIAL_TOKENS } : { disallowedSpecial: new Set() };
    return (t) => g.encode(t, opts);
  }
  fail(`unknown encoder "${name}" (gpt-3-encoder, js-tiktoken, gpt-tokenizer, js-tiktoken-cl100k)`);
}

function main() {
  const flags = new Set(process.argv.slice(2).filter((a) => a.startsWith('--')));
  const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  if (args.length < 3) fail('usage: node encode.js MODULES ENCODER IN [OUT] [--special] [--text] [--unicode-space] [--time]');
  const [modules, name, input, output] = args;
  const encode = encoderOf(modules, name, flags.has('--special'), flags.has('--unicode-space'));
  const texts = readTexts(input);
  const t0 = process.hrtime.bigint();
  const ids = texts.map(encode);
  const t1 = process.hrtime.bigint();
  if (flags.has('--time')) {
    for (const t of texts) encode(t);
    const t2 = process.hrtime.bigint();
    const bytes = texts.reduce((a, t) => a + Buffer.byteLength(t, 'utf8'), 0);
    const tokens = ids.reduce((a, v) => a + v.length, 0);
    console.log(JSON.stringify({ encoder: name, texts: texts.length, bytes, tokens,
      cold_s: Number(t1 - t0) / 1e9, warm_s: Number(t2 - t1) / 1e9 }));
  }
  if (output) {
    const withText = flags.has('--text');
    const lines = ids.map((v, i) => (withText ? JSON.stringify({ ids: v, text: texts[i] }) : JSON.stringify(v)));
    fs.writeFileSync(output, lines.join('\n') + (lines.length ? '\n' : ''));
  }
}

main();
