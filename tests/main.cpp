// The test binary's entry point: OpenBLAS's kernels chosen as `tunekit` chooses them
// (util/threads.h select_blas_core: on a CPU newer than the installed OpenBLAS knows, its own
// choice is the generic core, several times slower), then GoogleTest.
#include <gtest/gtest.h>

#include "util/threads.h"

int main(int argc, char** argv) {
  tunekit::select_blas_core(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
