// Training throughput benchmark: runs recipes for a fixed number of steps and prints
// samples/s (and tokens/s for text), MFU (model FLOP/s over a measured sgemm peak) and peak RSS.
// Text recipes train their tokenizer first (not timed).
//   bench_train [--steps N] RECIPE [RECIPE ...]
// MFU counts 3x the forward FLOPs per training sample (forward + backward), the usual
// convention, also for adapters whose frozen base skips weight gradients.
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "src/recipe/recipe.h"
#include "src/train/trainer.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/startup.h"

using namespace tunekit;

static double sgemm_peak_gflops(int n = 1024, int reps = 20) {
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  torch::mm(a, b);  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) torch::mm(a, b);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * n * reps / s / 1e9;
}

int main(int argc, char** argv) {
  if (!start_up(argv, "bench_train")) return 2;  // as tunekit's main (util/startup.h)
  int64_t steps = 400;
  std::vector<std::string> recipes;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoll(argv[++i]);
    else recipes.push_back(argv[i]);
  }
  if (recipes.empty()) {
    std::cerr << "usage: bench_train [--steps N] RECIPE [RECIPE ...]\n";
    return 2;
  }
  try {
    std::string threads;
    for (const auto& path : recipes) {
      // Weights do not matter for speed: no init_from, a scratch run directory.
      Recipe r = load_recipe(path, {fmt::format("train.max_steps={}", steps), "train.epochs=100", "init_from.run=''",
                                    "train.checkpoint_every=0", "output.dir=/tmp/tunekit-bench"});
      if (threads.empty()) {
        threads = apply_thread_policy(r.threads);
        double peak = sgemm_peak_gflops();
        std::cout << fmt::format("threads: {}; sgemm peak (1024^3): {:.1f} GFLOP/s\n{}\n", threads, peak,
                                 allocator_policy());
        std::cout << fmt::format("{:<28} {:>7} {:>10} {:>10} {:>12} {:>8} {:>12} {:>14}\n", "recipe", "steps", "samples/s",
                                 "tokens/s", "GFLOP/s", "MFU", "peak RSS", "trainable");
        std::cout.flush();
        setenv("TUNEKIT_SGEMM_PEAK", fmt::format("{}", peak).c_str(), 1);
      }
      TrainResult t = train(r, {false, true, 0, /*overwrite=*/true});  // a scratch run, redone each time
      double gflops = 3.0 * t.flops_per_sample * t.samples_per_second / 1e9;
      double peak = std::atof(getenv("TUNEKIT_SGEMM_PEAK"));
      std::cout << fmt::format("{:<28} {:>7} {:>10.1f} {:>10} {:>12.1f} {:>7.1f}% {:>8.0f} MiB {:>14}\n", r.output.name,
                               t.steps, t.samples_per_second,
                               t.tokens_per_second > 0 ? fmt::format("{:.0f}", t.tokens_per_second) : "-", gflops,
                               100.0 * gflops / peak, peak_rss_mib(), t.trainable);
      std::cout.flush();
    }
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
