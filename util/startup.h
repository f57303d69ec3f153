// What every tunekit program does first in main(), before anything allocates or loads a model:
// OpenBLAS's kernels for this CPU (util/threads.h select_blas_core; it may re-execute the program
// with OPENBLAS_CORETYPE set) and the allocator policy (util/memory.h apply_allocator_policy).
// The `tunekit` CLI, the test binary and every benchmark call it, so a benchmark measures what
// `tunekit` runs.
#pragma once

namespace tunekit {

// Returns false after printing one line, "<program>: error: TUNEKIT_MALLOC: ..." ("error: ..."
// when program is empty), for a bad TUNEKIT_MALLOC; main() then exits with 2.
bool start_up(char** argv, const char* program = "");

}  // namespace tunekit
