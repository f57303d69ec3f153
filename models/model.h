// The interface every trainable model in tunekit implements, and the model registry that
// builds one from a recipe's `model:` section.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/script.h"

namespace tunekit::models {

class Model : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // A TorchScript module computing the same function (adapters folded in).
  virtual torch::jit::Module to_script(const ScriptUnit& unit) const = 0;
  // Forward FLOPs for one sample (multiply-adds x2), used for MFU reports.
  virtual double flops_per_sample() const = 0;
  virtual std::string describe() const = 0;
};

}  // namespace tunekit::models
