// Sampling from a causal LM: [bos] + the prompt's ids, then one token at a time (temperature,
// top-k; temperature 0 = greedy) until max_new_tokens or eos. The context is the last
// max_seq_len tokens. Seeded: the same seed gives the same text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "models/model.h"

namespace tunekit {

struct GenerateOptions {
  std::string prompt;
  int64_t max_new_tokens = 50;
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = the whole vocabulary
  uint64_t seed = 0;
};

struct GenerateResult {
  std::string text;                // prompt + continuation, detokenised
  std::string continuation;        // the new tokens alone, detokenised
  std::vector<int64_t> new_ids;
  bool stopped_at_eos = false;
};

GenerateResult generate(models::Model& model, const data::Tokenizer& tok, int64_t max_seq_len, const GenerateOptions& options);

}  // namespace tunekit
