// The estimation lab's model family (docs/methods.md §13–§15), in double precision:
//   gaussian     p(y|x) = Σ_i g_i(x) N(y; a_iᵀx + c_i, σ_i²)            (Gaussian MoE regression)
//   regression   y = Σ_i g_i(x) (a_iᵀx + c_i) + ε, ε ~ N(0, σ²)           (deterministic MoE, 2405.13997)
//   contaminated p(y|x) = (1 − g(x)) f0(y; h0(x), σ0) + g(x) N(y; h(x), σ²), h0 = act(a0ᵀx + c0),
//                h = act(aᵀx + c), g(x) = σ(βᵀx + b); f0 Gaussian N(h0, σ0²) or Laplace with
//                scale σ0; the first expert is frozen (known)   (2505.18455)
//   multinomial  p(y=m|x) = Σ_i g_i(x) softmax_m(A_i x + c_i)             (multinomial-logistic MoE)
// Gates: softmax g = softmax(βx + b); sigmoid: g_i = σ(β_iᵀx + b_i), used as is in `regression`
// (2405.13997) and normalised over experts where the model is a mixture density.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "src/lab/lab_kinds.h"

namespace tunekit::lab {

struct MoE {
  Family family = Family::Gaussian;
  GateFn gate = GateFn::Softmax;
  ExpertFn expert = ExpertFn::Linear;
  int64_t classes = 0;  // multinomial
  // Trainable: beta [k, d], bias [k], a [k, d] (multinomial [k, C, d]), c [k] ([k, C]),
  // log_sigma [k] (regression and contaminated: [1]).
  torch::Tensor beta, bias, a, c, log_sigma;
  // contaminated: the frozen expert a0 [d], c0 [], sigma0 [].
  torch::Tensor a0, c0, sigma0;
  Density frozen_density = Density::Gaussian;
  // contaminated: g = σ(b), β fixed at zero and not fitted (the constant-weight model, 2410.12258).
  bool constant_weight = false;

  int64_t experts() const { return bias.size(0); }
  int64_t dim() const { return beta.size(1); }
  std::vector<torch::Tensor> trainable() const {
    if (constant_weight) return {bias, a, c, log_sigma};
    return {beta, bias, a, c, log_sigma};
  }
  int64_t num_parameters() const;  // free parameters (softmax gates: one gate's worth fewer)
  MoE clone() const;
};

// Per-sample log-likelihood log p(y_i | x_i), [n]. x [n, d] double; y [n] double (multinomial: int64).
torch::Tensor log_likelihood(const MoE& m, const torch::Tensor& x, const torch::Tensor& y);
// Expert outputs h_i(x) [n, k] (gaussian, regression).
torch::Tensor expert_outputs(const MoE& m, const torch::Tensor& x);
// Gate weights [n, k] (contaminated: [n, 1], the prompt's weight).
torch::Tensor gate_weights(const MoE& m, const torch::Tensor& x);

struct Sample {
  torch::Tensor x, y, z;  // z: the expert each y was drawn from (-1 for regression; 0 = frozen, 1 = prompt)
};
Sample sample(const MoE& truth, int64_t n, uint64_t seed);

// A random starting point of `family` with k experts for data (x, y), seeded.
MoE random_init(Family family, GateFn gate, int64_t k, const torch::Tensor& x, const torch::Tensor& y, int64_t classes,
                const MoE* frozen_from, uint64_t seed);

struct FitOptions {
  int64_t experts = 2;
  FitMethod method = FitMethod::Gradient;
  int64_t restarts = 3;
  int64_t iterations = 200;  // L-BFGS iterations (gradient) or EM steps
  double tolerance = 1e-9;   // relative NLL change that ends EM / L-BFGS
  // Gradient fits: gate and expert parameters stay in (−bound, bound) (θ = bound·tanh(u)): the
  // compact parameter space the theory assumes; without it over-specified fits can drift to
  // infinity along flat directions of the likelihood. 0 = unbounded.
  double bound = 10.0;
};
struct FitResult {
  MoE model;
  double nll = 0;  // mean negative log-likelihood at the fit
  int restart = 0;  // which restart won
};
// Maximum likelihood over the family with `experts` experts (contaminated: the frozen expert is
// copied from `truth_shape`, only the prompt and gate are fitted). The best of the restarts.
FitResult fit(const MoE& truth_shape, const torch::Tensor& x, const torch::Tensor& y, const FitOptions& options,
              uint64_t seed);

// Atoms for losses and dendrograms: weights [k] and parameter vectors [k, p], gates centred
// where the family is only identified up to a translation (softmax: b − logsumexp(b),
// β − Σ π_i β_i; multinomial experts centred over classes). Weights: exp(b) (softmax, after
// centring: π) or σ(b) (sigmoid).
struct Atoms {
  torch::Tensor weight, theta;
  std::vector<int64_t> blocks;  // widths of θ's parts (β, a, c[, σ]): the loss takes a norm per part
};
Atoms atoms(const MoE& m);

// The gaussian-family model whose atoms are (weight, theta) (the inverse of atoms() for a
// softmax gate: bias = log weight); used to score merged mixing measures.
MoE gaussian_from_atoms(const torch::Tensor& weight, const torch::Tensor& theta, int64_t dim);

// The Voronoi loss D(Ĝ, G*) of docs/methods.md §14 (exponent 1 for cells with one fitted atom, 2 for
// cells with several; empty cells contribute their true weight).
double voronoi_loss(const MoE& fitted, const MoE& truth);

}  // namespace tunekit::lab
