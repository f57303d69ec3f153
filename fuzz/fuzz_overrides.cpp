// libFuzzer target: key=value overrides on a small recipe. See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::overrides, data, size);
}
