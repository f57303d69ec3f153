// The recipe's `lab:` section (tunekit fit): a ground-truth MoE, the fit and the experiment, and
// its parser (called by the recipe parser, src/recipe/recipe.cpp). Plain structs, no LibTorch.
#pragma once
#include <cstdint>
#include <vector>

#include "src/lab/lab_kinds.h"

namespace tunekit {

namespace yaml {
class Section;
}

// Matrices are flat row-major lists (beta: experts x dim, a: experts x dim, or experts x classes
// x dim for multinomial).
struct LabTruthConfig {
  int64_t experts = 2, dim = 1;
  std::vector<double> beta, bias, a, c, sigma;
  std::vector<double> frozen_a;  // contaminated: the pre-trained expert a0, c0, sigma0
  double frozen_c = 0, frozen_sigma = 1;
  lab::Density frozen_density = lab::Density::Gaussian;  // f0; frozen_sigma is its scale
  double approach = 0;   // contaminated: prompt = frozen + (prompt - frozen) * (n / approach_n0)^-approach
  double approach_n0 = 1000;
};

struct LabFitConfig {
  int64_t experts = 2;  // fitted experts (> truth: over-specified)
  lab::FitMethod method = lab::FitMethod::Gradient;
  int64_t restarts = 3, iterations = 200;
  double tolerance = 1e-9;
  double bound = 10.0;  // gradient fits: |β|, |b|, |a|, |c| < bound (0 = unbounded)
};

struct LabConfig {
  bool present = false;
  lab::Experiment experiment = lab::Experiment::Rate;
  lab::Family family = lab::Family::Gaussian;
  lab::GateFn gate = lab::GateFn::Softmax;
  lab::ExpertFn expert = lab::ExpertFn::Linear;  // gaussian, regression: act(aᵀx + c)
  int64_t classes = 0;                           // multinomial
  LabTruthConfig truth;
  LabFitConfig fit;
  std::vector<int64_t> n{1000, 3162, 10000, 31623, 100000};
  int64_t replications = 8;
  double theory_slope = -0.5;  // shown beside the fitted slope
  int64_t max_experts = 5;     // select: fits of 1..max_experts for AIC/BIC; the dendrogram fit uses it
  lab::DendrogramRule dendrogram = lab::DendrogramRule::Authors;  // select: the merge dissimilarity
  // contaminated: the mixing weight does not depend on x (β = 0 in the truth and the fit), the
  // constant-weight model of 2410.12258
  bool constant_weight = false;
};

namespace lab {
// Reads and checks the `lab:` section; `present`: the recipe has one (only then is the truth's
// shape required).
LabConfig parse_lab(yaml::Section section, bool present);
}  // namespace lab

}  // namespace tunekit
