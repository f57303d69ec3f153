// The Llama family (transformers' LlamaForCausalLM, and the same-shaped MistralForCausalLM and
// Qwen2ForCausalLM) as a tunekit model: RMSNorm, rotary position embeddings (HF's rotate_half
// convention), grouped-query causal attention with optional q/k/v and o biases, a SwiGLU MLP
// (down(silu(gate(x)) * up(x))), and an lm_head of its own or tied to the embedding. Module
// names are the checkpoint's (`model.layers.3.self_attn.q_proj`, `lm_head`). A models::CausalLm:
// packed segments and a key/value cache (models/lm.h); per-layer activation checkpointing.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "models/hf/common.h"
#include "models/hf/hf_model.h"
#include "models/linear.h"

namespace tunekit::models::hf {

// LlamaAttention: q_proj (hidden -> heads*Dh), k_proj and v_proj (hidden -> kv_heads*Dh),
// rotary on q and k, causal grouped-query core, o_proj (heads*Dh -> hidden).
class LlamaAttentionImpl : public HfAttentionBase {
 public:
  LlamaAttentionImpl(AttentionShape shape, bool qkv_bias, bool o_bias);
  void reset();
  // x [B, N, hidden] (the layer's input_layernorm output); cos, sin from rotary_cos_sin; lm: a
  // forward_lm call's mask and cache (common.h).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const LmAttention* lm = nullptr);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  bool qkv_bias, o_bias;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(LlamaAttention);

// LlamaDecoderLayer: x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaOptions& options, const AttentionShape& shape);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const LmAttention* lm = nullptr);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  LlamaOptions options;
  LlamaAttention self_attn{nullptr};
  std::shared_ptr<torch::nn::Module> mlp;  // holds gate_proj, up_proj, down_proj
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaImpl : public HfModel, public CausalLm {
 public:
  explicit LlamaImpl(LlamaOptions options);
  // ids [B, N] int64, N <= max_seq_len() -> logits [B, N, vocab_size] (forward_lm({ids})).
  torch::Tensor forward(const torch::Tensor& ids) override;
  // forward with packed segments (rotary positions restart per segment) or a cache (rotary
  // positions from cache->length; keys cached after the rotation, per key/value head):
  // forward_hidden, then lm_head (or the embedding when tied).
  torch::Tensor forward_lm(const LmInputs& in) override;
  // The final norm's output [B, N, d] ([B, 1, d] with last_only).
  torch::Tensor forward_hidden(const LmInputs& in) override;
  // embed_tokens' weight when tied, else lm_head's weight and bias; an undefined weight when
  // lm_head carries an adapter (attached or merged) or an output adapter.
  LmHead head() override;
  // While on, a training forward with autograd and no cache keeps only each decoder layer's
  // input (models/checkpoint.h).
  void set_activation_checkpointing(bool on) override { checkpointing_ = on; }
  bool activation_checkpointing() const override { return checkpointing_; }
  int64_t context_length() const override { return max_seq_len(); }
  std::string incremental_blocker() override;
  torch::jit::Module to_script(const ScriptUnit& unit) const override;
  double flops_per_sample() const override;  // at max_seq_len() tokens
  std::string describe() const override;
  Family family() const override { return options.family(); }
  std::vector<HfTensor> hf_tensors() override;
  std::vector<std::string> extra_parameters() const override;
  int64_t max_seq_len() const override;
  int64_t num_key_value_heads() const;
  int64_t head_dim() const;

  LlamaOptions options;
  std::shared_ptr<torch::nn::Module> model;  // holds embed_tokens, layers, norm
  torch::nn::Embedding embed_tokens{nullptr};
  std::vector<LlamaDecoderLayer> layers;
  RmsNorm norm{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings: the head is embed_tokens' weight

 private:
  bool checkpointing_ = false;
};

}  // namespace tunekit::models::hf
