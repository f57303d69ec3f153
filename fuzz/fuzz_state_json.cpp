// libFuzzer target: a checkpoint's state.json (io::load_train_state). See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::state_json, data, size);
}
