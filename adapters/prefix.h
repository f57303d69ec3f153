// Prefix experts (docs/methods.md §12; 2405.14124, 2410.02200): per attention layer, L learnable
// prompt keys and values P_K, P_V ∈ R^{L×d} are concatenated to the layer's K and V (after the
// projections), so each prompt token is one more expert in every attention row, with gating
// score q·p_K/√d_h. With `reparam` they are generated as [P_K | P_V] = W2 tanh(W1 E) from
// E ∈ R^{L×d'} (one shared network for keys and values, 2410.02200); export folds them to
// plain tensors. Prefix keys are always visible (causal and padding masks do not hide them).
#pragma once
#include <torch/torch.h>

#include "adapters/adapter.h"

namespace tunekit::adapters {

struct PrefixOptions {
  PrefixOptions(int64_t dim, int64_t length) : dim_(dim), length_(length) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, length);        // L prompt tokens
  TORCH_ARG(bool, reparam) = false;  // generate P from E through a shared MLP
  TORCH_ARG(int64_t, embed) = 0;     // d' of E (0 = dim)
  TORCH_ARG(int64_t, hidden) = 64;   // the MLP's width
};

class PrefixImpl : public KeyValuePrefix {
 public:
  explicit PrefixImpl(PrefixOptions options);
  std::pair<torch::Tensor, torch::Tensor> keys_values() override;
  std::string kind() const override { return "prefix"; }

  PrefixOptions options;
  torch::Tensor prefix_k, prefix_v;  // direct: [L, dim] each
  torch::Tensor embedding;           // reparam: E [L, d']
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Prefix);

}  // namespace tunekit::adapters
