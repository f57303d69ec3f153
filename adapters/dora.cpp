#include "adapters/dora.h"

#include <cmath>

#include "adapters/lowrank.h"

namespace tunekit::adapters {

DoraImpl::DoraImpl(LoraOptions options_, const torch::Tensor& base_weight, bool detach_norm_)
    : options(std::move(options_)), detach_norm(detach_norm_) {
  lora_A = register_parameter("lora_A", torch::empty({options.r(), options.in_features()}));
  lora_B = register_parameter("lora_B", torch::zeros({options.out_features(), options.r()}));
  // docs/methods.md §7: m ∈ R^{d_out} initialised to ‖W0‖_c (kept in float32).
  magnitude = register_parameter("lora_magnitude_vector", row_norm(base_weight.detach()).clone());
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

torch::Tensor DoraImpl::forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) {
  auto h = options.dropout() > 0 ? dropout(x) : x;
  return decomposed_forward(x, h, W, b, lora_A, lora_B, options.scale(), magnitude, torch::Tensor(), detach_norm);
}

torch::Tensor DoraImpl::merged_weight(const torch::Tensor& W) const {
  return decomposed_weight(W, lora_A, lora_B, options.scale(), magnitude, torch::Tensor());
}

}  // namespace tunekit::adapters
