// GPT-2 (transformers' GPT2LMHeadModel) as a tunekit model: learned positions, pre-LN blocks
// with LayerNorm, a fused c_attn projection split into q, k, v, causal attention, a gelu_new MLP
// and the LM head tied to the token embedding. Module names are the checkpoint's
// (`transformer.h.0.attn.c_attn`); the Conv1D layers are models::Linear holding [out, in] (the
// checkpoint stores them [in, out]: hf_tensors() marks them transposed). A models::CausalLm:
// packed segments and a key/value cache (models/lm.h); per-block activation checkpointing.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "models/hf/common.h"
#include "models/hf/hf_model.h"
#include "models/linear.h"

namespace tunekit::models::hf {

// GPT2Attention: c_attn (hidden -> 3 hidden, q | k | v), causal core, c_proj.
class Gpt2AttentionImpl : public HfAttentionBase {
 public:
  explicit Gpt2AttentionImpl(AttentionShape shape);
  void reset();
  // x [B, N, hidden], the block's ln_1 output; lm: a forward_lm call's mask and cache (common.h).
  torch::Tensor forward(const torch::Tensor& x, const LmAttention* lm = nullptr);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  Linear c_attn{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Attention);

// GPT2Block: x + attn(ln_1(x)), then + mlp(ln_2(x)) with mlp = c_proj(act(c_fc(.))).
class Gpt2BlockImpl : public torch::nn::Module {
 public:
  Gpt2BlockImpl(const Gpt2Options& options, const AttentionShape& shape);
  torch::Tensor forward(const torch::Tensor& x, const LmAttention* lm = nullptr);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  Gpt2Options options;
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Gpt2Attention attn{nullptr};
  std::shared_ptr<torch::nn::Module> mlp;  // holds c_fc, c_proj
  Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Block);

class Gpt2Impl : public HfModel, public CausalLm {
 public:
  explicit Gpt2Impl(Gpt2Options options);
  // ids [B, N] int64, N <= max_seq_len() -> logits [B, N, vocab_size] (forward_lm({ids})).
  torch::Tensor forward(const torch::Tensor& ids) override;
  // forward with packed segments (wpe positions restart per segment) or a cache (wpe positions
  // from cache->length): forward_hidden, then the head tied to wte.
  torch::Tensor forward_lm(const LmInputs& in) override;
  // ln_f's output [B, N, d] ([B, 1, d] with last_only).
  torch::Tensor forward_hidden(const LmInputs& in) override;
  LmHead head() override { return {wte->weight, {}}; }  // GPT-2 always ties the head to wte
  // While on, a training forward with autograd and no cache keeps only each block's input
  // (models/checkpoint.h).
  void set_activation_checkpointing(bool on) override { checkpointing_ = on; }
  bool activation_checkpointing() const override { return checkpointing_; }
  int64_t context_length() const override { return max_seq_len(); }
  std::string incremental_blocker() override;
  torch::jit::Module to_script(const ScriptUnit& unit) const override;
  double flops_per_sample() const override;  // at max_seq_len() tokens
  std::string describe() const override;
  Family family() const override { return Family::Gpt2; }
  std::vector<HfTensor> hf_tensors() override;
  std::vector<std::string> extra_parameters() const override;
  int64_t max_seq_len() const override;
  int64_t n_inner() const;

  Gpt2Options options;
  std::shared_ptr<torch::nn::Module> transformer;  // holds wte, wpe, h, ln_f
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  std::vector<Gpt2Block> h;
  torch::nn::LayerNorm ln_f{nullptr};

 private:
  bool checkpointing_ = false;
};

}  // namespace tunekit::models::hf
