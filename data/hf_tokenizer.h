// Hugging Face tokenizers: tokenizer.json with a BPE model (byte-level: GPT-2, Llama 3, Qwen2;
// sentencepiece-style with ▁ and byte fallback: Llama 2, Mistral), GPT-2's vocab.json +
// merges.txt, added/special tokens matched before BPE, pre-tokenizer regexes run by PCRE2, and a
// directory's tokenizer_config.json / special_tokens_map.json / generation_config.json.
#pragma once
#include <string>

#include "data/tokenizer.h"

namespace tunekit::data {

// The Hugging Face tokenizer files a directory may hold (a run directory copies those of its
// model's tokenizer, beside or instead of tokenizer.model).
inline constexpr const char* kHfTokenizerFiles[] = {"tokenizer.json",        "vocab.json",
                                                    "merges.txt",            "tokenizer_config.json",
                                                    "special_tokens_map.json", "generation_config.json"};

// True when `path` is (or is a directory holding) a Hugging Face tokenizer this file reads:
// tokenizer.json, or vocab.json + merges.txt.
bool is_hf_tokenizer(const std::string& path);

// Loads one (see Tokenizer::load for the files and their order). When `path` is a directory that
// also holds a tokenizer.model, tokenizer.json wins. One-line errors name the file and the key.
Tokenizer load_hf_tokenizer(const std::string& path);

// Reads a directory's tokenizer_config.json / special_tokens_map.json / generation_config.json
// (each optional) into `special`, resolving token strings with `tok`'s vocabulary.
void read_special_tokens(const std::string& dir, const TokenizerBackend& tok, SpecialTokens& special);

}  // namespace tunekit::data
