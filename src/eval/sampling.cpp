#include "src/eval/sampling.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "util/error.h"

namespace tunekit {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

void check_sampling_options(const SamplingOptions& o, const char* what) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw Error(fmt::format("{}: temperature {} must be >= 0 (0 = greedy)", what, o.temperature));
  if (o.top_k < 0) throw Error(fmt::format("{}: top-k {} must be >= 0 (0 = no limit)", what, o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1))
    throw Error(fmt::format("{}: top-p {} must be in (0, 1] (1 = no limit)", what, o.top_p));
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    throw Error(fmt::format("{}: repetition penalty {} must be > 0 (1 = none)", what, o.repetition_penalty));
}

torch::Tensor apply_repetition_penalty(const torch::Tensor& logits, const std::vector<int64_t>& seen, double penalty) {
  if (penalty == 1.0 || seen.empty()) return logits;
  const int64_t V = logits.size(0);
  std::vector<int64_t> ids;
  ids.reserve(seen.size());
  for (int64_t id : seen)
    if (id >= 0 && id < V) ids.push_back(id);
  if (ids.empty()) return logits;
  auto index = torch::tensor(ids, torch::kLong);
  auto score = logits.index_select(0, index);
  score = torch::where(score < 0, score * penalty, score / penalty);
  return logits.scatter(0, index, score);  // a repeated id writes the same value
}

torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t k) {
  if (k <= 0 || k >= logits.size(0)) return logits;
  auto kth = std::get<0>(logits.topk(k)).select(0, k - 1);
  return logits.masked_fill(logits < kth, kNegInf);
}

torch::Tensor apply_top_p(const torch::Tensor& logits, double p) {
  if (p >= 1.0) return logits;
  auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/true);
  auto probs = torch::softmax(sorted.to(torch::kDouble), 0);
  // Token i (in descending order) is in the nucleus when the tokens before it hold less than p.
  auto before = probs.cumsum(0) - probs;
  auto drop_sorted = before >= p;
  drop_sorted.index_put_({0}, false);  // at least one token
  auto drop = torch::zeros_like(drop_sorted).scatter(0, order, drop_sorted);
  return logits.masked_fill(drop, kNegInf);
}

torch::Tensor sampling_distribution(const torch::Tensor& logits, const std::vector<int64_t>& seen,
                                    const SamplingOptions& o) {
  if (!(o.temperature > 0)) throw Error("sampling: the distribution needs a temperature > 0 (0 is greedy)");
  auto x = apply_repetition_penalty(logits.to(torch::kFloat), seen, o.repetition_penalty) / o.temperature;
  x = apply_top_p(apply_top_k(x, o.top_k), o.top_p);
  return torch::softmax(x, 0);
}

int64_t next_token(const torch::Tensor& logits, const std::vector<int64_t>& seen, const SamplingOptions& o,
                   torch::Generator& generator) {
  if (o.temperature == 0)
    return apply_repetition_penalty(logits, seen, o.repetition_penalty).argmax().item<int64_t>();
  return torch::multinomial(sampling_distribution(logits, seen, o), 1, false, generator).item<int64_t>();
}

}  // namespace tunekit
