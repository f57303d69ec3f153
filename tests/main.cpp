// The test binary's entry point: OpenBLAS's kernels chosen as `tunekit` chooses them
// (util/threads.h select_blas_core: on a CPU newer than the installed OpenBLAS knows, its own
// choice is the generic core, several times slower) and its allocator policy, then GoogleTest.
#include <gtest/gtest.h>

#include <iostream>

#include "util/memory.h"
#include "util/threads.h"

int main(int argc, char** argv) {
  tunekit::select_blas_core(argv);
  try {
    tunekit::apply_allocator_policy();  // and its allocator policy (util/memory.h)
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
