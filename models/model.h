// The interface every trainable model in tunekit implements, and the model registry that
// builds one from a recipe's `model:` section.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/script.h"
#include "util/error.h"

namespace tunekit::models {

class Model : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // A TorchScript module computing the same function (adapters folded in).
  virtual torch::jit::Module to_script(const ScriptUnit& unit) const = 0;
  // Forward FLOPs for one sample (multiply-adds x2), used for MFU reports.
  virtual double flops_per_sample() const = 0;
  virtual std::string describe() const = 0;
  // Activation checkpointing (train.activation_checkpointing): while training with autograd on,
  // each block keeps only its input and recomputes its activations in backward. Models that
  // cannot do it refuse to turn it on.
  virtual void set_activation_checkpointing(bool on) {
    if (on) throw Error(describe() + ": activation checkpointing (train.activation_checkpointing) is not supported by this model");
  }
  virtual bool activation_checkpointing() const { return false; }
};

}  // namespace tunekit::models
