// libFuzzer target: a sharded checkpoint's model.safetensors.index.json (hf::find_hf_weights). See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::hf_index, data, size);
}
