// Attention forward+backward time per variant at the ViT's shape (B 64, N 50, d 128, 4 heads)
// and a text model's shape (B 16, N 128, d 128, 4 heads, causal mask), as milliseconds per call;
// then the causal core alone (the rows "causal <shape>-<N> <kernel ms> <ATen ms>") at the
// Qwen2.5-0.5B head shape (14 heads, 2 KV heads, Dh 64) and GPT-2's (12 heads, Dh 64), batch 1:
// models/attention_kernel.h causal_attention against the Hugging Face families' ATen path
// (models/hf/common.h attend_aten: matmul, masked_fill, softmax, matmul), forward + backward.
//   bench_attention [--iters N] [--causal-only] [--lengths 256,1024,2048]
// Compare with bench/torch_attention.py (PyTorch eager, same shapes); bench/run_attention.sh runs both.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <vector>

#include "models/attention.h"
#include "models/attention_kernel.h"
#include "models/hf/common.h"
#include "util/startup.h"
#include "util/threads.h"

using namespace tunekit;
using namespace tunekit::models;

namespace {

template <typename F>
double ms_per_call(int iters, const F& step) {
  for (int i = 0; i < 2; ++i) step();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) step();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Causal softmax attention forward + backward of the core alone (q, k, v given), batch 1.
void bench_causal(int iters, const std::vector<int64_t>& lengths) {
  struct Heads {
    const char* name;
    int64_t H, KV, Dh;
  };
  std::cout << fmt::format("{:<6} {:<12} {:>10} {:>10} {:>7}\n", "causal", "heads-N", "kernel ms", "ATen ms", "ratio");
  for (const auto& h : {Heads{"qwen", 14, 2, 64}, Heads{"gpt2", 12, 12, 64}})
    for (int64_t N : lengths) {
      torch::manual_seed(0);
      auto q = torch::randn({1, N, h.H * h.Dh}, torch::requires_grad());
      auto k = torch::randn({1, N, h.KV * h.Dh}, torch::requires_grad());
      auto v = torch::randn({1, N, h.KV * h.Dh}, torch::requires_grad());
      auto up = torch::randn({1, N, h.H * h.Dh});
      const double scale = 1.0 / std::sqrt(double(h.Dh));
      const int n = std::max(2, int(iters * 256 / N));
      auto grad = [&](const torch::Tensor& out) { torch::autograd::grad({out}, {q, k, v}, {up}); };
      const double kernel = ms_per_call(n, [&] { grad(causal_attention(q, k, v, h.H, h.KV, scale)); });
      const double aten = ms_per_call(n, [&] {
        grad(hf::attend_aten(q.view({1, N, h.H, h.Dh}), k.view({1, N, h.KV, h.Dh}), v, nullptr, {}, scale, true));
      });
      std::cout << fmt::format("{:<6} {:<12} {:>10.2f} {:>10.2f} {:>6.2f}x\n", "causal", fmt::format("{}-{}", h.name, N),
                               kernel, aten, aten / kernel);
    }
}

}  // namespace

int main(int argc, char** argv) {
  if (!start_up(argv, "bench_attention")) return 2;  // as tunekit's main (util/startup.h)
  int iters = 30;
  bool causal_only = false;
  std::vector<int64_t> lengths{256, 1024, 2048};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--causal-only")) causal_only = true;
    if (i + 1 >= argc) continue;
    if (!std::strcmp(argv[i], "--iters")) iters = std::max(1, std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--lengths")) {
      lengths.clear();
      for (const char* p = argv[i + 1]; *p;) {
        char* end;
        const long n = std::strtol(p, &end, 10);
        if (end == p || n <= 0) {
          std::cerr << "bench_attention: --lengths takes positive numbers separated by commas\n";
          return 1;
        }
        lengths.push_back(n);
        p = *end == ',' ? end + 1 : end;
      }
    }
  }
  std::cout << "threads: " << apply_thread_policy({}) << "\n";
  if (causal_only) {
    bench_causal(iters, lengths);
    return 0;
  }
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
  bench_causal(iters, lengths);
  return 0;
}
