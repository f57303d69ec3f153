// Choosing the next token from a causal LM's logits, with transformers' rules and order: the
// repetition penalty (RepetitionPenaltyLogitsProcessor), then temperature, top-k and top-p
// (nucleus) before sampling; temperature 0 is greedy (argmax after the penalty). One row of
// logits at a time; src/eval/generate.cpp calls it once per new token.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace tunekit {

struct SamplingOptions {
  double temperature = 1.0;         // 0 = greedy
  int64_t top_k = 0;                // 0 = the whole vocabulary
  double top_p = 1.0;               // 1 = the whole vocabulary
  double repetition_penalty = 1.0;  // 1 = none
};

// A one-line error for an option out of range (temperature < 0, top_k < 0, top_p outside (0, 1],
// repetition_penalty <= 0); `what` prefixes it ("generate").
void check_sampling_options(const SamplingOptions& options, const char* what);

// logits [V] with every id in `seen` (the context so far: prompt and generated) penalised:
// divided by `penalty` where positive, multiplied where negative (CTRL, arXiv 1909.05858, as
// transformers applies it). Ids outside 0..V-1 are ignored.
torch::Tensor apply_repetition_penalty(const torch::Tensor& logits, const std::vector<int64_t>& seen, double penalty);
// -inf for every logit below the k-th largest (ties with it survive); k <= 0 or >= V: unchanged.
torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t k);
// -inf outside the nucleus: the smallest set of most likely tokens whose probabilities sum to at
// least p (always at least one token); p >= 1: unchanged.
torch::Tensor apply_top_p(const torch::Tensor& logits, double p);
// The distribution a sampled token is drawn from: softmax(top_p(top_k(penalised / T))), [V]
// float32, zero outside what survives. Temperature must be > 0.
torch::Tensor sampling_distribution(const torch::Tensor& logits, const std::vector<int64_t>& seen,
                                    const SamplingOptions& options);
// The next token: argmax of the penalised logits when temperature is 0, else a draw from
// sampling_distribution with `generator` (seeded: repeatable).
int64_t next_token(const torch::Tensor& logits, const std::vector<int64_t>& seen, const SamplingOptions& options,
                   torch::Generator& generator);

}  // namespace tunekit
