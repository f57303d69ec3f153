// models::Linear: the one Linear layer every adaptable projection uses. It owns the base
// weight and bias and optionally an attached adapter (LoRA, ...), so adapters are added,
// merged and removed without module surgery (docs/architecture.md, "Adapters without surgery").
#pragma once
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "models/script.h"

namespace tunekit::models {

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
};

// x Wᵀ + b for a base weight W. When W is stored narrower than x (a frozen weight kept in bf16,
// models/precision.h) it is widened for this product only, and autograd keeps the narrow W for
// the backward (which gives x its gradient; W is frozen and gets none). Otherwise torch::linear.
torch::Tensor base_linear(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b);

// A frozen weight as it is stored (models/precision.h): float32/float64 as is, bf16/f16, or int8
// rows packed with their scales — an int8 [out, in + 4] tensor whose row r is W[r]'s values
// round(W[r] / s_r) (|.| <= 127, s_r = max|W[r]| / 127) followed by the 4 bytes of the float32 s_r.
// narrow_weight: stored narrower than float32 (bf16, f16 or packed int8). widen_weight: W as a
// `dtype` [out, in] tensor (s_r * q for packed int8). pack_int8_rows: a float [out, in] W packed.
bool narrow_weight(const torch::Tensor& W);
torch::Tensor widen_weight(const torch::Tensor& W, torch::ScalarType dtype);
torch::Tensor pack_int8_rows(const torch::Tensor& W);

class LinearImpl : public torch::nn::Module {
 public:
  explicit LinearImpl(LinearOptions options);
  LinearImpl(int64_t in, int64_t out) : LinearImpl(LinearOptions(in, out)) {}
  void reset();
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& x);

  // Attaches (registers as child "adapter") or detaches the adapter.
  void attach(std::shared_ptr<adapters::Adapter> adapter);
  void detach();
  const std::shared_ptr<adapters::Adapter>& adapter() const { return adapter_; }
  // An output adapter (prompt expert) mixing this layer's output with its own; registered as
  // child "prompt". It does not fold into the weight.
  void attach_output(std::shared_ptr<adapters::OutputAdapter> prompt);
  const std::shared_ptr<adapters::OutputAdapter>& output_adapter() const { return output_; }
  // Folds the adapter into `weight` (keeping the original for unmerge) and back.
  void merge();
  void unmerge();
  bool merged() const { return merged_; }
  // The weight the layer currently computes with (adapter folded in).
  torch::Tensor effective_weight() const;

  torch::jit::Module to_script(const ScriptUnit& unit) const;

  LinearOptions options;
  torch::Tensor weight, bias;

 private:
  std::shared_ptr<adapters::Adapter> adapter_;
  std::shared_ptr<adapters::OutputAdapter> output_;
  torch::Tensor unmerged_weight_;
  bool merged_ = false;
};
TORCH_MODULE(Linear);

}  // namespace tunekit::models
