// util/memory.h's allocator policy: with it (tests/main.cpp applies it as tunekit's main does) a
// large block comes from the heap and goes back to it, not to the kernel, so the next step's
// allocation of the same size finds it; TUNEKIT_MALLOC chooses, and a bad value is one line.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "util/error.h"
#include "util/memory.h"

using namespace tunekit;

namespace {
struct EnvVar {  // sets a variable for the scope, restores the policy after
  explicit EnvVar(const char* value) { setenv("TUNEKIT_MALLOC", value, 1); }
  ~EnvVar() {
    unsetenv("TUNEKIT_MALLOC");
    apply_allocator_policy();
  }
};
}  // namespace

TEST(AllocatorPolicy, LargeFreedBlocksStayInTheProcessForTheNextAllocation) {
  if (std::getenv("GLIBC_TUNABLES") || std::getenv("TUNEKIT_MALLOC")) GTEST_SKIP() << "malloc set by the environment";
  ASSERT_NE(allocator_policy().find("kept for reuse"), std::string::npos) << allocator_policy();
  constexpr size_t kBytes = 96u << 20;  // above glibc's largest default mmap threshold (32 MiB)
  const auto mapped_before = mallinfo2().hblkhd;
  auto* block = static_cast<char*>(std::malloc(kBytes));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBytes);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before) << "the block was mmapped on its own";
  std::free(block);
  const auto kept = mallinfo2().fordblks;  // free bytes the heap holds
  EXPECT_GE(kept, kBytes) << "the freed block went back to the kernel";
}

// The heap's top is never trimmed: at a 1 GiB trim threshold, two freed 600 MiB blocks (a tied
// head's two [vocab, d] gradients at Qwen2.5-0.5B's shape are 544 MiB each) went back to the
// kernel and were faulted in again the next step. release_free_memory gives them back on request.
TEST(AllocatorPolicy, FreedBlocksPastAGibibyteStayUntilReleased) {
  if (allocator_policy().find("kept for reuse") == std::string::npos) GTEST_SKIP() << allocator_policy();
  constexpr size_t kBytes = 600u << 20;
  const auto heap_before = mallinfo2().arena;
  auto* a = static_cast<char*>(std::malloc(kBytes));
  auto* b = static_cast<char*>(std::malloc(kBytes));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  a[0] = b[0] = 1;  // used, so that the pair is not elided
  // ctest runs each test in a fresh process, where the pair extends the heap's top; a heap left
  // with large holes by earlier tests (the whole binary run at once) could serve them from there.
  if (mallinfo2().arena < heap_before + 2 * kBytes) {
    std::free(a);
    std::free(b);
    GTEST_SKIP() << "the blocks came from free memory already in the heap, not from its top";
  }
  std::free(a);
  std::free(b);
  const auto top = mallinfo2().keepcost;  // free bytes at the heap's top, which a trim would return
  EXPECT_GE(top, 2 * kBytes) << "the freed top went back to the kernel";
  release_free_memory();
  EXPECT_LT(mallinfo2().keepcost, kBytes) << "release_free_memory kept the free top";
}

TEST(AllocatorPolicy, TheVariableChoosesAndABadValueIsOneLine) {
  {
    EnvVar system("system");
    EXPECT_EQ(apply_allocator_policy(), "memory: glibc's malloc defaults (TUNEKIT_MALLOC=system)");
  }
  {
    EnvVar bad("lots");
    try {
      apply_allocator_policy();
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(), "TUNEKIT_MALLOC: 'lots' is not one of keep, system");
    }
  }
  if (!std::getenv("GLIBC_TUNABLES")) {
    EnvVar keep("keep");
    EXPECT_NE(apply_allocator_policy().find("kept for reuse"), std::string::npos);
  }
}
