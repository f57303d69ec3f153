// libFuzzer target: a Hugging Face config.json (hf::read_hf_config). See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::hf_config, data, size);
}
