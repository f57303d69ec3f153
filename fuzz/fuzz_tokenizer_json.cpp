// libFuzzer target: a Hugging Face tokenizer.json (data::Tokenizer::load, encode, decode). See fuzz/tokenizer_entry.h.
#include "fuzz/tokenizer_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::tokenizer_json, data, size);
}
