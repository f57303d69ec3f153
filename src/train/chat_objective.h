// Fine-tuning a causal LM on instruction / chat data: the loss on the response tokens only (labels
// -100 elsewhere; packed rows through models::CausalLm::forward_lm), and its evaluation: response
// loss, perplexity, token accuracy and the exact match of greedily generated short answers.
#pragma once
#include <torch/torch.h>

#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/chat_data.h"
#include "data/dataset.h"
#include "data/tokenizer.h"
#include "models/model.h"
#include "src/train/objective.h"

namespace tunekit {

// The label of a position that is not trained (data/chat_data.h's, transformers' ignore_index).
inline constexpr int64_t kNotTrained = data::kIgnoreLabel;
// An answer (the last trained run of a row, without its turn-ending token) of at most this many
// tokens is "short": exact match is measured on it.
inline constexpr int64_t kMaxAnswerTokens = 32;
// Exact match is measured on a split when at least this fraction of its rows have a short answer
// (the others are left out and counted); below it the split is not a short-answer task.
inline constexpr double kMinShortAnswerFraction = 0.9;
// Greedy generation for exact match runs until the turn-ending token, a stop id, or this many
// tokens past the reference's length.
inline constexpr int64_t kAnswerSlack = 8;
// Rows whose answers are generated at each validation during training (the split's first rows,
// the same every epoch); `tunekit eval` generates them all.
inline constexpr int64_t kTrainingExactMatchRows = 200;

// Logits [B, N, V] of the model for ids [B, N]: forward_lm with `segments` when defined (the model
// must be a models::CausalLm), else forward(ids).
torch::Tensor lm_logits(models::Model& model, const torch::Tensor& ids, const torch::Tensor& segments = {});

// Sum of the next-token cross-entropy of logits [B, N, V] at t against labels [B, N] at t + 1 over
// the trained targets (label != -100; with segments [B, N], a target in another segment than its
// predicting position is never trained), and their count.
struct ResponseLossSum {
  torch::Tensor sum;    // scalar, in the graph
  torch::Tensor count;  // scalar int64
};
ResponseLossSum response_loss_sum(const torch::Tensor& logits, const torch::Tensor& labels,
                                  const torch::Tensor& segments = {});
// The mean of it over the trained targets (0, in the graph, when there are none).
torch::Tensor response_loss(const torch::Tensor& logits, const torch::Tensor& labels,
                            const torch::Tensor& segments = {});

// A row's last trained run: positions [start, end) with labels != -100, the answer = ids[start,
// end - 1) and its turn-ending token ids[end - 1]; nullopt when the row trains nothing.
struct AnswerSpan {
  int64_t start = 0, end = 0;
  int64_t answer_tokens() const { return end - start - 1; }
};
std::optional<AnswerSpan> last_trained_run(const torch::Tensor& labels_row);

struct ExactMatchOptions {
  int64_t max_rows = 0;                        // the split's first short-answer rows only (0 = all)
  // Data parallel: of those rows, the ones at positions ≡ part (mod parts) only; long_answers is
  // counted by part 0 alone (the parts' results add up to the whole split's).
  int part = 0, parts = 1;
  const data::Tokenizer* tokenizer = nullptr;  // stop ids, and the text match (decoded) when given
  // The longest context generation may reach (a models::CausalLm's context_length() caps it too).
  int64_t max_context = std::numeric_limits<int64_t>::max();
};

struct ExactMatchResult {
  bool measured = false;
  std::string why_not;          // when not measured
  int64_t rows = 0, matched = 0, text_matched = 0;
  int64_t long_answers = 0;     // rows left out: answer longer than kMaxAnswerTokens (or none)
  int64_t generated_tokens = 0;
  double accuracy() const { return rows ? double(matched) / double(rows) : 0.0; }
  double text_accuracy() const { return rows ? double(text_matched) / double(rows) : 0.0; }
};

// Greedy continuation of `prompt` until `end_id` or a stop id (`ended`; that token is not in
// `ids`), `max_new` tokens, or a context of `max_context` tokens. Over a KV cache when the model is
// a models::CausalLm, else by re-running forward on the whole context each step.
struct GreedyAnswer {
  std::vector<int64_t> ids;
  bool ended = false;
};
GreedyAnswer greedy_answer(models::Model& model, const std::vector<int64_t>& prompt, int64_t end_id,
                           const std::vector<int64_t>& stop_ids, int64_t max_new,
                           int64_t max_context = std::numeric_limits<int64_t>::max());

// Exact match of greedy answers on a split whose rows each end with a short answer (see the
// constants above): prompt = ids up to the answer's first token, reference = the answer's ids;
// a match is identical ids, ended by the turn-ending token or a stop id; the text match compares the decoded texts with whitespace runs
// collapsed, ends trimmed and ASCII case folded.
ExactMatchResult exact_match(models::Model& model, const data::LabelledDataset& split, const ExactMatchOptions& options);

// Response tokens only: loss = mean cross-entropy over the trained tokens; evaluation adds
// perplexity, token accuracy and exact match of short answers; the best checkpoint is the highest
// exact match when the validation split has short answers, else the lowest response loss.
class ResponseObjective : public Objective {
 public:
  // `exact_match_rows`: rows generated per evaluation (0 = the whole split).
  explicit ResponseObjective(int64_t exact_match_rows = kTrainingExactMatchRows) : exact_match_rows_(exact_match_rows) {}
  // The run's tokenizer: its stop ids end generated answers, and answers are also compared as text.
  void set_tokenizer(const data::Tokenizer& tok) { tokenizer_ = std::make_shared<data::Tokenizer>(tok); }

  std::string name() const override { return "response"; }
  torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& inputs, const torch::Tensor& labels) const override;
  torch::Tensor batch_loss(models::Model& model, const data::LabelledDataset& split, const torch::Tensor& idx) const override;
  int64_t loss_count(const data::LabelledDataset& split, const torch::Tensor& idx) const override;
  EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size) const override;
  // Scores the part's rows; generates its share (every parts-th) of the whole split's exact-match rows.
  EvalResult evaluate_part(models::Model& model, const data::LabelledDataset& data, int64_t batch_size, int rank,
                           int ranks) const override;
  // Exact match (in [0, 1]) when measured, else −loss (<= 0, sign bit set: −0.0 for a zero loss).
  double score(const EvalResult& ev) const override;
  std::string describe_samples(const data::LabelledDataset& train, bool text) const override;
  Throughput throughput(double samples_per_second, int64_t seq_len) const override;
  nlohmann::json eval_fields(const EvalResult& ev) const override;
  std::string eval_text(const EvalResult& ev) const override;
  void report_best(const io::TrainState& state, TrainResult& result) const override;
  void add_summary_fields(const TrainResult& result, nlohmann::json& line) const override;
  std::string summary_text(const TrainResult& result) const override;

 private:
  int64_t exact_match_rows_;
  std::shared_ptr<const data::Tokenizer> tokenizer_;
  // Trained targets per training row, from describe_samples (the trainer calls it once at
  // set-up), for the trained-tokens/s figure.
  mutable double trained_per_row_ = 0;
};

}  // namespace tunekit
