// libFuzzer target: one raw SpamAssassin mail (data::mail_to_text). See fuzz/entry_points.h.
#include "fuzz/entry_points.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return tunekit::fuzz::run(tunekit::fuzz::mail, data, size);
}
