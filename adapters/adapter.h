// The adapter interfaces. Adapter: one per adapted models::Linear; it sees the frozen base
// weight and bias on every call, so the base is never copied or replaced (docs/architecture.md).
// OutputAdapter: mixes a frozen sub-network's output with its own (prompt experts); hosted by a
// Linear, a block's MLP or a whole block, and exported as a module (it cannot fold into weights).
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>

#include "models/script.h"

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

class OutputAdapter : public torch::nn::Module {
 public:
  // The adapted output for input x given the frozen sub-network's output on x.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& frozen_out) = 0;
  // TorchScript module with forward(x, frozen_out) -> output.
  virtual torch::jit::Module to_script(const models::ScriptUnit& unit) const = 0;
  virtual std::string kind() const = 0;
  // Mean weight given to the adapter's own experts (1 − the frozen expert's weight) over the
  // inputs seen in eval mode since reset_usage(); NaN when none were seen.
  virtual double usage() const = 0;
  virtual void reset_usage() = 0;
};

// Learnable keys and values prepended to an attention layer's K and V (prefix tuning).
class KeyValuePrefix : public torch::nn::Module {
 public:
  // (P_K, P_V), each [L, dim], computed from the current parameters.
  virtual std::pair<torch::Tensor, torch::Tensor> keys_values() = 0;
  virtual std::string kind() const = 0;
};

}  // namespace tunekit::adapters
