// Vision Transformer: conv patch embedding, class token, learned positions, pre-norm
// blocks, final LayerNorm, and a classification head (models::Linear "head").
#pragma once
#include <torch/torch.h>

#include "models/block.h"
#include "models/linear.h"
#include "models/model.h"

namespace tunekit::models {

struct ViTOptions {
  TORCH_ARG(int64_t, image_size) = 28;
  TORCH_ARG(int64_t, channels) = 1;
  TORCH_ARG(int64_t, patch) = 4;
  TORCH_ARG(int64_t, dim) = 128;
  TORCH_ARG(int64_t, depth) = 4;
  TORCH_ARG(int64_t, heads) = 4;
  TORCH_ARG(double, mlp_ratio) = 2.0;
  TORCH_ARG(int64_t, num_classes) = 10;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(AttentionVariant, attention) = {};  // max_seq_len 0 = patches + 1
  TORCH_ARG(bool, post_attn_norm) = false;
};

class ViTImpl : public Model {
 public:
  explicit ViTImpl(ViTOptions options);
  void reset();
  // x: [B, channels, image_size, image_size] -> logits [B, num_classes]
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::jit::Module to_script(const ScriptUnit& unit) const override;
  double flops_per_sample() const override;
  std::string describe() const override;
  int64_t num_patches() const;

  ViTOptions options;
  torch::nn::Conv2d patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;
  std::vector<Block> blocks;
  torch::nn::LayerNorm norm{nullptr};
  Linear head{nullptr};
};
TORCH_MODULE(ViT);

}  // namespace tunekit::models
