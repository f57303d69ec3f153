// The gating family (docs/methods.md §11): one Gate module whose kind selects how expert scores
// s_i(x) = β_iᵀx + b_i become mixture weights. With `reference` (the contaminated-MoE form,
// docs/methods.md §10) a frozen reference expert joins with its logit pinned at 0, and the weights
// cover [reference, expert_1..K]:
//   softmax            w = softmax([0, s])
//   sigmoid            w_i = σ(s_i), w_0 = 1 − Σ w_i   (not normalised, 2405.13997)
//   topk_softmax       softmax over the top_k largest of [0, s], the others 0 (2309.13850)
//   dense_to_sparse    w = softmax([0, act(βᵀx)/T + b])  (2401.13875; act identity/tanh/sigmoid)
//   cosine             the paper's router (proj_dim > 0): the token projected, z = P x, against
//                      expert embeddings e_i: s_i = zᵀe_i / ((‖z‖ + τ1 + ε)(‖e_i‖ + τ2)) / T, no
//                      bias; with proj_dim 0 tunekit's form in input space, s_i = βᵀx /
//                      ((‖x‖ + τ1 + ε)(‖β_i‖ + τ2)) / T + b_i. ε ~ |N(0, noise²)| in training
//                      only; w = softmax([0, s])   (perturbed cosine router, 2405.14131)
//   euclidean_sigmoid  s_i = −‖x − c_i‖² / T + b_i, w_i = σ(s_i), w_0 = 1 − Σ w_i   (2602.01466)
//   normalized_sigmoid w = σ([0, s]) / Σ σ([0, s])   (the modified sigmoid gate of 2602.01466, as a
//                      secondary source describes it: a convex combination, unlike `sigmoid`)
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
  TORCH_ARG(double, tau1) = 0.01;          // cosine: perturbation of the token's norm ‖P x‖ (‖x‖)
  TORCH_ARG(double, tau2) = 0.01;          // cosine: perturbation of the expert's norm ‖e_i‖ (‖β_i‖)
  TORCH_ARG(double, noise) = 0.0;          // cosine: training-time noise std on the token's perturbation
  TORCH_ARG(int64_t, proj_dim) = 8;        // cosine: width of P (the paper's form); 0 = no projection
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
  // β [K, d] (euclidean_sigmoid: the centres c_i; the paper's cosine router: the expert
  // embeddings e_i [K, proj_dim]), b [K] (none for the paper's cosine router), P [proj_dim, d].
  torch::Tensor weight, bias, proj;

 private:
  bool projected() const { return options.kind() == GateKind::Cosine && options.proj_dim() > 0; }
};
TORCH_MODULE(Gate);

}  // namespace tunekit::adapters
