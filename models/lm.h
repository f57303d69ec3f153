// What a causal language model offers beyond Model::forward(ids): packed rows (several examples
// in one sequence, each attending only to itself, positions restarting at each) and a key/value
// cache (prefill once, then one token per step). The Hugging Face families (models/hf/) implement
// it; callers find it with as_causal_lm() and fall back to forward(ids) where a model has none.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/model.h"

namespace tunekit::models {

// The keys and values of every attention layer for the tokens seen so far, one sequence batch.
// The layout of k[i] / v[i] is the layer's own (the model fills and reads them); `length` is the
// number of cached positions, the position the next token gets. The Hugging Face families keep
// k[i], v[i] as [B, kv_heads, capacity, head_dim] (keys after the rotary embedding, before any
// grouped-query repeat), valid up to `length`; a cache belongs to one model and one batch.
struct KvCache {
  std::vector<torch::Tensor> k, v;
  int64_t length = 0;
  void clear() {
    k.clear();
    v.clear();
    length = 0;
  }
};

struct LmInputs {
  torch::Tensor ids;       // [B, N] int64
  // Optional [B, N] int64, non-decreasing along each row: the packed example each token belongs
  // to. A token attends only to earlier tokens of its own segment, and its position is its index
  // within the segment (0 at each segment's first token). Undefined: one example per row.
  torch::Tensor segments;
  // Optional: the ids continue the cache->length tokens already cached (positions start there);
  // their keys and values are appended. Not combined with segments.
  KvCache* cache = nullptr;
  // The logits of each row's last token only ([B, 1, vocab]): what generation reads, without
  // computing the head over the whole prompt.
  bool last_only = false;
  // The caller's backward also gives the tied head (LmHead::weight, the token embedding) its
  // dense [vocab, d] gradient, as models::causal_lm_loss's fused head does: the embedding lookup
  // then returns its gradient sparse (only the rows of these ids), and autograd adds it into the
  // head's in place, instead of building a zero-filled [vocab, d] gradient of its own and summing
  // the two. Ignored by a model whose head is not tied. Set only with such a caller: alone, the
  // weight's .grad would be a sparse tensor.
  bool tied_head_grad = false;
};

// The output layer of a causal LM as a fused loss reads it (models/chunked_loss.h): logits =
// hidden · weightᵀ + bias. An undefined weight means the head is not a plain product (an adapter
// is attached to it): callers then take forward_lm's logits.
struct LmHead {
  torch::Tensor weight;  // [vocab, d] (the token embedding when the head is tied)
  torch::Tensor bias;    // [vocab] or undefined
};

class CausalLm {
 public:
  virtual ~CausalLm() = default;
  // Logits [B, N, vocab] for the inputs (see LmInputs).
  virtual torch::Tensor forward_lm(const LmInputs& in) = 0;
  // The longest sequence (cache included) the model takes.
  virtual int64_t context_length() const = 0;
  // Why forward_lm cannot take a cache or segments on this model as it now is ("" when it can):
  // a part that reads the whole sequence at once (a prompt expert's gate). Callers fall back to
  // forward(ids) over the whole context; forward_lm throws this reason.
  virtual std::string incremental_blocker() { return ""; }
  // forward_lm without the head: the final hidden states [B, N, d] (after the last norm) that
  // head() turns into the logits. Models without it throw; callers check head() first.
  virtual torch::Tensor forward_hidden(const LmInputs& in) {
    (void)in;
    throw Error("forward_hidden is not implemented by this model");
  }
  virtual LmHead head() { return {}; }
};

inline CausalLm* as_causal_lm(Model& m) { return dynamic_cast<CausalLm*>(&m); }

}  // namespace tunekit::models
