// The tokenizer fuzz targets' entry points, apart from fuzz/entry_points.h: fuzz_tokenizer is built
// without AddressSanitizer (sentencepiece is reached by dlopen with RTLD_DEEPBIND, which the
// sanitizer runtime refuses), and both link only the tokenizer's own sources (data/tokenizer.cpp,
// data/hf_tokenizer.cpp, data/bpe.cpp, util/), not the whole toolkit.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "fuzz/scratch.h"

namespace tunekit::fuzz {

// A sentencepiece tokenizer.model as a run or data.tokenizer.model gives it (data::Tokenizer::load),
// then used: encode, decode, pieces.
inline void tokenizer(const std::string& bytes) {
  const std::string path = scratch("tokenizer") + "/tokenizer.model";
  put(path, bytes);
  data::Tokenizer tok = data::Tokenizer::load(path);
  const auto ids = tok.encode("Hello, fuzz! \xc3\xa9t\xc3\xa9 \xe2\x82\xac 123");
  tok.decode(ids);
  for (int64_t i = 0; i < std::min<int64_t>(tok.vocab_size(), 8); ++i) tok.piece(i);
}

// A Hugging Face tokenizer.json (data::Tokenizer::load: the BPE model, added tokens, normalizer,
// pre-tokenizer regexes run by PCRE2, decoder), then used: a fixed text (blank runs, digits,
// contractions, special-looking tokens, multi-byte and invalid UTF-8) encoded and decoded, ids
// out of range decoded, the first pieces looked up again.
inline void tokenizer_json(const std::string& bytes) {
  const std::string path = scratch("tokenizer_json") + "/tokenizer.json";
  put(path, bytes);
  data::Tokenizer tok = data::Tokenizer::load(path);
  static const std::string text =
      "Hello, fuzz! It's  \t\n 12345 <|endoftext|><s> [INST] \xe2\x96\x81x \xc3\xa9t\xc3\xa9 \xe2\x82\xac "
      "\xf0\x9f\x99\x82 \xe6\x97\xa5\xe6\x9c\xac \xff\xc3 end  ";
  std::vector<int64_t> ids = tok.encode(text);
  tok.decode(ids);
  tok.decode(ids, /*skip_special=*/true);
  const int64_t n = tok.vocab_size();
  ids.insert(ids.end(), {-1, n, n - 1, 0, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()});
  tok.decode(ids);
  for (int64_t i = 0; i < std::min<int64_t>(n, 8); ++i) {
    tok.token_id(tok.piece(i));
    tok.is_special(i);
  }
}

}  // namespace tunekit::fuzz
