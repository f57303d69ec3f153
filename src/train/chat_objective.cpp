#include "src/train/chat_objective.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "models/chunked_loss.h"
#include "models/lm.h"
#include "src/eval/generate.h"
#include "util/error.h"

namespace tunekit {

namespace F = torch::nn::functional;

namespace {

// Targets [B * (N - 1)] of the next-token predictions of a batch: labels[:, 1:], with -100 where
// a target is in another packed segment than the position predicting it.
torch::Tensor shifted_targets(const torch::Tensor& labels, const torch::Tensor& segments) {
  const int64_t n = labels.size(1);
  auto target = labels.slice(1, 1);
  if (segments.defined()) {
    auto same = segments.slice(1, 1).eq(segments.slice(1, 0, n - 1));
    target = target.masked_fill(same.logical_not(), kNotTrained);
  }
  return target.reshape({-1});
}

// Logits [B * (N - 1), V] of the positions that predict a next token.
torch::Tensor predicting_logits(const torch::Tensor& logits) {
  return logits.slice(1, 0, logits.size(1) - 1).reshape({-1, logits.size(-1)});
}

// Refuses a target outside the vocabulary (LibTorch would stop with an index error deep inside).
void check_targets(const torch::Tensor& target, const torch::Tensor& trained, int64_t vocab) {
  auto bad = trained.logical_and(target.lt(0).logical_or(target.ge(vocab)));
  if (bad.any().item<bool>())
    throw Error(fmt::format("labels: token id {} is outside the model's vocabulary of {} (trained labels must be "
                            "ids in 0..{}, untrained ones {})",
                            target.masked_select(bad)[0].item<int64_t>(), vocab, vocab - 1, kNotTrained));
}

// shifted_targets laid out per position [B, N] (the last position predicts nothing), checked
// against the vocabulary: the targets models::causal_lm_loss and chunked_lm_stats take.
torch::Tensor position_targets(const torch::Tensor& labels, const torch::Tensor& segments, int64_t vocab) {
  auto target = shifted_targets(labels, segments);
  check_targets(target, target.ne(kNotTrained), vocab);
  auto full = torch::full_like(labels, kNotTrained);
  full.slice(1, 0, labels.size(1) - 1).copy_(target.view({labels.size(0), labels.size(1) - 1}));
  return full;
}

std::string shape_of(const torch::Tensor& t) {
  if (!t.defined()) return "none";
  std::string s;
  for (int64_t d : t.sizes()) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return "[" + s + "]";
}

void check_rows(const data::LabelledDataset& split) {
  if (!split.labels.defined() || !split.inputs.defined() || split.labels.dim() != 2 ||
      !split.labels.sizes().equals(split.inputs.sizes()))
    throw Error(fmt::format("response loss: the data's labels must be token ids [N, L] beside inputs [N, L] (got "
                            "labels {} and inputs {}): data.dataset instruct or chat makes them",
                            shape_of(split.labels), shape_of(split.inputs)));
}

// Whitespace runs collapsed to one space, ends trimmed, ASCII letters lower-cased.
std::string normalised(const std::string& s) {
  std::string out;
  bool space = false;
  for (unsigned char c : s) {
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(c));
  }
  return out;
}

std::vector<int64_t> ids_of(const torch::Tensor& row, int64_t begin, int64_t end) {
  auto part = row.slice(0, begin, end).contiguous();
  return std::vector<int64_t>(part.data_ptr<int64_t>(), part.data_ptr<int64_t>() + part.numel());
}

}  // namespace

torch::Tensor lm_logits(models::Model& model, const torch::Tensor& ids, const torch::Tensor& segments) {
  if (!segments.defined()) return model.forward(ids);
  models::CausalLm* lm = models::as_causal_lm(model);
  if (!lm)
    throw Error(fmt::format("packed rows (data.packing: true) need a model with block-causal attention (a Hugging Face "
                            "causal LM family); {} has none: set data.packing: false",
                            model.describe()));
  models::LmInputs in;
  in.ids = ids;
  in.segments = segments;
  return lm->forward_lm(in);
}

ResponseLossSum response_loss_sum(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& segments) {
  auto target = shifted_targets(labels, segments);
  auto trained = target.ne(kNotTrained);
  check_targets(target, trained, logits.size(-1));
  auto pred = predicting_logits(logits);
  auto sum = F::cross_entropy(pred, target, F::CrossEntropyFuncOptions().ignore_index(kNotTrained).reduction(torch::kSum));
  return {sum, trained.sum()};
}

torch::Tensor response_loss(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& segments) {
  const ResponseLossSum s = response_loss_sum(logits, labels, segments);
  const int64_t count = s.count.item<int64_t>();
  return count > 0 ? s.sum / double(count) : s.sum * 0.0;  // no trained target: a zero loss, in the graph
}

std::optional<AnswerSpan> last_trained_run(const torch::Tensor& labels_row) {
  auto row = labels_row.contiguous();
  const int64_t* y = row.data_ptr<int64_t>();
  int64_t end = row.numel();
  while (end > 0 && y[end - 1] == kNotTrained) --end;
  if (end == 0) return std::nullopt;
  int64_t start = end - 1;
  while (start > 0 && y[start - 1] != kNotTrained) --start;
  return AnswerSpan{start, end};
}

GreedyAnswer greedy_answer(models::Model& model, const std::vector<int64_t>& prompt, int64_t end_id,
                           const std::vector<int64_t>& stop_ids, int64_t max_new, int64_t max_context) {
  std::vector<int64_t> stops = stop_ids;
  stops.push_back(end_id);
  const GreedyIds g = greedy_ids(model, prompt, stops, max_new, max_context);
  return {g.ids, g.ended};
}

namespace {

// The rows of `split` whose last trained run is a short answer after a non-empty prompt; counts
// the others in `r.long_answers`.
std::vector<std::pair<int64_t, AnswerSpan>> short_answer_rows(const data::LabelledDataset& split, ExactMatchResult& r) {
  std::vector<std::pair<int64_t, AnswerSpan>> rows;
  for (int64_t i = 0; i < split.size(); ++i) {
    const auto span = last_trained_run(split.labels[i]);
    if (span && span->start >= 1 && span->answer_tokens() <= kMaxAnswerTokens)
      rows.emplace_back(i, *span);
    else
      ++r.long_answers;
  }
  return rows;
}

}  // namespace

ExactMatchResult exact_match(models::Model& model, const data::LabelledDataset& split, const ExactMatchOptions& o) {
  ExactMatchResult r;
  check_rows(split);
  const int64_t n = split.size();
  if (split.segments.defined()) {
    r.why_not = "the split is packed (several examples per row)";
    return r;
  }
  auto rows = short_answer_rows(split, r);
  if (n == 0 || double(rows.size()) < kMinShortAnswerFraction * double(n)) {
    r.why_not = fmt::format("{} of {} rows have no answer of at most {} tokens", r.long_answers, n, kMaxAnswerTokens);
    return r;
  }
  r.measured = true;
  if (o.max_rows > 0 && int64_t(rows.size()) > o.max_rows) rows.resize(o.max_rows);
  if (o.parts < 1 || o.part < 0 || o.part >= o.parts)
    throw Error(fmt::format("exact match: part {} of {}: no such part", o.part, o.parts));
  if (o.parts > 1) {
    decltype(rows) mine;
    for (size_t j = size_t(o.part); j < rows.size(); j += size_t(o.parts)) mine.push_back(rows[j]);
    rows.swap(mine);
    if (o.part != 0) r.long_answers = 0;
  }
  std::vector<int64_t> stop_ids;
  if (o.tokenizer) {
    stop_ids = o.tokenizer->special().stop;
    if (o.tokenizer->eos_id() >= 0) stop_ids.push_back(o.tokenizer->eos_id());
  }
  bool was_training = model.is_training();
  model.eval();
  const auto ids = split.inputs.contiguous();
  const auto labels = split.labels.contiguous();
  for (const auto& [i, span] : rows) {
    const auto prompt = ids_of(ids[i], 0, span.start);
    const auto reference = ids_of(labels[i], span.start, span.end - 1);
    const int64_t end_id = labels[i][span.end - 1].item<int64_t>();
    const GreedyAnswer answer =
        greedy_answer(model, prompt, end_id, stop_ids, int64_t(reference.size()) + kAnswerSlack, o.max_context);
    ++r.rows;
    r.generated_tokens += int64_t(answer.ids.size());
    if (answer.ended && answer.ids == reference) ++r.matched;
    if (o.tokenizer && answer.ended &&
        normalised(o.tokenizer->decode(answer.ids, true)) == normalised(o.tokenizer->decode(reference, true)))
      ++r.text_matched;
  }
  model.train(was_training);
  return r;
}

// --- the objective ---

torch::Tensor ResponseObjective::loss(const torch::Tensor& output, const torch::Tensor& /*inputs*/,
                                      const torch::Tensor& labels) const {
  return response_loss(output, labels);
}

torch::Tensor ResponseObjective::batch_loss(models::Model& model, const data::LabelledDataset& split,
                                            const torch::Tensor& idx) const {
  check_rows(split);
  auto ids = split.inputs.index_select(0, idx);
  auto segments = split.segments.defined() ? split.segments.index_select(0, idx) : torch::Tensor();
  auto labels = split.labels.index_select(0, idx);
  models::CausalLm* lm = models::as_causal_lm(model);
  const models::LmHead head = lm && loss_chunk > 0 ? lm->head() : models::LmHead{};
  if (!head.weight.defined()) return response_loss(lm_logits(model, ids, segments), labels, segments);
  // The fused head + loss (models/chunked_loss.h) on the same targets.
  auto full = position_targets(labels, segments, head.weight.size(0));
  models::LmInputs in;
  in.ids = ids;
  in.segments = segments;
  return models::causal_lm_loss(model, in, full, loss_chunk);
}

int64_t ResponseObjective::loss_count(const data::LabelledDataset& split, const torch::Tensor& idx) const {
  check_rows(split);
  auto segments = split.segments.defined() ? split.segments.index_select(0, idx) : torch::Tensor();
  return shifted_targets(split.labels.index_select(0, idx), segments).ne(kNotTrained).sum().item<int64_t>();
}

namespace {

// The fused head's evaluation of one batch (models/chunked_loss.h: no [tokens, vocab] logits);
// false when `head` is undefined (the model has no plain head).
bool fused_scores(models::Model& model, const models::LmHead& head, const torch::Tensor& ids,
                  const torch::Tensor& segments, const torch::Tensor& labels, EvalResult& r, double& loss_sum,
                  int64_t& correct) {
  if (!head.weight.defined()) return false;
  models::LmInputs in;
  in.ids = ids;
  in.segments = segments;
  const auto stats =
      models::causal_lm_stats(model, head, in, position_targets(labels, segments, head.weight.size(0)));
  loss_sum += stats.loss_sum;
  correct += stats.correct;
  r.tokens += stats.count;
  r.positions += ids.numel();
  return true;
}

// Response loss, perplexity and token accuracy of `data` into `r`.
// A part of a split (evaluate_part) may hold no trained token: only a whole split must (`whole`).
void score_tokens(models::Model& model, const data::LabelledDataset& data, int64_t batch_size, EvalResult& r,
                  bool whole) {
  auto t0 = std::chrono::steady_clock::now();
  double loss_sum = 0;
  int64_t correct = 0;
  const models::LmHead head = models::fused_eval_head(model);
  if (head.weight.defined()) batch_size = models::fused_eval_rows(batch_size, data.inputs.size(1));
  for (int64_t i = 0; i < r.n; i += batch_size) {
    const int64_t j = std::min(r.n, i + batch_size);
    auto ids = data.inputs.slice(0, i, j);
    auto segments = data.segments.defined() ? data.segments.slice(0, i, j) : torch::Tensor();
    auto labels = data.labels.slice(0, i, j);
    if (fused_scores(model, head, ids, segments, labels, r, loss_sum, correct)) continue;
    auto logits = lm_logits(model, ids, segments);
    const ResponseLossSum s = response_loss_sum(logits, labels, segments);
    auto target = shifted_targets(labels, segments);
    correct += predicting_logits(logits).argmax(-1).eq(target).sum().item<int64_t>();  // -100 never equals an id
    loss_sum += s.sum.item<double>();
    r.tokens += s.count.item<int64_t>();
    r.positions += ids.numel();
  }
  if (r.tokens == 0 && whole)
    throw Error(fmt::format("response evaluation: none of the split's {} rows has a trained (response) token", r.n));
  r.loss = r.tokens ? loss_sum / double(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  r.accuracy = r.tokens ? double(correct) / double(r.tokens) : 0.0;
  r.loss_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

EvalResult ResponseObjective::evaluate(models::Model& model, const data::LabelledDataset& data,
                                       int64_t batch_size) const {
  return evaluate_part(model, data, batch_size, 0, 1);
}

EvalResult ResponseObjective::evaluate_part(models::Model& model, const data::LabelledDataset& data,
                                            int64_t batch_size, int rank, int ranks) const {
  check_rows(data);
  if (batch_size <= 0) throw Error("response evaluation: the batch size must be positive");
  auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  EvalResult r;
  r.lm = true;
  r.response = true;
  const data::LabelledDataset rows = part_of(data, rank, ranks);
  r.n = rows.size();
  score_tokens(model, rows, batch_size, r, /*whole=*/ranks == 1);
  ExactMatchOptions options;
  options.part = rank;
  options.parts = ranks;
  options.max_rows = exact_match_rows_;
  options.tokenizer = tokenizer_.get();
  options.max_context = data.inputs.size(1);
  const ExactMatchResult em = exact_match(model, data, options);
  model.train(was_training);
  if (em.measured) {
    r.answer_rows = em.rows;
    r.exact_match = em.accuracy();
    if (tokenizer_) r.text_match = em.text_accuracy();
  } else {
    r.exact_match_note = em.why_not;
  }
  r.long_answers = em.long_answers;
  r.generated_tokens = em.generated_tokens;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

double ResponseObjective::score(const EvalResult& ev) const {
  return ev.exact_match >= 0 ? ev.exact_match : -ev.loss;  // −0.0 for a zero loss: report_best reads the sign bit
}

std::string ResponseObjective::describe_samples(const data::LabelledDataset& train, bool /*text*/) const {
  check_rows(train);
  const int64_t rows = train.size();
  const int64_t trained =
      rows ? shifted_targets(train.labels, train.segments).ne(kNotTrained).sum().item<int64_t>() : 0;
  trained_per_row_ = rows ? double(trained) / double(rows) : 0.0;
  return fmt::format("{} of {} tokens, {:.1f} trained (response) tokens per row",
                     train.segments.defined() ? "packed rows" : "examples", train.inputs.size(1), trained_per_row_);
}

Throughput ResponseObjective::throughput(double samples_per_second, int64_t seq_len) const {
  return {samples_per_second * double(seq_len),
          fmt::format("tokens/s ({:.0f} trained)", samples_per_second * trained_per_row_)};
}

nlohmann::json ResponseObjective::eval_fields(const EvalResult& ev) const {
  nlohmann::json j{{"loss", ev.loss}, {"perplexity", ev.perplexity}, {"accuracy", ev.accuracy}, {"tokens", ev.tokens}};
  if (ev.exact_match >= 0) {
    j["exact_match"] = ev.exact_match;
    j["exact_match_rows"] = ev.answer_rows;
    if (ev.text_match >= 0) j["text_match"] = ev.text_match;
  }
  return j;
}

std::string ResponseObjective::eval_text(const EvalResult& ev) const {
  std::string s = fmt::format("val response loss {:.4f}  perplexity {:.2f}  token accuracy {:.4f}", ev.loss,
                              ev.perplexity, ev.accuracy);
  if (ev.exact_match >= 0) s += fmt::format("  exact match {:.4f} ({} rows)", ev.exact_match, ev.answer_rows);
  return s;
}

void ResponseObjective::report_best(const io::TrainState& state, TrainResult& result) const {
  const bool exact = state.best_epoch >= 0 && !std::signbit(state.best_metric);
  result.lm = !exact;
  if (exact)
    result.best_val_accuracy = state.best_metric;
  else
    result.best_val_loss = state.best_epoch >= 0 ? -state.best_metric : -1;
}

void ResponseObjective::add_summary_fields(const TrainResult& result, nlohmann::json& line) const {
  if (result.lm)
    line["best_val_loss"] = result.best_val_loss;
  else
    line["best_val_exact_match"] = result.best_val_accuracy;
  line["trained_tokens_per_second"] = result.samples_per_second * trained_per_row_;
}

std::string ResponseObjective::summary_text(const TrainResult& result) const {
  const std::string best = result.lm ? fmt::format("best val response loss {:.4f} (perplexity {:.2f})",
                                                   result.best_val_loss, std::exp(result.best_val_loss))
                                     : fmt::format("best val exact match {:.4f}", result.best_val_accuracy);
  return fmt::format("{} steps, {:.0f} tokens/s ({:.0f} trained), {}", result.steps, result.tokens_per_second,
                     result.samples_per_second * trained_per_row_, best);
}

}  // namespace tunekit
