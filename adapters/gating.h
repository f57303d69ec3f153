// The gating family (docs/methods.md §11): one Gate module whose kind selects how expert scores
// s_i(x) = β_iᵀx + b_i become mixture weights. With `reference` (the contaminated-MoE form,
// docs/methods.md §10) a frozen reference expert joins with its logit pinned at 0, and the weights
// cover [reference, expert_1..K]:
//   softmax            w = softmax([0, s])
//   sigmoid            w_i = σ(s_i), w_0 = 1 − Σ w_i   (not normalised, 2405.13997)
//   topk_softmax       softmax over the top_k largest of [0, s], the others 0 (2309.13850)
//   dense_to_sparse    w = softmax([0, act(βᵀx)/T + b])  (2401.13875; act identity/tanh/sigmoid)
//   cosine             s_i = βᵀx / ((‖β_i‖ + τ1)(‖x‖ + τ2 + ε)) / T + b_i, ε ~ |N(0, noise²)| in
//                      training only; w = softmax([0, s])   (perturbed cosine router, 2405.14131)
//   euclidean_sigmoid  s_i = −‖x − c_i‖² / T + b_i, w_i = σ(s_i), w_0 = 1 − Σ w_i   (2602.01466)
// For K = 1 softmax and sigmoid coincide (σ(s) = softmax([0, s])_1), as 2505.18455 notes.
// Without `reference` the weights cover the K experts only (softmax(s), σ(s), ...).
#pragma once
#include <torch/torch.h>

#include <string>

#include "adapters/gate_kind.h"
#include "models/script.h"

namespace tunekit::adapters {

struct GateOptions {
  GateOptions(int64_t in_features, int64_t experts) : in_features_(in_features), experts_(experts) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, experts);  // K trainable experts
  TORCH_ARG(GateKind, kind) = GateKind::Softmax;
  TORCH_ARG(bool, reference) = true;       // a frozen expert with logit pinned at 0
  TORCH_ARG(int64_t, top_k) = 1;           // topk_softmax: entries kept (of K, or K+1 with reference)
  TORCH_ARG(double, temperature) = 1.0;    // dense_to_sparse, cosine, euclidean_sigmoid
  TORCH_ARG(GateActivation, act) = GateActivation::Identity;  // dense_to_sparse
  TORCH_ARG(double, tau1) = 0.01;          // cosine: perturbation of ‖β_i‖
  TORCH_ARG(double, tau2) = 0.01;          // cosine: perturbation of ‖x‖
  TORCH_ARG(double, noise) = 0.0;          // cosine: training-time noise std on ‖x‖'s perturbation
  TORCH_ARG(double, bias_init) = 0.0;      // b_i at the start (negative: start near the reference)
};

class GateImpl : public torch::nn::Module {
 public:
  explicit GateImpl(GateOptions options);
  void reset();
  // x [..., d] -> weights [..., K (+1 with reference, column 0 = reference)]
  torch::Tensor forward(const torch::Tensor& x);
  // The expert scores s [..., K] (before the pinned 0 and the normalisation).
  torch::Tensor scores(const torch::Tensor& x);
  // TorchScript module with forward(x) -> weights (eval mode: no noise).
  torch::jit::Module to_script(const models::ScriptUnit& unit) const;

  GateOptions options;
  torch::Tensor weight, bias;  // β [K, d] (euclidean_sigmoid: the centres c_i), b [K]
};
TORCH_MODULE(Gate);

}  // namespace tunekit::adapters
