// The attention variants a recipe can choose (docs/methods.md §1–§3): score function, sigmoid bias,
// gate position and QK-norm. A plain struct (no LibTorch) so the recipe can carry it.
#pragma once
#include <cstdint>
#include <string>

#include "util/enum_table.h"

namespace tunekit::models {

enum class Score { Softmax, Sigmoid };
// Sigmoid attention's additive bias b: -log(n) with n the configured maximum sequence length
// (2409.04431), a fixed value, or a learnable scalar initialised at -log(n).
enum class SigmoidBias { Auto, Fixed, Learnable };
// Gated attention (2505.06708): a sigmoid gate from the attention input multiplies the SDPA
// output per channel (elementwise, "G1") or per head (headwise), or the value projection.
enum class Gate { None, SdpaElementwise, SdpaHeadwise, Value };

struct AttentionVariant {
  Score score = Score::Softmax;
  SigmoidBias bias_mode = SigmoidBias::Auto;
  double bias_value = 0.0;   // used when bias_mode == Fixed
  int64_t max_seq_len = 0;   // n in b = -log(n); the model fills it in (ViT: patches + 1)
  Gate gate = Gate::None;
  bool gate_bias = false;    // b_g in G = sigma(X W_g + b_g): tunekit's option; the paper's gate has none
  bool qk_norm = false;      // LayerNorm over each head's queries and keys
};

inline constexpr EnumRow<Score> kScoreRows[] = {
    {"softmax", Score::Softmax, "softmax over the keys (the usual attention)"},
    {"sigmoid", Score::Sigmoid, "elementwise sigmoid of the scores plus a bias b (2409.04431)"},
};
inline constexpr EnumRow<SigmoidBias> kSigmoidBiasRows[] = {
    {"auto", SigmoidBias::Auto, "b = -log(n), n the maximum sequence length"},
    {"learnable", SigmoidBias::Learnable, "a learned scalar b, starting at -log(n)"},
    {"fixed", SigmoidBias::Fixed, "b = a number, written in place of a name"},
};
inline constexpr EnumRow<Gate> kGateRows[] = {
    {"none", Gate::None, "no gate"},
    {"sdpa_elementwise", Gate::SdpaElementwise, "sigmoid gate per channel on the attention output (G1)"},
    {"sdpa_headwise", Gate::SdpaHeadwise, "sigmoid gate per head on the attention output"},
    {"value", Gate::Value, "sigmoid gate on the value projection"},
};
constexpr const auto& enum_rows(Score) { return kScoreRows; }
constexpr const auto& enum_rows(SigmoidBias) { return kSigmoidBiasRows; }
constexpr const auto& enum_rows(Gate) { return kGateRows; }
inline std::string to_string(Score s) { return enum_name(s); }
inline std::string to_string(SigmoidBias b) { return enum_name(b); }
inline std::string to_string(Gate g) { return enum_name(g); }

}  // namespace tunekit::models
