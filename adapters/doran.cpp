#include "adapters/doran.h"

#include <cmath>

#include "adapters/lowrank.h"

namespace tunekit::adapters {

DoranImpl::DoranImpl(LoraOptions options_, std::shared_ptr<FactorGeneratorImpl> generator, int64_t slot,
                     const torch::Tensor& base_weight, double tau_init, bool detach_norm_)
    : options(std::move(options_)), detach_norm(detach_norm_), generator_(std::move(generator)), slot_(slot) {
  // ρ = softplus⁻¹(τ0) = log(expm1(τ0)).
  tau_rho = register_parameter("tau_rho", torch::tensor(std::log(std::expm1(tau_init)), torch::kFloat));
  magnitude = register_parameter("lora_magnitude_vector", (row_norm(base_weight.detach()) + tau_init).to(torch::kFloat));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

torch::Tensor DoranImpl::forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) {
  auto [A, B] = factors();
  auto h = options.dropout() > 0 ? dropout(x) : x;
  return decomposed_forward(x, h, W, b, A, B, options.scale(), magnitude, tau(), detach_norm);
}

torch::Tensor DoranImpl::merged_weight(const torch::Tensor& W) const {
  auto [A, B] = factors();
  return decomposed_weight(W, A, B, options.scale(), magnitude, tau());
}

}  // namespace tunekit::adapters
