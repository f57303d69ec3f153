// libFuzzer target: a JSONL/CSV/TSV file (data::read_text_file). See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::text_file, data, size);
}
