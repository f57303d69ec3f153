// Multi-head self-attention with adaptable projections (models::Linear q, k, v, o and, when
// gated, gate), so adapters can target e.g. "blocks.*.attn.q". Scores: softmax or sigmoid;
// optional QK-norm and gates (docs/methods.md §1–§3, models/attention_variant.h).
#pragma once
#include <torch/torch.h>

#include "models/attention_variant.h"
#include "models/linear.h"
#include "models/script.h"

namespace tunekit::models {

struct AttentionOptions {
  AttentionOptions(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(AttentionVariant, variant) = {};
  TORCH_ARG(bool, bias) = true;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(AttentionOptions options);
  void reset();
  // x: [B, N, dim] (the block's normed input). mask (optional): broadcastable to
  // [B, heads, N, N], true = attend; masked scores are -inf before softmax or sigmoid.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  torch::jit::Module to_script(const ScriptUnit& unit) const;
  // The sigmoid bias b as a scalar tensor (the learnable parameter or the fixed buffer).
  const torch::Tensor& sigmoid_bias() const { return sigmoid_bias_; }
  // Prefix tuning: learnable keys/values prepended to K and V (registered as child "prefix").
  void attach_prefix(std::shared_ptr<adapters::KeyValuePrefix> prefix);
  const std::shared_ptr<adapters::KeyValuePrefix>& prefix() const { return prefix_; }

  AttentionOptions options;
  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr}, gate{nullptr};
  torch::nn::LayerNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  torch::Tensor sigmoid_bias_;
  std::shared_ptr<adapters::KeyValuePrefix> prefix_;
};
TORCH_MODULE(Attention);

// The default sigmoid bias for a maximum sequence length n: -log(n).
double default_sigmoid_bias(int64_t max_seq_len);
// Registers `variant`'s sigmoid bias b on `module` as "sigmoid_bias" (a parameter when learnable,
// else a buffer) and returns it; undefined for softmax scores. Shared by every attention module.
torch::Tensor register_sigmoid_bias(torch::nn::Module& module, const AttentionVariant& variant);

}  // namespace tunekit::models
