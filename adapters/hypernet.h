// The factor generator HoRA and DoRAN share (docs/methods.md §8, §9): low-rank factors produced by
// two-layer networks from learned seed rows instead of being parameters themselves,
//   A = act(E_A W1_Aᵀ) W2_Aᵀ ∈ R^{r×d_in},   B = act(E_B W1_Bᵀ) W2_Bᵀ ∈ R^{d_out×r},
// with W1_A, W1_B shared by every target of the generator (heads, q/v, or layers, by the
// recipe's `adapter.hypernet.share`) and W2 per target. B's generator runs row by row, so head
// h's block B_h comes from head h's seed rows through the same shared network: the cross-head
// coupling of HoRA. W2_B starts at zero, so B = 0 and the adapted model starts equal to the base.
// Generators are owned once by an AdapterSet registered at the model root (docs/architecture.md);
// adapters hold references that are never registered as children.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "adapters/hypernet_kind.h"

namespace tunekit::adapters {

struct HypernetOptions {
  TORCH_ARG(int64_t, r) = 8;
  TORCH_ARG(int64_t, embed) = 16;   // d_e: width of a seed row
  TORCH_ARG(int64_t, hidden) = 32;  // d_z: width of the shared first layer
  TORCH_ARG(Activation, act) = Activation::Tanh;
  // One E_A and one E_B (per output size) for all targets (HoRA: "one seed for the A factors of
  // Q and V, per-head seeds for B"), or seeds per target (DoRAN, docs/methods.md §9).
  TORCH_ARG(bool, share_seeds) = true;
};

class FactorGeneratorImpl : public torch::nn::Module {
 public:
  explicit FactorGeneratorImpl(HypernetOptions options);
  // Registers a target's second layers (and seeds, unless shared); returns its slot.
  int64_t add_target(const std::string& name, int64_t d_in, int64_t d_out);
  // (A [r, d_in], B [d_out, r]) for a slot; differentiable in every generator parameter.
  std::pair<torch::Tensor, torch::Tensor> factors(int64_t slot) const;
  int64_t targets() const { return static_cast<int64_t>(slots_.size()); }

  HypernetOptions options;
  torch::Tensor W1_A, W1_B;  // [hidden, embed], shared by all targets

 private:
  struct Slot {
    torch::Tensor seed_A, seed_B;  // [r, embed], [d_out, embed]
    torch::Tensor W2_A, W2_B;      // [d_in, hidden], [r, hidden]
  };
  torch::Tensor seed(const std::string& name, std::vector<int64_t> shape);
  torch::Tensor activate(const torch::Tensor& t) const;
  std::vector<Slot> slots_;
  std::map<int64_t, torch::Tensor> shared_seed_B_;  // by d_out
  torch::Tensor shared_seed_A_;
};
TORCH_MODULE(FactorGenerator);

// Owns the generators of one model, by group name ("blocks.0.attn", "model", ...).
class AdapterSetImpl : public torch::nn::Module {
 public:
  std::shared_ptr<FactorGeneratorImpl> generator(const std::string& group, const HypernetOptions& options);
  const std::map<std::string, std::shared_ptr<FactorGeneratorImpl>>& generators() const { return generators_; }

 private:
  std::map<std::string, std::shared_ptr<FactorGeneratorImpl>> generators_;
};
TORCH_MODULE(AdapterSet);

// A module name with dots replaced (module names may not contain '.').
std::string module_key(const std::string& path);

}  // namespace tunekit::adapters
