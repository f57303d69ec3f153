// The test binary's entry point: OpenBLAS's kernels and the allocator policy chosen as `tunekit`
// chooses them (util/startup.h: on a CPU newer than the installed OpenBLAS knows, its own choice is
// the generic core, several times slower), then GoogleTest.
#include <gtest/gtest.h>

#include "util/startup.h"

int main(int argc, char** argv) {
  if (!tunekit::start_up(argv, "tunekit_tests")) return 2;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
