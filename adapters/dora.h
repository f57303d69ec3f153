// DoRA (docs/methods.md §7, arXiv 2402.09353): W' = m ⊙ (W0 + (α/r)BA) / ‖W0 + (α/r)BA‖_c with the
// row norm detached in backward; m starts at ‖W0‖_c and A, B as LoRA, so the layer starts
// equal to the base. Tensor names follow PEFT (lora_A, lora_B, lora_magnitude_vector).
#pragma once
#include <torch/torch.h>

#include "adapters/adapter.h"
#include "adapters/lora.h"

namespace tunekit::adapters {

class DoraImpl : public Adapter {
 public:
  // `base_weight` is the frozen W0 the magnitude starts from.
  DoraImpl(LoraOptions options, const torch::Tensor& base_weight, bool detach_norm = true);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) override;
  torch::Tensor merged_weight(const torch::Tensor& W) const override;
  std::string kind() const override { return "dora"; }

  LoraOptions options;
  bool detach_norm;
  torch::Tensor lora_A, lora_B, magnitude;  // [r, d_in], [d_out, r], [d_out]
  torch::nn::Dropout dropout{nullptr};
};

}  // namespace tunekit::adapters
