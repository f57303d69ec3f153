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
  // Reads every gradient as g * scale in the next step() (the same float32 product as g.mul_(scale)
  // before it, without that pass over the gradients), then goes back to 1. clip_grad_norm uses it.
  void scale_next_gradients(float scale);

 private:
  float grad_scale_ = 1.0f;
};

// The global L2 norm of `params`' gradients, computed as LibTorch 1.13's clip_grad_norm_ computes it
// (float32 for float32 gradients); undefined when no parameter has a gradient.
torch::Tensor global_grad_norm(const std::vector<torch::Tensor>& params);

// train.clip_grad_norm: LibTorch's clip_grad_norm_(params, max_norm) with the same result (the
// global L2 norm before clipping, float32 as LibTorch computes it) and the same clipped gradients,
// min(1, max_norm / (norm + 1e-6)) times each. When `optimizer` is a FusedAdamW that steps exactly
// the parameters with gradients here, the factor goes to its next step() instead of a pass over
// the gradients (494 M parameters: 0.17 s a step). Gradients read before that step are unscaled.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm, torch::optim::Optimizer* optimizer);

// Clears `optimizer`'s gradients for the next step: freed under FusedAdamW (the memory is returned
// before the next forward), zeroed in place under any other optimizer (LibTorch's zero_grad, which
// e.g. SGD's momentum relies on for a parameter that gets no gradient in a step).
void clear_gradients(torch::optim::Optimizer& optimizer);

}  // namespace tunekit
