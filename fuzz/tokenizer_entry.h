// The tokenizer fuzz target's entry point, apart from fuzz/entry_points.h: fuzz_tokenizer is built
// without AddressSanitizer (sentencepiece is reached by dlopen with RTLD_DEEPBIND, which the
// sanitizer runtime refuses), so it links only data/tokenizer.cpp and util/file.cpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

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

}  // namespace tunekit::fuzz
