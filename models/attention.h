// Multi-head self-attention with adaptable q/k/v/o projections (models::Linear), so adapters
// can target e.g. "blocks.*.attn.q". Scores: softmax (METHODS.md §1).
#pragma once
#include <torch/torch.h>

#include "models/linear.h"
#include "models/script.h"

namespace tunekit::models {

enum class Score { Softmax };

struct AttentionOptions {
  AttentionOptions(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(Score, score) = Score::Softmax;
  TORCH_ARG(bool, bias) = true;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(AttentionOptions options);
  void reset();
  // x: [B, N, dim]. mask (optional): broadcastable to [B, heads, N, N], true = attend.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  AttentionOptions options;
  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
};
TORCH_MODULE(Attention);

}  // namespace tunekit::models
