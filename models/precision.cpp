#include "models/precision.h"

#include <ATen/autocast_mode.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "models/linear.h"

namespace tunekit::models {

std::string cpu_bf16_features() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w, found;
    while (words >> w)
      if (w == "avx512_bf16" || w == "amx_bf16") found += (found.empty() ? "" : " ") + w;
    return found;
  }
  return "";
}

namespace {

// Seconds of the best of 3 runs of a [512, 768] x [768, 768] product in `dtype`, after a warm-up.
double gemm_seconds(torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({512, 768}).to(dtype), b = torch::randn({768, 768}).to(dtype);
  auto c = torch::matmul(a, b);
  double best = 1e30;
  for (int run = 0; run < 3; ++run) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 4; ++i) c = torch::matmul(a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 4);
  }
  return best;
}

}  // namespace

ComputeChoice choose_compute_dtype(ComputeDtype requested) {
  const std::string features = cpu_bf16_features();
  if (requested == ComputeDtype::Fp32) return {torch::kFloat, "fp32 (train.compute_dtype: fp32)"};
  if (requested == ComputeDtype::Bf16)
    return {torch::kBFloat16,
            features.empty() ? "bf16 as asked, but this CPU has no bf16 instructions (avx512_bf16, amx_bf16): its "
                               "bf16 matmuls are emulated and much slower than fp32"
                             : fmt::format("bf16 as asked (CPU: {})", features)};
  if (features.empty()) return {torch::kFloat, "fp32 (auto: this CPU has no bf16 instructions)"};
  const double fp32 = gemm_seconds(torch::kFloat), bf16 = gemm_seconds(torch::kBFloat16);
  const double speedup = fp32 / bf16;
  if (speedup >= 1.5)
    return {torch::kBFloat16, fmt::format("bf16 (auto: CPU has {}; a bf16 GEMM ran {:.1f}x fp32)", features, speedup)};
  return {torch::kFloat,
          fmt::format("fp32 (auto: CPU has {}, but a bf16 GEMM ran only {:.2f}x fp32 in this build)", features, speedup)};
}

ComputeScope::ComputeScope(torch::ScalarType dtype) {
  if (dtype == torch::kFloat || dtype == torch::kDouble) return;
  active_ = true;
  previous_enabled_ = at::autocast::is_cpu_enabled();
  previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(dtype);
  at::autocast::increment_nesting();
}

ComputeScope::~ComputeScope() {
  if (!active_) return;
  // As torch.autocast's __exit__: the weight casts cached inside the region die with it.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_cpu_enabled(previous_enabled_);
  at::autocast::set_autocast_cpu_dtype(previous_dtype_);
}

torch::Tensor narrow_frozen(const torch::Tensor& W, FrozenDtype dtype) {
  switch (dtype) {
    case FrozenDtype::Bf16: return W.to(torch::kBFloat16);
    case FrozenDtype::Int8: return pack_int8_rows(W.to(torch::kFloat));
    case FrozenDtype::Fp32: break;
  }
  return W.to(torch::kFloat);
}

int64_t store_frozen_weights(torch::nn::Module& module, FrozenDtype dtype) {
  if (dtype == FrozenDtype::Fp32) return 0;
  int64_t saved = 0;
  torch::NoGradGuard no_grad;
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    auto* lin = dynamic_cast<LinearImpl*>(item.value().get());
    if (!lin || lin->weight.requires_grad() || lin->weight.scalar_type() != torch::kFloat) continue;
    const int64_t before = lin->weight.numel() * lin->weight.element_size();
    // set_data keeps the registered parameter and the member the same tensor object.
    lin->weight.set_data(narrow_frozen(lin->weight, dtype));
    saved += before - lin->weight.numel() * lin->weight.element_size();
  }
  return saved;
}

int64_t frozen_bytes_saved(torch::nn::Module& module) {
  int64_t saved = 0;
  for (const auto& item : module.named_modules("", /*include_self=*/true)) {
    auto* lin = dynamic_cast<LinearImpl*>(item.value().get());
    if (!lin || !lin->weight.defined() || !narrow_weight(lin->weight)) continue;
    saved += lin->options.out_features() * lin->options.in_features() * int64_t(sizeof(float)) -
             lin->weight.numel() * lin->weight.element_size();
  }
  return saved;
}

}  // namespace tunekit::models
