#include "adapters/lora.h"

#include <cmath>

#include "adapters/lowrank.h"

namespace tunekit::adapters {

LoraImpl::LoraImpl(LoraOptions options_) : options(std::move(options_)) { reset(); }

void LoraImpl::reset() {
  lora_A = register_parameter("lora_A", torch::empty({options.r(), options.in_features()}));
  lora_B = register_parameter("lora_B", torch::zeros({options.out_features(), options.r()}));
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));  // docs/methods.md §5: as PEFT
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

torch::Tensor LoraImpl::forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) {
  auto h = options.dropout() > 0 ? dropout(x) : x;
  return low_rank_forward(x, h, W, b, lora_A, lora_B, options.scale());
}

torch::Tensor LoraImpl::merged_weight(const torch::Tensor& W) const {
  return low_rank_weight(W, lora_A, lora_B, options.scale());
}

}  // namespace tunekit::adapters
