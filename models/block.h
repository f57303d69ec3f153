// Pre-norm Transformer encoder block: x + attn(norm1(x)), then x + mlp(norm2(x)); with
// post_attn_norm ("hybrid norm", 2409.04431) the attention branch is x + post_norm(attn(norm1(x))).
// The MLP's Linear layers (mlp.fc1, mlp.fc2) are models::Linear, so adapters can target them.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/attention.h"
#include "models/linear.h"

namespace tunekit::models {

struct BlockOptions {
  BlockOptions(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, norm_eps) = 1e-5;
  TORCH_ARG(AttentionVariant, attention) = {};
  TORCH_ARG(bool, post_attn_norm) = false;
};

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(BlockOptions options);
  void reset();
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  torch::jit::Module to_script(const ScriptUnit& unit) const;
  // Output adapters (prompt experts) on the MLP ("blocks.N.mlp.prompt", input norm2(h)) or on
  // the whole block ("blocks.N.prompt", input x).
  void attach_mlp_output(std::shared_ptr<adapters::OutputAdapter> prompt);
  void attach_output(std::shared_ptr<adapters::OutputAdapter> prompt);

  BlockOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, post_norm{nullptr};
  Attention attn{nullptr};
  Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
  std::shared_ptr<torch::nn::Module> mlp;  // holds fc1, fc2 (and an MLP output adapter)
  std::shared_ptr<adapters::OutputAdapter> mlp_prompt, prompt;
};
TORCH_MODULE(Block);

// Shared by the models built from blocks: registers the blocks' TorchScript as the list "blocks"
// on `m` (blocks.0, blocks.1, ... as in the eager model) and returns the forward lines
// "    h = getattr(self.blocks, \"N\").forward(h<extra_args>)\n".
std::string register_block_scripts(torch::jit::Module& m, const std::vector<Block>& blocks, const ScriptUnit& unit,
                                   const std::string& extra_args);
// Forward FLOPs of one block on n tokens (multiply-adds x2), gate included.
double block_flops(const BlockOptions& o, double n);
// "softmax, gate sdpa_elementwise, qk_norm, post_attn_norm" for describe().
std::string describe_attention(const AttentionVariant& a, bool post_attn_norm);

}  // namespace tunekit::models
