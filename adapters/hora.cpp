#include "adapters/hora.h"

#include "adapters/lowrank.h"

namespace tunekit::adapters {

HoraImpl::HoraImpl(LoraOptions options_, std::shared_ptr<FactorGeneratorImpl> generator, int64_t slot)
    : options(std::move(options_)), generator_(std::move(generator)), slot_(slot) {
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

torch::Tensor HoraImpl::forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) {
  auto [A, B] = factors();
  auto h = options.dropout() > 0 ? dropout(x) : x;
  return low_rank_forward(x, h, W, b, A, B, options.scale());
}

torch::Tensor HoraImpl::merged_weight(const torch::Tensor& W) const {
  auto [A, B] = factors();
  return low_rank_weight(W, A, B, options.scale());  // docs/methods.md §8: merge as LoRA once generated
}

}  // namespace tunekit::adapters
