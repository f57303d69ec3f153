// Prompt experts (docs/methods.md §10; arXiv 2505.18455, 2410.12258): the frozen sub-network is one
// expert, K small trainable networks are the others, and a gate from the gating family mixes
// them: output = w_0(x)·frozen(x) + Σ_i w_i(x)·expert_i(x), with the frozen expert's logit pinned
// at 0 (for K = 1 and a softmax gate: (1 − g)·frozen + g·expert, g = σ(βᵀx + b)). The gate reads
// each token (`gate_input: token`) or the mean token of the sequence (`mean`). Each expert is a
// Linear (hidden 0) or a two-layer GELU MLP; it starts random, structurally distinct from the
// frozen expert ("distinguishability"), and the gate's bias starts at `bias_init` (< 0: near the
// frozen model). Hosted by a Linear (e.g. the head), a block's MLP or a whole block.
#pragma once
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/gating.h"

namespace tunekit::adapters {

struct PromptExpertOptions {
  PromptExpertOptions(int64_t in_features, int64_t out_features, GateOptions gate)
      : in_features_(in_features), out_features_(out_features), gate_(std::move(gate)) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(GateOptions, gate);          // its experts() is K
  TORCH_ARG(int64_t, hidden) = 0;        // 0: linear experts; > 0: Linear-GELU-Linear
  TORCH_ARG(GateInput, gate_input) = GateInput::Token;
};

class PromptExpertImpl : public OutputAdapter {
 public:
  explicit PromptExpertImpl(PromptExpertOptions options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& frozen_out) override;
  // The gate's weights for x, [..., K + 1] (column 0 = the frozen expert), broadcast over tokens
  // for gate_input mean.
  torch::Tensor gate_weights(const torch::Tensor& x);
  torch::Tensor expert_forward(int64_t i, const torch::Tensor& x);
  torch::jit::Module to_script(const models::ScriptUnit& unit) const override;
  std::string kind() const override { return "prompt_expert"; }
  double usage() const override { return usage_n_ > 0 ? usage_sum_ / usage_n_ : std::nan(""); }
  void reset_usage() override { usage_sum_ = 0, usage_n_ = 0; }

  PromptExpertOptions options;
  Gate gate{nullptr};
  std::vector<torch::nn::Linear> fc1, fc2;  // experts.i.fc1 (and experts.i.fc2 when hidden > 0)

 private:
  double usage_sum_ = 0;
  int64_t usage_n_ = 0;
};
TORCH_MODULE(PromptExpert);

}  // namespace tunekit::adapters
