// The attention variants a recipe can choose (METHODS.md §1): score function, sigmoid bias,
// gate position and QK-norm. A plain struct (no LibTorch) so the recipe can carry it.
#pragma once
#include <cstdint>
#include <string>

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
  bool qk_norm = false;      // LayerNorm over each head's queries and keys
};

std::string to_string(Score s);
std::string to_string(Gate g);

}  // namespace tunekit::models
