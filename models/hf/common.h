// What the Hugging Face families (models/hf/hf_model.h) share: Llama's RMSNorm, rotary position
// embeddings in HF's rotate_half convention, and one self-attention core (causal or not,
// grouped-query, tunekit's attention variants) with its TorchScript form, so that GPT-2, the
// Llama family and ViT write attention once. Each family's attention module derives from
// HfAttentionBase and adds its own projections under their Hugging Face names. Also the parts of
// models::CausalLm (models/lm.h) the causal families share: packed segments and the KV cache.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "models/attention_variant.h"
#include "models/checkpoint.h"
#include "models/hf/hf_model.h"
#include "models/linear.h"
#include "models/lm.h"
#include "models/script.h"

namespace tunekit::models::hf {

// LlamaRMSNorm: weight * (x * rsqrt(mean(x^2) + eps)), the normalisation computed in float32
// (as transformers does; a double input stays double) and cast back before the weight.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps);
  void reset();
  torch::Tensor forward(const torch::Tensor& x);
  torch::jit::Module to_script(const ScriptUnit& unit) const;

  int64_t dim;
  double eps;
  torch::Tensor weight;
};
TORCH_MODULE(RmsNorm);

// Rotary embeddings as transformers' LlamaRotaryEmbedding computes them for positions 0..n-1:
// inv_freq = 1 / theta^(2i/d) (float32), angles = position * inv_freq, emb = [angles, angles];
// returns cos(emb), sin(emb) as [1, n, 1, head_dim] in `dtype` (broadcast over [B, n, heads, d]).
std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin(int64_t n, int64_t head_dim, double theta,
                                                       torch::ScalarType dtype);
// x [B, n, heads, d] -> x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1] (halves of d).
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// The same for any positions [P, N] int64 (P = 1 or the batch): [P, N, 1, head_dim]; for positions
// 0..n-1 the values are rotary_cos_sin's, bit for bit.
std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin_at(const torch::Tensor& positions, int64_t head_dim,
                                                          double theta, torch::ScalarType dtype);
// TorchScript lines (4-space indent) defining `cos` and `sin` as rotary_cos_sin does, for the
// sequence length `N` and the dtype of the tensor named `like`.
std::string rotary_script(int64_t head_dim, double theta, const std::string& like);

// The shape of one self-attention layer and the variant it runs.
struct AttentionShape {
  int64_t hidden = 0;    // width of the attention input (the gate's in_features)
  int64_t heads = 0;     // query heads
  int64_t kv_heads = 0;  // key/value heads (grouped-query attention when fewer than heads)
  int64_t head_dim = 0;
  bool causal = false;
  AttentionVariant variant;  // variant.max_seq_len filled in by the family (n of b = -log n)
};

// What one forward_lm call gives every attention layer: which keys a query may not attend to and
// the cache its keys and values go to.
struct LmAttention {
  // bool [P, 1, N, keys] (P = 1 or B), true where query i may NOT attend to key j; undefined:
  // causal over the call's own N tokens (forward(ids), packed segments, an empty cache).
  torch::Tensor mask;
  // Packed segments: [B, N] int64, the first key query i may see (its segment's start); the
  // visible keys are key_starts[b, i]..i (the causal kernel takes this, never an [N, N] mask).
  torch::Tensor key_starts;
  models::KvCache* cache = nullptr;  // keys: the cache->length cached ones, then the N new ones
  int64_t layer = 0;                 // this layer's slot in cache->k / cache->v
  int64_t context = 0;               // the model's context length (the cache never grows past it)
};

// One forward_lm call, checked: the position of every token ([P, N] int64) and the attention
// layers' part. Segments: positions restart at each segment's first token and a token attends to
// the earlier tokens of its own segment only. Cache: positions cache->length.. and the new
// queries attend to every cached key and causally among themselves.
struct LmCall {
  torch::Tensor positions;
  LmAttention attention;
};
// Checks `in` against the model (ids via check_ids, segments' shape and order, the cache's room:
// cache->length + N <= context) and builds the call; `layers` sizes the cache's slots.
LmCall prepare_lm_call(const models::LmInputs& in, int64_t context, int64_t vocab_size, size_t layers,
                       const std::string& family);
// Runs a family's decoder layers in order over x: layer i gets `attention` with .layer = i, as
// run(layer, x, &attention). With `checkpoint` (checkpointing_applies) each layer runs through
// checkpointed() with the trainable tensors outside the layers as shared parameters, and its
// attention part copied by value, since the layer runs again in the backward.
template <typename Layers, typename Run>
torch::Tensor run_decoder_layers(const torch::nn::Module& model, Layers& layers, LmAttention attention,
                                 bool checkpoint, torch::Tensor x, const Run& run) {
  if (!checkpoint) {
    for (size_t i = 0; i < layers.size(); ++i) {
      attention.layer = int64_t(i);
      x = run(*layers[i], x, &attention);
    }
    return x;
  }
  std::vector<const torch::nn::Module*> blocks;
  for (const auto& l : layers) blocks.push_back(l.get());
  const auto shared = trainable_outside(model, blocks);
  for (size_t i = 0; i < layers.size(); ++i) {
    LmAttention a = attention;
    a.layer = int64_t(i);
    auto layer = layers[i].ptr();
    x = checkpointed([layer, a, run](const torch::Tensor& t) { return run(*layer, t, &a); }, x,
                     checkpoint_params(*layer, shared));
  }
  return x;
}
// Positions within each segment for segments [B, N] (non-decreasing along each row).
torch::Tensor segment_positions(const torch::Tensor& segments);
// Each token's segment start (the index of its segment's first token) for segments [B, N].
torch::Tensor segment_key_starts(const torch::Tensor& segments);
// key_starts [B, N] -> bool [B, 1, N, N], true where key j is later than query i or before its start.
torch::Tensor key_starts_mask(const torch::Tensor& key_starts);
// "" or why a cache / segments would change this model's results: an output adapter (prompt
// expert) on one of its Linear layers, whose gate may read the mean of the whole sequence.
std::string incremental_blocker_of(torch::nn::Module& model, const std::string& family);

// The ATen path of HfAttentionBase::attend (bf16 compute, a cache with earlier keys, the kernel
// switched off; bench/bench_attention.cpp times it): q [B, N, H, Dh], k [B, N, KV, Dh] (after the
// rotation), v [B, N, KV*Dh] -> [B, N, H*Dh], as matmul, masked_fill(-inf) of lm's mask (or its
// key starts', or the causal one when `causal`), softmax (sigmoid(S + b) when sigmoid_bias is
// defined), matmul. With lm->cache the keys and values are appended to the cache first.
torch::Tensor attend_aten(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const LmAttention* lm,
                          const torch::Tensor& sigmoid_bias, double scale, bool causal);

// The part every family's attention shares: given the projected q [B, N, heads*Dh] and k, v
// [B, N, kv_heads*Dh], computes the (gated) per-head attention output [B, N, heads*Dh], before
// the output projection. Scores scale 1/sqrt(Dh); softmax (HF's formula) or tunekit's sigmoid
// score; gates, qk_norm and the sigmoid bias as models/attention.cpp defines them
// (docs/methods.md §1–§3), registered here as `gate`, `q_norm`, `k_norm`, `sigmoid_bias`.
class HfAttentionBase : public torch::nn::Module {
 public:
  explicit HfAttentionBase(AttentionShape shape);
  // Names (relative to this module) of the tunekit-only parameters the variant adds.
  std::vector<std::string> variant_parameters() const;
  // Multiply-adds x2 of the core and the gate for n tokens (the projections are the family's).
  double core_flops(double n) const;

  AttentionShape shape;
  Linear gate{nullptr};
  torch::nn::LayerNorm q_norm{nullptr}, k_norm{nullptr};
  torch::Tensor sigmoid_bias;

 protected:
  // Checks the shape and registers the variant's parts; call after the family's projections
  // so the Hugging Face tensors come first in named_parameters().
  void register_variant();
  // x: the attention input (the gate reads it); cos/sin from rotary_cos_sin, or undefined; lm:
  // a forward_lm call's mask and cache (null: forward(ids), causal over the N tokens). Every
  // variant is per token (gates read x, qk_norm each head, the sigmoid bias b = -log n has n =
  // shape.variant.max_seq_len, the model's context, never the number of keys in the call), so a
  // cached step and a whole-sequence forward compute the same function.
  torch::Tensor attend(const torch::Tensor& x, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                       const torch::Tensor& cos = {}, const torch::Tensor& sin = {}, const LmAttention* lm = nullptr);
  // TorchScript: registers the variant's parts on m and returns the lines that turn the
  // variables x, q, k, v (B, N; cos, sin when `rotary`) into `out` [B, N, heads*Dh].
  std::string script_attend(torch::jit::Module& m, const ScriptUnit& unit, bool rotary) const;
};

// An Embedding's options; inside a SkipInit (models/init_guard.h) its weight is allocated unfilled.
torch::nn::EmbeddingOptions embedding_options(int64_t num, int64_t dim);
// The token embedding's lookup, as embedding(ids); with `sparse_grad` its gradient is a sparse
// tensor over the rows of ids (LmInputs::tied_head_grad: only where the head is tied to it).
torch::Tensor embed_ids(torch::nn::Embedding& embedding, const torch::Tensor& ids, bool sparse_grad);
// Hugging Face's initialisation: weights normal(0, std), biases zero.
void init_linear(Linear& linear, double std);
// The number of parameter values (adapters included), and as describe() prints it: "124,439,808".
int64_t parameter_count(const torch::nn::Module& module);
std::string count_string(int64_t n);
// The checks every causal LM's forward makes on its ids: [B, N] int64, 1 <= N <= max_seq_len,
// ids within the vocabulary. `family` names the model in the error.
void check_ids(const torch::Tensor& ids, int64_t max_seq_len, int64_t vocab_size, const std::string& family);
// The TorchScript form of an Embedding (its `weight`; forward(ids) = weight[ids]).
torch::jit::Module embedding_script(const ScriptUnit& unit, const torch::nn::Embedding& embedding);
// A plain TorchScript container (no forward) with the given children, e.g. GPT-2's `mlp`.
torch::jit::Module container_script(const ScriptUnit& unit, const std::string& class_name,
                                    const std::vector<std::pair<std::string, torch::jit::Module>>& children);

}  // namespace tunekit::models::hf
