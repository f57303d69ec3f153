// libFuzzer target: a PEFT adapter_config.json (io::peft_adapter_config). See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::adapter_config, data, size);
}
