// LoRA (docs/methods.md §5, arXiv 2106.09685): h = W0 x + (alpha/r) * B A dropout(x).
// A: Kaiming-uniform (a = sqrt 5, as PEFT), B = 0, so the adapted layer starts equal to the base.
#pragma once
#include <torch/torch.h>

#include "adapters/adapter.h"

namespace tunekit::adapters {

struct LoraOptions {
  LoraOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  // The scale of the update B A: alpha / r, or alpha / sqrt(r) with rsLoRA (docs/methods.md §6);
  // every low-rank adapter (LoRA, DoRA, HoRA, DoRAN) uses it.
  double scale() const {
    return rslora() ? alpha() / std::sqrt(static_cast<double>(r())) : alpha() / static_cast<double>(r());
  }
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(int64_t, r) = 8;
  TORCH_ARG(double, alpha) = 16.0;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, rslora) = false;  // rank-stabilised scale alpha / sqrt(r)
};

class LoraImpl : public Adapter {
 public:
  explicit LoraImpl(LoraOptions options);
  void reset();
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) override;
  torch::Tensor merged_weight(const torch::Tensor& W) const override;
  std::string kind() const override { return "lora"; }

  LoraOptions options;
  torch::Tensor lora_A, lora_B;  // [r, d_in], [d_out, r]
  torch::nn::Dropout dropout{nullptr};
};

}  // namespace tunekit::adapters
