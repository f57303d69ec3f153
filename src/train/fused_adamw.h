// FusedAdamW: LibTorch 1.13's AdamW update (same order of operations, so the same numbers to float
// rounding) made in one pass over each float32 parameter's memory, and a zero_grad that frees the
// gradients. Options, state and checkpoints are torch::optim::AdamW's: either resumes the other's.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace tunekit {

class FusedAdamW : public torch::optim::Optimizer {
 public:
  explicit FusedAdamW(std::vector<torch::optim::OptimizerParamGroup> param_groups,
                      torch::optim::AdamWOptions defaults = {});
  explicit FusedAdamW(std::vector<torch::Tensor> params, torch::optim::AdamWOptions defaults = {});

  // One AdamW step over every group (each with its own AdamWOptions). A parameter without a
  // gradient is stepped as with a zero gradient once it has state (what a gradient zeroed in place
  // gave before gradients were freed: weight decay and the moments' decay go on), and skipped until
  // then, as torch::optim::AdamW skips it. float32 contiguous parameters take the one-pass kernel;
  // others (double, strided) the ATen calls of torch::optim::AdamW.
  torch::Tensor step(LossClosure closure = nullptr) override;
  // Frees every parameter's gradient (Optimizer::zero_grad, which this hides, zeroes them in place).
  void zero_grad();
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
};

// Clears `optimizer`'s gradients for the next step: freed under FusedAdamW (the memory is returned
// before the next forward), zeroed in place under any other optimizer (LibTorch's zero_grad, which
// e.g. SGD's momentum relies on for a parameter that gets no gradient in a step).
void clear_gradients(torch::optim::Optimizer& optimizer);

}  // namespace tunekit
