// Small helpers the benchmark programs share (each bench_*.cpp is its own program).
#pragma once
#include <string>

#include "util/threads.h"

namespace tunekit::bench {

// The kernel set OpenBLAS chose at start-up ("SkylakeX", "Haswell", ...; util/threads.h), or "-"
// for another BLAS, as the benchmarks' tables and JSON print it.
inline std::string blas_core_label() {
  const std::string core = openblas_core();
  return core.empty() ? "-" : core;
}

}  // namespace tunekit::bench
