// util/threads.h parallel_ranges (the threads tunekit's own kernels split their work over) and the
// kernels on it: the same numbers on one thread as on several.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "models/activation.h"
#include "models/attention_kernel.h"
#include "models/chunked_loss.h"
#include "src/train/fused_adamw.h"
#include "util/threads.h"

using namespace tunekit;

namespace {

// Sets the kernel threads for one scope, back to the policy's after.
struct KernelThreads {
  explicit KernelThreads(int n) { set_kernel_threads(n); }
  ~KernelThreads() { set_kernel_threads(0); }
};

int openblas_threads() {
  using GetFn = int (*)();
  auto get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get ? get() : 0;
}

}  // namespace

TEST(KernelThreads, RangesCoverEveryItemOnceAcrossThreads) {
  KernelThreads scope(3);
  EXPECT_EQ(kernel_threads(), 3);
  for (int64_t n : {1, 2, 7, 1000}) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    std::mutex m;
    std::set<std::thread::id> ids;
    std::vector<std::pair<int64_t, int64_t>> ranges;
    parallel_ranges(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) seen[size_t(i)]++;
      std::lock_guard<std::mutex> lock(m);
      ids.insert(std::this_thread::get_id());
      ranges.emplace_back(b, e);
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[size_t(i)].load(), 1) << "n " << n << " item " << i;
    EXPECT_EQ(int64_t(ranges.size()), std::min<int64_t>(n, 3)) << n;
    EXPECT_EQ(int64_t(ids.size()), std::min<int64_t>(n, 3)) << n;
  }
  // The grain bounds the split: 10 items, at least 4 each: 2 ranges.
  std::atomic<int> calls{0};
  parallel_ranges(10, 4, [&](int64_t b, int64_t e) {
    EXPECT_GE(e - b, 4);
    calls++;
  });
  EXPECT_EQ(calls.load(), 2);
  parallel_ranges(0, 1, [&](int64_t, int64_t) { ADD_FAILURE() << "no items, no call"; });
}

TEST(KernelThreads, ErrorsReachTheCallerAndNestedCallsRunInline) {
  KernelThreads scope(2);
  try {
    parallel_ranges(8, 1, [](int64_t b, int64_t) {
      if (b > 0) throw std::runtime_error("range past the first failed");
    });
    ADD_FAILURE() << "the worker's error was lost";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "range past the first failed");
  }
  // The pool still works after an error, and a call from inside a range (the pool busy) runs its
  // ranges on that thread instead of waiting for itself.
  std::atomic<int64_t> total{0};
  parallel_ranges(4, 1, [&](int64_t b, int64_t e) {
    parallel_ranges(100, 1, [&](int64_t b2, int64_t e2) { total += (e2 - b2) * (e - b); });
  });
  EXPECT_EQ(total.load(), 400);
}

TEST(KernelThreads, OpenBlasRunsEachCallOnItsThreadOnlyWhileTheRangesRun) {
  const int before = openblas_threads();
  if (before <= 1) GTEST_SKIP() << "OpenBLAS not loaded or on one thread";
  KernelThreads scope(2);
  std::atomic<int> inside{0};
  parallel_ranges(2, 1, [&](int64_t, int64_t) { inside = openblas_threads(); }, /*serial_blas=*/true);
  EXPECT_EQ(inside.load(), 1);
  EXPECT_EQ(openblas_threads(), before);
  EXPECT_THROW(parallel_ranges(2, 1, [](int64_t, int64_t) { throw std::runtime_error("x"); }, true),
               std::runtime_error);
  EXPECT_EQ(openblas_threads(), before);
}

// Each kernel's forward and gradients on 1 thread and on 3: bit for bit where no GEMM runs (the
// activations, the loss rows), and within rounding for the attention core, whose small GEMMs
// OpenBLAS may split differently on one thread than on several.
TEST(KernelThreads, KernelsGiveTheSameNumbersOnOneThreadAndOnSeveral) {
  auto run = [](int threads) {
    KernelThreads scope(threads);
    torch::manual_seed(5);
    std::vector<torch::Tensor> out;
    // Activations: 300k elements, several grains' worth.
    auto x = (torch::randn({3, 100000}) * 3).requires_grad_(true);
    auto y = models::gelu_tanh(x);
    auto gy = torch::randn_like(y);
    y.backward(gy);
    out.insert(out.end(), {y.detach(), x.grad().clone()});
    auto g = torch::randn({300, 1000}).requires_grad_(true), u = torch::randn({300, 1000}).requires_grad_(true);
    auto s = models::silu_mul(g, u);
    s.backward(torch::randn_like(s));
    out.insert(out.end(), {s.detach(), g.grad().clone(), u.grad().clone()});
    // The fused loss: 70 rows (not a multiple of the 8-row tasks), a few ignored.
    auto h = torch::randn({70, 32}).requires_grad_(true), W = (torch::randn({5000, 32}) * 0.3).requires_grad_(true);
    auto t = torch::randint(0, 5000, {70}, torch::kLong);
    t.slice(0, 0, 70, 9).fill_(models::kIgnoreIndex);
    auto loss = models::chunked_lm_loss(h, {W, {}}, t, 1 << 20);
    loss.backward();
    out.insert(out.end(), {loss.detach(), h.grad().clone(), W.grad().clone()});
    // Causal attention, grouped (6 query heads on 2 key/value heads), 2 samples, 130 tokens (a
    // partial row block), and the sigmoid variant's bias gradient.
    auto q = torch::randn({2, 130, 6 * 16}).requires_grad_(true);
    auto k = torch::randn({2, 130, 2 * 16}).requires_grad_(true), v = torch::randn({2, 130, 2 * 16}).requires_grad_(true);
    auto bias = torch::full({}, -1.5).requires_grad_(true);
    auto a = models::causal_attention(q, k, v, 6, 2, 0.25) + models::causal_attention(q, k, v, 6, 2, 0.25, {}, bias);
    a.backward(torch::randn_like(a));
    out.insert(out.end(), {a.detach(), q.grad().clone(), k.grad().clone(), v.grad().clone(), bias.grad().clone()});
    return out;
  };
  const auto one = run(1), three = run(3);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(torch::equal(one[i], three[i])) << "output " << i;
  for (size_t i = 8; i < one.size(); ++i)
    EXPECT_TRUE(torch::allclose(one[i], three[i], 1e-5, 1e-6)) << "output " << i << ": max difference "
                                                               << (one[i] - three[i]).abs().max().item<double>();
}

// FusedAdamW's pass over a parameter of 200,003 floats (7 tasks of 32 k, an uneven tail): the same
// parameters and moments on 1 thread and on 3, and as torch::optim::AdamW's.
TEST(KernelThreads, FusedAdamWStepsTheSameOnOneThreadAndOnSeveral) {
  auto run = [](int threads, bool fused) {
    KernelThreads scope(threads);
    torch::manual_seed(9);
    auto p = torch::randn({200003}).requires_grad_(true);
    const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.1);
    std::unique_ptr<torch::optim::Optimizer> opt;
    if (fused)
      opt = std::make_unique<FusedAdamW>(std::vector<torch::Tensor>{p}, options);
    else
      opt = std::make_unique<torch::optim::AdamW>(std::vector<torch::Tensor>{p}, options);
    for (int step = 0; step < 3; ++step) {
      p.mutable_grad() = torch::randn({200003});
      opt->step();
    }
    return p.detach().clone();
  };
  const auto one = run(1, true), three = run(3, true), libtorch = run(1, false);
  EXPECT_TRUE(torch::equal(one, three));
  EXPECT_TRUE(torch::allclose(three, libtorch, 1e-6, 1e-7));
}
