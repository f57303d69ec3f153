// HoRA (docs/methods.md §8, arXiv 2510.04295, HyRA in its v2): LoRA whose factors for every head
// (and, with shared seeds, for q and v together) come from a joint hypernetwork instead of
// independent parameters. The generator lives in the model's AdapterSet; this adapter only
// refers to it, so its parameters appear once in parameters().
#pragma once
#include <torch/torch.h>

#include <memory>

#include "adapters/adapter.h"
#include "adapters/hypernet.h"
#include "adapters/lora.h"

namespace tunekit::adapters {

class HoraImpl : public Adapter {
 public:
  HoraImpl(LoraOptions options, std::shared_ptr<FactorGeneratorImpl> generator, int64_t slot);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b) override;
  torch::Tensor merged_weight(const torch::Tensor& W) const override;
  std::string kind() const override { return "hora"; }
  // The generated (A, B) this layer currently uses.
  std::pair<torch::Tensor, torch::Tensor> factors() const { return generator_->factors(slot_); }

  LoraOptions options;
  torch::nn::Dropout dropout{nullptr};

 private:
  std::shared_ptr<FactorGeneratorImpl> generator_;  // owned by the AdapterSet, not registered here
  int64_t slot_;
};

}  // namespace tunekit::adapters
