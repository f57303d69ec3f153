// The MLP activations of the Hugging Face causal LMs on tunekit's own row loop (models/row_math.h),
// one exp per element in forward and in backward:
// - gelu_tanh: GPT-2's gelu_new, instead of ATen 1.13's tanh (its Sleef tanh took 9 % of a GPT-2-
//   small LoRA step);
// - silu_mul: Llama / Mistral / Qwen2's SwiGLU product silu(gate) * up as one op (ATen: silu, then
//   the product; in backward silu_backward and two products; and it keeps silu(gate) as well).
// Used by models/hf/gpt2.cpp and llama.cpp; the exported TorchScript keeps torch.gelu / torch.silu.
#pragma once
#include <torch/torch.h>

namespace tunekit::models {

// gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as x sigmoid(2u)
// (the same function, without 1 + tanh's cancellation for negative x). Float and double CPU
// tensors take the fused loop (its backward too, unless a graph of the backward is being built:
// then ATen's differentiable gelu_backward); any other tensor, or with the loop disabled, runs
// torch::gelu(x, "tanh").
torch::Tensor gelu_tanh(const torch::Tensor& x);

// silu(gate) * up = gate sigmoid(gate) up. The fused loop takes float and double CPU tensors of one
// dtype and one shape (saving gate and up for backward); anything else, a graph of the backward,
// or the loop disabled: torch::silu(gate) * up.
torch::Tensor silu_mul(const torch::Tensor& gate, const torch::Tensor& up);

// Switch the fused loops off (ATen's ops) and on, for comparisons; on by default.
void set_fused_activation_enabled(bool enabled);
bool fused_activation_enabled();

}  // namespace tunekit::models
