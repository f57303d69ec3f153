// The gating family's choices as plain enums (no LibTorch), shared by the recipe and adapters/gating.h,
// each with its table of names (util/enum_table.h).
#pragma once
#include <string>

#include "util/enum_table.h"

namespace tunekit::adapters {

enum class GateKind { Softmax, Sigmoid, TopkSoftmax, DenseToSparse, Cosine, EuclideanSigmoid, NormalizedSigmoid };
enum class GateActivation { Identity, Tanh, Sigmoid };
enum class GateInput { Token, Mean };  // prompt experts: gate per token, or from the mean token

inline constexpr EnumRow<GateKind> kGateKindRows[] = {
    {"softmax", GateKind::Softmax, "w = softmax([0, s])"},
    {"sigmoid", GateKind::Sigmoid, "w_i = sigmoid(s_i), the reference takes 1 - sum w_i (2405.13997)"},
    {"topk_softmax", GateKind::TopkSoftmax, "softmax over the top_k largest scores, the others 0 (2309.13850)"},
    {"dense_to_sparse", GateKind::DenseToSparse, "softmax([0, act(beta x)/T + b]) (2401.13875)"},
    {"cosine", GateKind::Cosine, "perturbed cosine router, softmax over scaled cosine scores (2405.14131)"},
    {"euclidean_sigmoid", GateKind::EuclideanSigmoid, "s_i = -|x - c_i|^2 / T + b_i, w_i = sigmoid(s_i) (2602.01466)"},
    {"normalized_sigmoid", GateKind::NormalizedSigmoid,
     "w_i = sigmoid(s_i) / sum_j sigmoid(s_j) over [0, s], the modified sigmoid gate (2602.01466, secondary source)"},
};
inline constexpr EnumRow<GateActivation> kGateActivationRows[] = {
    {"identity", GateActivation::Identity, "dense_to_sparse scores as they are"},
    {"tanh", GateActivation::Tanh, "tanh of the dense_to_sparse scores"},
    {"sigmoid", GateActivation::Sigmoid, "sigmoid of the dense_to_sparse scores"},
};
inline constexpr EnumRow<GateInput> kGateInputRows[] = {
    {"token", GateInput::Token, "one gate per token"},
    {"mean", GateInput::Mean, "one gate per sequence, from the mean token"},
};
constexpr const auto& enum_rows(GateKind) { return kGateKindRows; }
constexpr const auto& enum_rows(GateActivation) { return kGateActivationRows; }
constexpr const auto& enum_rows(GateInput) { return kGateInputRows; }
inline std::string to_string(GateKind k) { return enum_name(k); }
inline std::string to_string(GateActivation a) { return enum_name(a); }
inline std::string to_string(GateInput i) { return enum_name(i); }

}  // namespace tunekit::adapters
