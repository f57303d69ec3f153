// The text Transformer: token + learned position embeddings, the ViT's pre-norm blocks (so
// every attention variant and adapter applies), a final LayerNorm, and either a causal-LM head
// tied to the token embedding or a classification head over mean-pooled or last-token states.
// Input: token ids [B, N] (int64), right-padded with pad_id. Attention is causal by default
// (`causal`), and padded keys are masked; key 0 is always visible so no row is empty.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/block.h"
#include "models/linear.h"
#include "models/model.h"
#include "models/text_task.h"

namespace tunekit::models {

struct TextTransformerOptions {
  TextTransformerOptions(int64_t vocab_size, int64_t max_seq_len) : vocab_size_(vocab_size), max_seq_len_(max_seq_len) {}
  TORCH_ARG(int64_t, vocab_size);
  TORCH_ARG(int64_t, max_seq_len);
  TORCH_ARG(int64_t, dim) = 128;
  TORCH_ARG(int64_t, depth) = 4;
  TORCH_ARG(int64_t, heads) = 4;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(AttentionVariant, attention) = {};  // max_seq_len 0 = max_seq_len
  TORCH_ARG(bool, post_attn_norm) = false;
  TORCH_ARG(TextTask, task) = TextTask::CausalLm;
  TORCH_ARG(int64_t, num_classes) = 2;          // Classify only
  TORCH_ARG(TextPooling, pooling) = TextPooling::Mean;
  TORCH_ARG(bool, causal) = true;
  TORCH_ARG(int64_t, pad_id) = 0;
};

class TextTransformerImpl : public Model {
 public:
  explicit TextTransformerImpl(TextTransformerOptions options);
  void reset();
  // ids [B, N] -> CausalLm: logits [B, N, vocab]; Classify: logits [B, num_classes]
  torch::Tensor forward(const torch::Tensor& ids) override;
  // The attention mask for ids: [B, 1, N, N] bool, true = attend.
  torch::Tensor attention_mask(const torch::Tensor& ids) const;
  torch::jit::Module to_script(const ScriptUnit& unit) const override;
  double flops_per_sample() const override;  // at max_seq_len tokens
  std::string describe() const override;

  TextTransformerOptions options;
  torch::nn::Embedding token_embed{nullptr};
  torch::Tensor pos_embed;
  std::vector<Block> blocks;
  torch::nn::LayerNorm norm{nullptr};
  Linear head{nullptr};  // Classify only; the LM head is token_embed's weight
};
TORCH_MODULE(TextTransformer);

}  // namespace tunekit::models
