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

// A float [out, in] weight W as `dtype` stores it: bf16 [out, in], or int8 rows packed with their
// scales, [out, in + 4] (models/linear.h pack_int8_rows); float32 for Fp32. Row by row: a block
// of W's rows narrows to the same rows of the whole (the loader narrows while it reads, in blocks).
torch::Tensor narrow_frozen(const torch::Tensor& W, FrozenDtype dtype);

// Stores every frozen (requires_grad false) float32 models::Linear weight of `module` in `dtype`
// (narrow_frozen); trainable ones, and ones stored narrow already, are left as they are. Returns
// the bytes saved.
int64_t store_frozen_weights(torch::nn::Module& module, FrozenDtype dtype);

// The bytes the narrow models::Linear weights of `module` save against float32, however they came
// to be narrow (stored by store_frozen_weights, or as the Hugging Face loader read them).
int64_t frozen_bytes_saved(torch::nn::Module& module);

}  // namespace tunekit::models
