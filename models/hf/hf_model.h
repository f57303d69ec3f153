// The Hugging Face families (GPT-2, Llama/Mistral/Qwen2, ViT) as tunekit models. Their modules
// carry the Hugging Face names of the *ForCausalLM / ViTForImageClassification classes
// (`model.layers.3.self_attn.q_proj`, `transformer.h.0.attn.c_attn`,
// `vit.encoder.layer.0.attention.attention.query`), so adapter targets and PEFT files read as a
// PEFT user writes them. Every adaptable projection is a models::Linear (the adapter slot).
// The Options are filled from a checkpoint's config.json by src/hf/config.cpp; models/ itself
// reads no files.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/attention_variant.h"
#include "models/model.h"
#include "util/enum_table.h"

namespace tunekit::models::hf {

// config.json's model_type.
enum class Family { Gpt2, Llama, Mistral, Qwen2, Vit };
inline constexpr EnumRow<Family> kFamilyRows[] = {
    {"gpt2", Family::Gpt2, "GPT-2 (GPT2LMHeadModel): learned positions, LayerNorm, fused c_attn, Conv1D, gelu_new"},
    {"llama", Family::Llama, "Llama (LlamaForCausalLM): RMSNorm, rotary, grouped-query attention, SwiGLU"},
    {"mistral", Family::Mistral, "Mistral (MistralForCausalLM): Llama's shape, sliding window checked"},
    {"qwen2", Family::Qwen2, "Qwen2 (Qwen2ForCausalLM): Llama's shape with q/k/v biases"},
    {"vit", Family::Vit, "ViT (ViTForImageClassification): cls token, learned positions, exact GELU"},
};
constexpr const auto& enum_rows(Family) { return kFamilyRows; }
inline std::string to_string(Family f) { return enum_name(f); }
inline bool is_causal_lm(Family f) { return f != Family::Vit; }

// One tensor of the checkpoint: its Hugging Face name (the *ForCausalLM / *ForImageClassification
// state_dict key, e.g. "transformer.h.0.attn.c_attn.weight"), the model's tensor it fills (a
// reference: copying into it loads the weight), and whether the file stores it transposed
// against the model (GPT-2's Conv1D keeps weights [in, out]; tunekit's Linear holds [out, in]).
struct HfTensor {
  std::string name;
  torch::Tensor tensor;
  bool transposed = false;
};

class HfModel : public Model {
 public:
  virtual Family family() const = 0;
  // Every weight the checkpoint holds, in the family's order; a tied head is not listed (it is
  // the embedding). Adapter tensors and tunekit-only parameters (a gate, a learnable sigmoid
  // bias) are not listed either: they are not part of the Hugging Face model.
  virtual std::vector<HfTensor> hf_tensors() = 0;
  // Names of the tunekit-only parameters the checkpoint cannot hold (initialised fresh).
  virtual std::vector<std::string> extra_parameters() const = 0;
  // The context length the model is used at (positions 0..max_seq_len-1; for ViT the patches + 1).
  virtual int64_t max_seq_len() const = 0;
};

// Activation of GPT-2's MLP (config.json's activation_function).
enum class Gpt2Activation { GeluNew, Gelu, Relu };

struct Gpt2Options {
  TORCH_ARG(int64_t, vocab_size) = 50257;
  TORCH_ARG(int64_t, n_positions) = 1024;  // learned positions in the checkpoint
  TORCH_ARG(int64_t, n_embd) = 768;
  TORCH_ARG(int64_t, n_layer) = 12;
  TORCH_ARG(int64_t, n_head) = 12;
  TORCH_ARG(int64_t, n_inner) = 0;  // 0 = 4 * n_embd
  TORCH_ARG(double, layer_norm_epsilon) = 1e-5;
  TORCH_ARG(Gpt2Activation, activation) = Gpt2Activation::GeluNew;
  TORCH_ARG(int64_t, max_seq_len) = 0;  // the context used; 0 = n_positions
  TORCH_ARG(double, dropout) = 0.0;     // residual/attention-output dropout while training
  TORCH_ARG(AttentionVariant, attention) = {};  // tunekit's variants (sigmoid, gates) on this family
};

struct LlamaOptions {
  TORCH_ARG(Family, family) = Family::Llama;  // llama, mistral or qwen2 (same shape)
  TORCH_ARG(int64_t, vocab_size) = 32000;
  TORCH_ARG(int64_t, hidden_size) = 4096;
  TORCH_ARG(int64_t, intermediate_size) = 11008;
  TORCH_ARG(int64_t, num_hidden_layers) = 32;
  TORCH_ARG(int64_t, num_attention_heads) = 32;
  TORCH_ARG(int64_t, num_key_value_heads) = 0;  // 0 = num_attention_heads (no grouping)
  TORCH_ARG(int64_t, head_dim) = 0;             // 0 = hidden_size / num_attention_heads
  TORCH_ARG(double, rms_norm_eps) = 1e-6;
  TORCH_ARG(double, rope_theta) = 10000.0;
  TORCH_ARG(int64_t, max_position_embeddings) = 2048;
  TORCH_ARG(bool, qkv_bias) = false;  // qwen2: true; llama: attention_bias
  TORCH_ARG(bool, o_bias) = false;    // llama: attention_bias (qwen2's o_proj has none)
  TORCH_ARG(bool, mlp_bias) = false;  // llama: mlp_bias
  TORCH_ARG(bool, tie_word_embeddings) = false;
  TORCH_ARG(int64_t, max_seq_len) = 0;  // the context used; 0 = max_position_embeddings
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(AttentionVariant, attention) = {};
};

// Images as the data gives them, turned into what the checkpoint expects (its
// preprocessor_config.json): undo the data's own normalisation, resize (bilinear, as HF's
// ViTImageProcessor), repeat a grey channel to `channels`, normalise with the model's mean/std.
struct ImagePreprocess {
  bool enabled = false;
  std::vector<double> data_mean{0.0}, data_std{1.0};  // x_data = (x01 - data_mean) / data_std
  std::vector<double> mean{0.5, 0.5, 0.5}, std{0.5, 0.5, 0.5};  // the checkpoint's image_mean / image_std
};

struct VitOptions {
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, num_channels) = 3;
  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(int64_t, num_labels) = 1000;  // the classifier's outputs
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(AttentionVariant, attention) = {};
  TORCH_ARG(ImagePreprocess, preprocess) = {};
};

}  // namespace tunekit::models::hf
