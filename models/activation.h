// GELU with the tanh approximation (GPT-2's gelu_new), on tunekit's own row loop: one exp per
// element, forward and backward, instead of ATen 1.13's tanh (its Sleef tanh took 9 % of a GPT-2-
// small LoRA step). Used by models/hf/gpt2.cpp; the exported TorchScript keeps torch.gelu.
#pragma once
#include <torch/torch.h>

namespace tunekit::models {

// gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as x sigmoid(2u)
// (the same function, without 1 + tanh's cancellation for negative x). Float and double CPU
// tensors take the fused loop (its backward too, unless a graph of the backward is being built:
// then ATen's differentiable gelu_backward); any other tensor, or with the loop disabled, runs
// torch::gelu(x, "tanh").
torch::Tensor gelu_tanh(const torch::Tensor& x);

// Switch the fused loop off (ATen's gelu) and on, for comparisons; on by default.
void set_fused_activation_enabled(bool enabled);
bool fused_activation_enabled();

}  // namespace tunekit::models
