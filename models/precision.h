// Precision of the big matrices: how the frozen base weights are stored (model.frozen_dtype) and
// what the matmuls compute in (train.compute_dtype), with the CPU detection that decides `auto`.
// A frozen weight stored in bf16, or as int8 rows with a float32 scale each (models/linear.h:
// pack_int8_rows), is widened per matmul (base_linear, widen_weight) and never kept widened.
#pragma once
#include <torch/torch.h>

#include <string>

#include "models/precision_kind.h"

namespace tunekit::models {

// The CPU's bf16 instructions as /proc/cpuinfo lists them ("avx512_bf16 amx_bf16", "" if none).
std::string cpu_bf16_features();

struct ComputeChoice {
  torch::ScalarType dtype = torch::kFloat;
  std::string why;  // one line: what was chosen and why ("bf16: amx_bf16, bf16 GEMM 4.1x fp32")
};
// Resolves a requested compute dtype: fp32 and bf16 as asked (bf16 on a CPU without bf16
// instructions is allowed but said to be slow); auto by detection and a short GEMM measurement.
ComputeChoice choose_compute_dtype(ComputeDtype requested);

// While alive, matmuls (linear, matmul, mm, bmm) run in `dtype` through LibTorch's CPU autocast
// (no-op for float32). Restores the previous state on destruction.
class ComputeScope {
 public:
  explicit ComputeScope(torch::ScalarType dtype);
  ~ComputeScope();
  ComputeScope(const ComputeScope&) = delete;
  ComputeScope& operator=(const ComputeScope&) = delete;

 private:
  bool active_ = false, previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kBFloat16;
};

// Stores every frozen (requires_grad false) float32 models::Linear weight of `module` in `dtype`:
// bf16, or int8 rows packed with their scales (models/linear.h); trainable ones are left as they
// are. Returns the bytes saved.
int64_t store_frozen_weights(torch::nn::Module& module, FrozenDtype dtype);

}  // namespace tunekit::models
