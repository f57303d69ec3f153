// The adapter interface: one Adapter per adapted models::Linear. It sees the frozen base
// weight and bias on every call, so the base is never copied or replaced (ARCHITECTURE.md).
#pragma once
#include <torch/torch.h>

#include <string>

namespace tunekit::adapters {

class Adapter : public torch::nn::Module {
 public:
  // The adapted layer's output for input x given the frozen base W [d_out, d_in] and b.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& W,
                                const torch::Tensor& b) = 0;
  // The single weight equivalent to the adapted layer (bias is left unchanged).
  virtual torch::Tensor merged_weight(const torch::Tensor& W) const = 0;
  virtual std::string kind() const = 0;
};

}  // namespace tunekit::adapters
