// ViT (transformers' ViTForImageClassification) as a tunekit model: conv patch embedding, a cls
// token and learned positions, pre-LN encoder layers with exact (erf) GELU, a final LayerNorm and
// the classifier on the cls token. Module names are the checkpoint's
// (`vit.encoder.layer.0.attention.attention.query`, `classifier`). With
// VitOptions::preprocess enabled, images as the data gives them (e.g. Fashion-MNIST's normalised
// 1x28x28) are first turned into what the checkpoint was trained on (ImagePreprocess).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "models/hf/common.h"
#include "models/hf/hf_model.h"
#include "models/linear.h"

namespace tunekit::models::hf {

// ViTSelfAttention: query, key, value and the bidirectional core; returns the per-head context
// [B, N, hidden] (the layer's attention.output.dense projects it).
class VitSelfAttentionImpl : public HfAttentionBase {
 public:
  VitSelfAttentionImpl(AttentionShape shape, bool qkv_bias);
  void reset();
  torch::Tensor forward(const torch::Tensor& x);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  bool qkv_bias;
  Linear query{nullptr}, key{nullptr}, value{nullptr};
};
TORCH_MODULE(VitSelfAttention);

// ViTLayer: h = x + attention.output.dense(attention.attention(layernorm_before(x))), then
// h + output.dense(gelu(intermediate.dense(layernorm_after(h)))).
class VitLayerImpl : public torch::nn::Module {
 public:
  VitLayerImpl(const VitOptions& options, const AttentionShape& shape);
  torch::Tensor forward(const torch::Tensor& x);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  VitOptions options;
  std::shared_ptr<torch::nn::Module> attention, attention_output, intermediate, output;  // containers
  VitSelfAttention self_attention{nullptr};  // attention.attention
  Linear attention_dense{nullptr};           // attention.output.dense
  Linear intermediate_dense{nullptr};        // intermediate.dense
  Linear output_dense{nullptr};              // output.dense
  torch::nn::LayerNorm layernorm_before{nullptr}, layernorm_after{nullptr};
};
TORCH_MODULE(VitLayer);

class VitImpl : public HfModel {
 public:
  explicit VitImpl(VitOptions options);
  // images [B, C, H, W] -> logits [B, num_labels]. Without preprocessing the images must be
  // [B, num_channels, image_size, image_size]; with it, C is 1 or num_channels and any size.
  torch::Tensor forward(const torch::Tensor& images) override;
  // The images the checkpoint sees (ImagePreprocess; the input itself when disabled).
  torch::Tensor preprocess(const torch::Tensor& images) const;
  torch::jit::Module to_script(const ScriptUnit& unit) const override;
  double flops_per_sample() const override;
  std::string describe() const override;
  Family family() const override { return Family::Vit; }
  std::vector<HfTensor> hf_tensors() override;
  std::vector<std::string> extra_parameters() const override;
  int64_t max_seq_len() const override { return num_patches() + 1; }
  int64_t num_patches() const;

  VitOptions options;
  std::shared_ptr<torch::nn::Module> vit, embeddings, patch_embeddings, encoder;  // containers
  torch::Tensor cls_token, position_embeddings;   // vit.embeddings.*
  torch::nn::Conv2d projection{nullptr};          // vit.embeddings.patch_embeddings.projection
  std::vector<VitLayer> layer;                    // vit.encoder.layer.N
  torch::nn::LayerNorm layernorm{nullptr};        // vit.layernorm
  Linear classifier{nullptr};
};

}  // namespace tunekit::models::hf
