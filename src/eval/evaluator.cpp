#include "src/eval/evaluator.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "adapters/adapter.h"
#include "models/chunked_loss.h"
#include "util/error.h"

namespace tunekit {

namespace {

// Accuracy, per-class accuracy (recall), macro F1 and the positive class's F1 from r.confusion.
void set_class_scores(EvalResult& r) {
  r.per_class_accuracy.clear();
  r.f1 = -1;
  const int64_t k = r.confusion.size(0);
  auto conf = r.confusion.to(torch::kDouble);
  auto correct = conf.diagonal();
  r.accuracy = r.n ? correct.sum().item<double>() / double(r.n) : 0;
  auto row = conf.sum(1), col = conf.sum(0);
  auto recall = correct / row.clamp_min(1), precision = correct / col.clamp_min(1);
  auto f1 = (2 * precision * recall / (precision + recall).clamp_min(1e-12));
  r.macro_f1 = k ? f1.mean().item<double>() : 0;
  for (int64_t c = 0; c < k; ++c) r.per_class_accuracy.push_back(recall[c].item<double>());
  if (k == 2) r.f1 = f1[1].item<double>();
}

}  // namespace

EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size) {
  auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  std::vector<std::pair<std::string, adapters::OutputAdapter*>> prompts;
  for (const auto& item : model.named_modules("", false))
    if (auto* p = dynamic_cast<adapters::OutputAdapter*>(item.value().get())) {
      p->reset_usage();
      std::string host = item.key();
      prompts.emplace_back(host.substr(0, host.rfind(".prompt")), p);
    }
  const int64_t n = data.size();
  const int64_t k = static_cast<int64_t>(data.class_names.size());
  EvalResult r;
  r.n = n;
  r.class_names = data.class_names;
  r.confusion = torch::zeros({k, k}, torch::kLong);
  double loss_sum = 0;
  const bool grouped = data.groups.defined();
  const int64_t n_groups = static_cast<int64_t>(data.group_names.size());
  auto group_n = torch::zeros({std::max<int64_t>(n_groups, 1)}, torch::kLong), group_ok = group_n.clone();
  for (int64_t i = 0; i < n; i += batch_size) {
    int64_t j = std::min(n, i + batch_size);
    auto logits = model.forward(data.inputs.slice(0, i, j));
    auto y = data.labels.slice(0, i, j);
    if (grouped) {
      auto g = data.groups.slice(0, i, j);
      group_n.index_add_(0, g, torch::ones_like(g));
      group_ok.index_add_(0, g, logits.argmax(-1).eq(y).to(torch::kLong));
    }
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    auto pred = logits.argmax(-1);
    r.confusion.view(-1).index_add_(0, y * k + pred, torch::ones_like(y));
  }
  model.train(was_training);
  for (const auto& [host, p] : prompts) r.prompt_usage.emplace_back(host, p->usage());
  r.loss = n ? loss_sum / n : 0;
  set_class_scores(r);
  if (data.groups.defined()) {
    for (int64_t g = 0; g < n_groups; ++g) {
      int64_t gn = group_n[g].item<int64_t>();
      r.groups.push_back({data.group_names[g], gn, gn ? double(group_ok[g].item<int64_t>()) / gn : 0.0});
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& ids, int64_t pad_id) {
  const int64_t V = logits.size(-1);
  auto pred = logits.slice(1, 0, logits.size(1) - 1).reshape({-1, V});
  auto target = ids.slice(1, 1).reshape({-1});
  return torch::nn::functional::cross_entropy(pred, target,
                                              torch::nn::functional::CrossEntropyFuncOptions().ignore_index(pad_id));
}

EvalResult evaluate_lm(models::Model& model, const data::LabelledDataset& data, int64_t batch_size, int64_t pad_id) {
  auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  EvalResult r;
  r.lm = true;
  r.n = data.size();
  double loss_sum = 0;
  int64_t correct = 0;
  const models::LmHead head = models::fused_eval_head(model);
  if (head.weight.defined() && data.inputs.dim() == 2) batch_size = models::fused_eval_rows(batch_size, data.inputs.size(1));
  for (int64_t i = 0; i < r.n; i += batch_size) {
    auto ids = data.inputs.slice(0, i, std::min(r.n, i + batch_size));
    if (head.weight.defined()) {
      models::LmInputs in;
      in.ids = ids;
      const auto stats = models::causal_lm_stats(model, head, in, models::next_token_targets(ids, pad_id));
      loss_sum += stats.loss_sum;
      correct += stats.correct;
      r.tokens += stats.count;
      continue;
    }
    auto logits = model.forward(ids);
    auto target = ids.slice(1, 1).reshape({-1});
    auto pred = logits.slice(1, 0, logits.size(1) - 1).reshape({-1, logits.size(-1)});
    auto valid = target.ne(pad_id);
    loss_sum += torch::nn::functional::cross_entropy(pred, target, torch::nn::functional::CrossEntropyFuncOptions()
                                                                       .ignore_index(pad_id)
                                                                       .reduction(torch::kSum))
                    .item<double>();
    correct += pred.argmax(-1).eq(target).logical_and(valid).sum().item<int64_t>();
    r.tokens += valid.sum().item<int64_t>();
  }
  model.train(was_training);
  r.loss = r.tokens ? loss_sum / r.tokens : 0;
  r.perplexity = std::exp(r.loss);
  r.accuracy = r.tokens ? double(correct) / r.tokens : 0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

namespace {

// A response (chat / instruction data) evaluation, as `tunekit eval` prints it.
std::string response_report(const EvalResult& r) {
  std::string s = fmt::format("rows {}  response tokens {}  response loss {:.4f}  perplexity {:.2f}  token accuracy {:.4f}\n",
                              r.n, r.tokens, r.loss, r.perplexity, r.accuracy);
  if (r.exact_match >= 0) {
    s += fmt::format("exact match {:.4f} ({} rows", r.exact_match, r.answer_rows);
    if (r.text_match >= 0) s += fmt::format("; text match {:.4f}", r.text_match);
    if (r.long_answers > 0) s += fmt::format("; {} rows with longer answers left out", r.long_answers);
    s += ")\n";
  } else {
    s += "exact match: not measured (" + r.exact_match_note + ")\n";
  }
  const double t = r.loss_seconds > 0 ? r.loss_seconds : 1;
  s += fmt::format("scoring: {:.0f} tokens/s ({:.0f} trained tokens/s); {:.1f} s in all\n", r.positions / t,
                   r.tokens / t, r.seconds);
  return s;
}

nlohmann::json response_json(const EvalResult& r) {
  const double t = r.loss_seconds > 0 ? r.loss_seconds : 1;
  nlohmann::json j{{"rows", r.n},
                   {"tokens", r.tokens},
                   {"positions", r.positions},
                   {"loss", r.loss},
                   {"perplexity", r.perplexity},
                   {"accuracy", r.accuracy},
                   {"tokens_per_second", r.positions / t},
                   {"trained_tokens_per_second", r.tokens / t},
                   {"seconds", r.seconds}};
  if (r.exact_match >= 0) {
    j["exact_match"] = r.exact_match;
    j["exact_match_rows"] = r.answer_rows;
    j["long_answers"] = r.long_answers;
    if (r.text_match >= 0) j["text_match"] = r.text_match;
  } else {
    j["exact_match"] = nullptr;
    j["exact_match_note"] = r.exact_match_note;
  }
  return j;
}

}  // namespace

std::string EvalResult::report() const {
  if (response) return response_report(*this);
  if (lm)
    return fmt::format("sequences {}  tokens {}  loss {:.4f}  perplexity {:.2f}  next-token accuracy {:.4f}\n", n, tokens,
                       loss, perplexity, accuracy);
  std::string s = fmt::format("samples {}  loss {:.4f}  accuracy {:.4f}  macro-F1 {:.4f}\n", n, loss, accuracy, macro_f1);
  if (f1 >= 0) s += fmt::format("F1 ({} as positive) {:.4f}\n", class_names.size() > 1 ? class_names[1] : "1", f1);
  s += "per-class accuracy:\n";
  for (size_t c = 0; c < class_names.size(); ++c)
    s += fmt::format("  {:>2} {:<12} {:.4f}\n", c, class_names[c], per_class_accuracy[c]);
  s += "confusion matrix (rows: true, columns: predicted):\n      ";
  const int64_t k = confusion.size(0);
  for (int64_t c = 0; c < k; ++c) s += fmt::format("{:>6}", c);
  s += "\n";
  for (int64_t i = 0; i < k; ++i) {
    s += fmt::format("  {:>2}  ", i);
    for (int64_t j = 0; j < k; ++j) s += fmt::format("{:>6}", confusion[i][j].item<int64_t>());
    s += "\n";
  }
  if (!groups.empty()) {
    s += "per-group accuracy:\n";
    for (const auto& g : groups) s += fmt::format("  {:<14} {:>6}  {:.4f}\n", g.name, g.n, g.accuracy);
  }
  if (!prompt_usage.empty()) {
    s += "prompt experts (mean gate weight on the trainable experts):\n";
    for (const auto& [host, u] : prompt_usage) s += fmt::format("  {:<20} {:.4f}\n", host, u);
  }
  return s;
}

double EvalResult::mean_prompt_usage() const {
  double sum = 0;
  for (const auto& [host, u] : prompt_usage) sum += u;
  return prompt_usage.empty() ? 0.0 : sum / prompt_usage.size();
}

std::string EvalResult::json() const {
  if (response) return response_json(*this).dump();
  if (lm)
    return nlohmann::json{{"sequences", n},     {"tokens", tokens},          {"loss", loss},
                          {"perplexity", perplexity}, {"accuracy", accuracy}, {"seconds", seconds}}
        .dump();
  nlohmann::json conf = nlohmann::json::array();
  for (int64_t i = 0; i < confusion.size(0); ++i) {
    std::vector<int64_t> row;
    for (int64_t j = 0; j < confusion.size(1); ++j) row.push_back(confusion[i][j].item<int64_t>());
    conf.push_back(row);
  }
  nlohmann::json j{{"samples", n},       {"loss", loss},
                   {"accuracy", accuracy}, {"macro_f1", macro_f1},
                   {"per_class_accuracy", per_class_accuracy}, {"class_names", class_names},
                   {"confusion", conf},  {"seconds", seconds}};
  if (f1 >= 0) j["f1"] = f1;
  if (!groups.empty()) {
    nlohmann::json g = nlohmann::json::object();
    for (const auto& x : groups) g[x.name] = {{"samples", x.n}, {"accuracy", x.accuracy}};
    j["group_accuracy"] = g;
  }
  if (!prompt_usage.empty()) {
    nlohmann::json u = nlohmann::json::object();
    for (const auto& [host, v] : prompt_usage) u[host] = v;
    j["prompt_usage"] = u;
  }
  return j.dump();
}

// --- an evaluation split among ranks ---

namespace {

// eval_counts' fixed head; the confusion matrix, groups and prompt usage follow.
enum CountSlot : int64_t {
  kParts, kRows, kLossSum, kCorrect, kTokens, kPositions, kMeasuredParts, kAnswerRows, kMatched, kTextParts,
  kTextMatched, kLongAnswers, kGenerated, kSeconds, kLossSeconds, kHead
};

// What a part's loss and accuracy are averaged over: tokens for a language model, else rows.
double denominator(const EvalResult& r) { return r.lm ? double(r.tokens) : double(r.n); }

}  // namespace

data::LabelledDataset part_of(const data::LabelledDataset& data, int rank, int ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks)
    throw Error(fmt::format("evaluation part {} of {}: no such part", rank, ranks));
  if (ranks == 1) return data;
  const int64_t n = data.size();
  return data.subset(torch::arange(n * rank / ranks, n * (rank + 1) / ranks, torch::kLong));
}

torch::Tensor eval_counts(const EvalResult& r) {
  const int64_t k = r.confusion.defined() ? r.confusion.numel() : 0;
  const int64_t groups = int64_t(r.groups.size()), prompts = int64_t(r.prompt_usage.size());
  auto t = torch::zeros({kHead + k + 2 * groups + prompts}, torch::kDouble);
  auto c = t.accessor<double, 1>();
  const double d = denominator(r);
  c[kParts] = 1;
  c[kRows] = double(r.n);
  c[kLossSum] = d > 0 ? r.loss * d : 0;
  c[kCorrect] = d > 0 ? std::round(r.accuracy * d) : 0;
  c[kTokens] = double(r.tokens);
  c[kPositions] = double(r.positions);
  if (r.exact_match >= 0) {
    c[kMeasuredParts] = 1;
    c[kAnswerRows] = double(r.answer_rows);
    c[kMatched] = std::round(r.exact_match * double(r.answer_rows));
    if (r.text_match >= 0) {
      c[kTextParts] = 1;
      c[kTextMatched] = std::round(r.text_match * double(r.answer_rows));
    }
  }
  c[kLongAnswers] = double(r.long_answers);
  c[kGenerated] = double(r.generated_tokens);
  c[kSeconds] = r.seconds;
  c[kLossSeconds] = r.loss_seconds;
  if (k > 0) t.slice(0, kHead, kHead + k).copy_(r.confusion.reshape({-1}).to(torch::kDouble));
  for (int64_t g = 0; g < groups; ++g) {
    const auto& s = r.groups[size_t(g)];
    c[kHead + k + 2 * g] = double(s.n);
    c[kHead + k + 2 * g + 1] = std::round(s.accuracy * double(s.n));
  }
  for (int64_t p = 0; p < prompts; ++p)  // a part without rows used no expert (its usage may be 0/0)
    c[kHead + k + 2 * groups + p] = r.n > 0 ? r.prompt_usage[size_t(p)].second * double(r.n) : 0.0;
  return t;
}

EvalResult eval_from_counts(const EvalResult& part, const torch::Tensor& counts) {
  const torch::Tensor expected = eval_counts(part);
  if (counts.dim() != 1 || counts.numel() != expected.numel())
    throw Error(fmt::format("evaluation parts: {} summed counts, this part has {} (the ranks' splits or models differ)",
                            counts.numel(), expected.numel()));
  auto t = counts.to(torch::kDouble).contiguous();
  auto c = t.accessor<double, 1>();
  EvalResult r = part;
  const auto whole = [&](int64_t slot) { return static_cast<int64_t>(std::llround(c[slot])); };
  const int64_t parts = whole(kParts);
  r.n = whole(kRows);
  r.tokens = whole(kTokens);
  r.positions = whole(kPositions);
  r.long_answers = whole(kLongAnswers);
  r.generated_tokens = whole(kGenerated);
  r.seconds = c[kSeconds] / double(std::max<int64_t>(parts, 1));  // the parts ran side by side: their mean
  r.loss_seconds = c[kLossSeconds] / double(std::max<int64_t>(parts, 1));
  if (r.response && r.tokens == 0)
    throw Error(fmt::format("response evaluation: none of the split's {} rows has a trained (response) token", r.n));
  const double d = denominator(r);
  r.loss = d > 0 ? c[kLossSum] / d : 0;
  r.accuracy = d > 0 ? c[kCorrect] / d : 0;
  if (r.lm) r.perplexity = std::exp(r.loss);
  const int64_t k = part.confusion.defined() ? part.confusion.numel() : 0;
  if (k > 0) {
    r.confusion = t.slice(0, kHead, kHead + k).round().to(torch::kLong).view(part.confusion.sizes()).clone();
    set_class_scores(r);
  }
  const int64_t groups = int64_t(part.groups.size());
  for (int64_t g = 0; g < groups; ++g) {
    auto& s = r.groups[size_t(g)];
    s.n = whole(kHead + k + 2 * g);
    s.accuracy = s.n ? c[kHead + k + 2 * g + 1] / double(s.n) : 0.0;
  }
  for (size_t p = 0; p < part.prompt_usage.size(); ++p)
    r.prompt_usage[p].second = r.n ? c[kHead + k + 2 * groups + int64_t(p)] / double(r.n) : 0.0;
  r.exact_match = r.text_match = -1;
  r.answer_rows = 0;
  const int64_t measured = whole(kMeasuredParts);
  if (measured == parts && measured > 0) {
    r.answer_rows = whole(kAnswerRows);
    r.exact_match = r.answer_rows ? c[kMatched] / double(r.answer_rows) : 0.0;
    if (whole(kTextParts) == parts) r.text_match = r.answer_rows ? c[kTextMatched] / double(r.answer_rows) : 0.0;
    r.exact_match_note.clear();
  } else if (measured > 0) {
    r.exact_match_note = fmt::format("measured on {} of the {} ranks' parts only", measured, parts);
  }
  return r;
}

}  // namespace tunekit
