// The estimation lab's choices (lab.experiment, family, gate, expert, fit.method) as plain enums
// with their tables (util/enum_table.h), shared by the lab's recipe section and its model (moe.h).
#pragma once
#include <string>

#include "util/enum_table.h"

namespace tunekit::lab {

enum class Experiment { Rate, Select };
enum class Family { Gaussian, Regression, Contaminated, Multinomial };
enum class GateFn { Softmax, Sigmoid };
// Expert networks h_i(x) = act(a_iᵀx + c_i) (gaussian and regression families): linear, or a
// one-unit feed-forward network (the strongly identifiable experts of 2405.13997).
enum class ExpertFn { Linear, Relu, Gelu, Tanh };
enum class FitMethod { Gradient, EM };
// The contaminated family's frozen density f0 around h0(x): Gaussian (f0 in the prompt's family:
// not distinguishable) or Laplace (outside it: distinguishable, 2505.18455's experiment).
enum class Density { Gaussian, Laplace };
// The dendrogram's merge dissimilarity and merge (docs/methods.md §15): the authors' code of
// 2510.12744 (expert parameters only, σ² averaged) or the finite-mixture form of 2403.01684 over
// the whole atom (σ averaged), tunekit's earlier default.
enum class DendrogramRule { Authors, Mixture };

inline constexpr EnumRow<Experiment> kExperimentRows[] = {
    {"rate", Experiment::Rate, "Voronoi loss against n (log-log) and its fitted slope"},
    {"select", Experiment::Select, "choose the number of experts: dendrogram vs AIC/BIC"},
};
inline constexpr EnumRow<Family> kFamilyRows[] = {
    {"gaussian", Family::Gaussian, "Gaussian MoE regression, one variance per expert"},
    {"regression", Family::Regression, "deterministic MoE plus Gaussian noise (2405.13997)"},
    {"contaminated", Family::Contaminated, "a frozen expert mixed with one prompt expert (2505.18455)"},
    {"multinomial", Family::Multinomial, "multinomial-logistic MoE over lab.classes classes"},
};
inline constexpr EnumRow<GateFn> kGateFnRows[] = {
    {"softmax", GateFn::Softmax, "g = softmax(beta x + b)"},
    {"sigmoid", GateFn::Sigmoid, "g_i = sigmoid(beta_i x + b_i)"},
};
inline constexpr EnumRow<ExpertFn> kExpertFnRows[] = {
    {"linear", ExpertFn::Linear, "h = a x + c"},
    {"relu", ExpertFn::Relu, "h = relu(a x + c)"},
    {"gelu", ExpertFn::Gelu, "h = gelu(a x + c)"},
    {"tanh", ExpertFn::Tanh, "h = tanh(a x + c)"},
};
inline constexpr EnumRow<FitMethod> kFitMethodRows[] = {
    {"gradient", FitMethod::Gradient, "maximum likelihood by L-BFGS"},
    {"em", FitMethod::EM, "expectation-maximisation (linear experts; gaussian, contaminated)"},
};
inline constexpr EnumRow<Density> kDensityRows[] = {
    {"gaussian", Density::Gaussian, "f0 = N(h0(x), frozen_sigma^2), the prompt expert's family"},
    {"laplace", Density::Laplace, "f0 = Laplace(h0(x), scale frozen_sigma): distinguishable from the prompt"},
};
inline constexpr EnumRow<DendrogramRule> kDendrogramRuleRows[] = {
    {"authors", DendrogramRule::Authors,
     "pi_i pi_j/(pi_i+pi_j) ((c_i-c_j)^2 + sqrt(|a_i-a_j|^2 + (s2_i-s2_j)^2)), sigma^2 averaged (2510.12744's code)"},
    {"mixture", DendrogramRule::Mixture, "pi_i pi_j/(pi_i+pi_j) |theta_i-theta_j|^2 over the whole atom (2403.01684)"},
};
constexpr const auto& enum_rows(Experiment) { return kExperimentRows; }
constexpr const auto& enum_rows(Family) { return kFamilyRows; }
constexpr const auto& enum_rows(GateFn) { return kGateFnRows; }
constexpr const auto& enum_rows(ExpertFn) { return kExpertFnRows; }
constexpr const auto& enum_rows(FitMethod) { return kFitMethodRows; }
constexpr const auto& enum_rows(DendrogramRule) { return kDendrogramRuleRows; }
constexpr const auto& enum_rows(Density) { return kDensityRows; }
inline std::string to_string(Experiment e) { return enum_name(e); }
inline std::string to_string(Family f) { return enum_name(f); }
inline std::string to_string(GateFn g) { return enum_name(g); }
inline std::string to_string(ExpertFn e) { return enum_name(e); }
inline std::string to_string(Density d) { return enum_name(d); }
inline std::string to_string(FitMethod m) { return enum_name(m); }
inline std::string to_string(DendrogramRule r) { return enum_name(r); }

}  // namespace tunekit::lab
