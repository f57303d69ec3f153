// Attention forward+backward time per variant at the ViT's shape (B 64, N 50, d 128, 4 heads)
// and a text model's shape (B 16, N 128, d 128, 4 heads, causal mask), as milliseconds per call.
//   bench_attention [--iters N]
// Compare with bench/torch_attention.py (PyTorch eager, same shapes); bench/run_attention.sh runs both.
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "models/attention.h"
#include "util/threads.h"

using namespace tunekit;
using namespace tunekit::models;

int main(int argc, char** argv) {
  int iters = 30;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  std::cout << "threads: " << apply_thread_policy({}) << "\n";
  struct Shape {
    const char* name;
    int64_t B, N, d, H;
    bool causal;
  };
  struct Variant {
    const char* name;
    Score score;
    Gate gate;
  };
  std::vector<Shape> shapes{{"vit", 64, 50, 128, 4, false}, {"text", 16, 128, 128, 4, true}};
  std::vector<Variant> variants{{"softmax", Score::Softmax, Gate::None},
                                {"sigmoid", Score::Sigmoid, Gate::None},
                                {"softmax+sdpa_elementwise", Score::Softmax, Gate::SdpaElementwise},
                                {"sigmoid+sdpa_elementwise", Score::Sigmoid, Gate::SdpaElementwise},
                                {"softmax+sdpa_headwise", Score::Softmax, Gate::SdpaHeadwise},
                                {"softmax+value", Score::Softmax, Gate::Value}};
  std::cout << fmt::format("{:<6} {:<26} {:>12}\n", "shape", "variant", "fwd+bwd ms");
  for (const auto& s : shapes) {
    torch::manual_seed(0);
    auto x = torch::randn({s.B, s.N, s.d}, torch::requires_grad());
    torch::Tensor mask;
    if (s.causal) mask = torch::ones({s.N, s.N}, torch::kBool).tril();
    for (const auto& v : variants) {
      AttentionVariant av;
      av.score = v.score;
      av.gate = v.gate;
      av.max_seq_len = s.N;
      Attention a(AttentionOptions(s.d, s.H).variant(av));
      auto step = [&] {
        auto y = a(x, mask);
        y.sum().backward();
      };
      for (int i = 0; i < 3; ++i) step();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) step();
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
      std::cout << fmt::format("{:<6} {:<26} {:>12.3f}\n", s.name, v.name, ms);
    }
  }
  return 0;
}
