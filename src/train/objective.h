// What a task trains and measures: the loss of a batch, the evaluation of a split, the metric that
// picks the best checkpoint, and how these read in the logs and metrics.jsonl. The training loop
// knows only this interface; a new task (e.g. loss on response tokens only) is a new subclass.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "data/dataset.h"
#include "models/model.h"
#include "src/eval/evaluator.h"
#include "src/io/checkpoint.h"
#include "src/recipe/recipe.h"
#include "src/train/trainer.h"

namespace tunekit {

// Training speed as a log line states it.
struct Throughput {
  double per_second = 0;
  std::string unit = "samples/s";
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;

  // The training loss of one batch: the model's `output` for `inputs`, whose labels are `labels`.
  virtual torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& inputs,
                             const torch::Tensor& labels) const = 0;
  // The training loss of the split's rows `idx`. By default: loss(model.forward(inputs), inputs,
  // labels); an objective whose batches carry more (packed segments) overrides it.
  virtual torch::Tensor batch_loss(models::Model& model, const data::LabelledDataset& split, const torch::Tensor& idx) const;
  // What batch_loss averages over for the rows `idx`: by default the rows; a token objective's
  // counted targets. Data-parallel training weights each rank's loss by it (src/dist).
  virtual int64_t loss_count(const data::LabelledDataset& split, const torch::Tensor& idx) const;
  // Evaluates the model on a split (in eval mode, without gradients).
  virtual EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size) const = 0;
  // Data parallel: part `rank` of `ranks` of evaluate(model, data, batch_size), such that the parts'
  // eval_counts summed and read back (eval_from_counts, src/eval/evaluator.h) are the whole split's
  // evaluation. By default evaluate() on the part's rows (part_of).
  virtual EvalResult evaluate_part(models::Model& model, const data::LabelledDataset& data, int64_t batch_size,
                                   int rank, int ranks) const;
  // The validation score that picks the best checkpoint: higher is better. It is what
  // io::TrainState::best_metric holds.
  virtual double score(const EvalResult& ev) const = 0;

  // What one training sample is, for the data line ("images", "chunks of 128 tokens").
  virtual std::string describe_samples(const data::LabelledDataset& train, bool text) const = 0;
  // Training speed from samples per second; `seq_len` is the tokens per sample (1 for images).
  virtual Throughput throughput(double samples_per_second, int64_t seq_len) const = 0;
  // An evaluation's fields in a metrics.jsonl "eval" line (beside type, split, step, epoch).
  virtual nlohmann::json eval_fields(const EvalResult& ev) const = 0;
  // An evaluation as the per-epoch log line states it ("val loss 0.4123  val accuracy 0.8810").
  virtual std::string eval_text(const EvalResult& ev) const = 0;

  // Fills the result's best-metric fields from the run's state at the end of training.
  virtual void report_best(const io::TrainState& state, TrainResult& result) const = 0;
  // The best metric in the metrics.jsonl "summary" line.
  virtual void add_summary_fields(const TrainResult& result, nlohmann::json& line) const = 0;
  // The closing line of the progress output.
  virtual std::string summary_text(const TrainResult& result) const = 0;

  // train.loss_chunk: tokens per chunk of a causal LM's fused head + loss (0: plain logits).
  int64_t loss_chunk = 0;
};

// Single-label classification (images or texts): cross-entropy, accuracy picks the best.
class ClassificationObjective : public Objective {
 public:
  std::string name() const override { return "classification"; }
  torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& inputs, const torch::Tensor& labels) const override;
  EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size) const override;
  double score(const EvalResult& ev) const override { return ev.accuracy; }
  std::string describe_samples(const data::LabelledDataset& train, bool text) const override;
  Throughput throughput(double samples_per_second, int64_t seq_len) const override;
  nlohmann::json eval_fields(const EvalResult& ev) const override;
  std::string eval_text(const EvalResult& ev) const override;
  void report_best(const io::TrainState& state, TrainResult& result) const override;
  void add_summary_fields(const TrainResult& result, nlohmann::json& line) const override;
  std::string summary_text(const TrainResult& result) const override;
};

// Causal language modelling on token chunks: next-token cross-entropy (pad targets ignored), the
// lowest validation loss picks the best.
class NextTokenObjective : public Objective {
 public:
  explicit NextTokenObjective(int64_t pad_id) : pad_id_(pad_id) {}
  std::string name() const override { return "next_token"; }
  torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& inputs, const torch::Tensor& labels) const override;
  // Through models::causal_lm_loss: the fused, chunked head + loss when the model offers it.
  torch::Tensor batch_loss(models::Model& model, const data::LabelledDataset& split, const torch::Tensor& idx) const override;
  int64_t loss_count(const data::LabelledDataset& split, const torch::Tensor& idx) const override;
  EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, int64_t batch_size) const override;
  double score(const EvalResult& ev) const override { return -ev.loss; }
  std::string describe_samples(const data::LabelledDataset& train, bool text) const override;
  Throughput throughput(double samples_per_second, int64_t seq_len) const override;
  nlohmann::json eval_fields(const EvalResult& ev) const override;
  std::string eval_text(const EvalResult& ev) const override;
  void report_best(const io::TrainState& state, TrainResult& result) const override;
  void add_summary_fields(const TrainResult& result, nlohmann::json& line) const override;
  std::string summary_text(const TrainResult& result) const override;

 private:
  int64_t pad_id_;
};

// The objective of the recipe: the response tokens for instruct / chat data (chat_objective.h),
// next-token prediction for a causal LM on text, else classification.
std::unique_ptr<Objective> make_objective(const Recipe& recipe);

// The evaluation the recipe's objective calls for, at the recipe's eval batch size.
EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, const Recipe& recipe);

}  // namespace tunekit
