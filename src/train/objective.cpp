#include "src/train/objective.h"

#include <fmt/format.h>

#include <cmath>

#include "models/chunked_loss.h"
#include "src/train/chat_objective.h"

namespace tunekit {

// --- classification ---

torch::Tensor ClassificationObjective::loss(const torch::Tensor& output, const torch::Tensor& /*inputs*/,
                                            const torch::Tensor& labels) const {
  return torch::nn::functional::cross_entropy(output, labels);
}

EvalResult ClassificationObjective::evaluate(models::Model& model, const data::LabelledDataset& data,
                                             int64_t batch_size) const {
  return tunekit::evaluate(model, data, batch_size);
}

std::string ClassificationObjective::describe_samples(const data::LabelledDataset& /*train*/, bool text) const {
  return text ? "texts" : "images";
}

Throughput ClassificationObjective::throughput(double samples_per_second, int64_t /*seq_len*/) const {
  return {samples_per_second, "samples/s"};
}

nlohmann::json ClassificationObjective::eval_fields(const EvalResult& ev) const {
  return {{"loss", ev.loss}, {"accuracy", ev.accuracy}, {"macro_f1", ev.macro_f1}};
}

std::string ClassificationObjective::eval_text(const EvalResult& ev) const {
  return fmt::format("val loss {:.4f}  val accuracy {:.4f}", ev.loss, ev.accuracy);
}

void ClassificationObjective::report_best(const io::TrainState& state, TrainResult& result) const {
  result.best_val_accuracy = state.best_metric;
}

void ClassificationObjective::add_summary_fields(const TrainResult& result, nlohmann::json& line) const {
  line["best_val_accuracy"] = result.best_val_accuracy;
}

std::string ClassificationObjective::summary_text(const TrainResult& result) const {
  return fmt::format("{} steps, {:.0f} samples/s, best val accuracy {:.4f}", result.steps, result.samples_per_second,
                     result.best_val_accuracy);
}

// --- next-token prediction ---

torch::Tensor Objective::batch_loss(models::Model& model, const data::LabelledDataset& split,
                                    const torch::Tensor& idx) const {
  auto x = split.inputs.index_select(0, idx);
  auto y = split.labels.index_select(0, idx);
  return loss(model.forward(x), x, y);
}

EvalResult Objective::evaluate_part(models::Model& model, const data::LabelledDataset& data, int64_t batch_size,
                                    int rank, int ranks) const {
  return evaluate(model, part_of(data, rank, ranks), batch_size);
}

int64_t Objective::loss_count(const data::LabelledDataset& /*split*/, const torch::Tensor& idx) const {
  return idx.size(0);
}

int64_t NextTokenObjective::loss_count(const data::LabelledDataset& split, const torch::Tensor& idx) const {
  auto targets = models::next_token_targets(split.inputs.index_select(0, idx), pad_id_);
  return targets.ne(models::kIgnoreIndex).sum().item<int64_t>();
}

torch::Tensor NextTokenObjective::loss(const torch::Tensor& output, const torch::Tensor& inputs,
                                       const torch::Tensor& /*labels*/) const {
  return lm_loss(output, inputs, pad_id_);
}

torch::Tensor NextTokenObjective::batch_loss(models::Model& model, const data::LabelledDataset& split,
                                            const torch::Tensor& idx) const {
  auto ids = split.inputs.index_select(0, idx);
  models::LmInputs in;
  in.ids = ids;
  return models::causal_lm_loss(model, in, models::next_token_targets(ids, pad_id_), loss_chunk);
}

EvalResult NextTokenObjective::evaluate(models::Model& model, const data::LabelledDataset& data,
                                        int64_t batch_size) const {
  return evaluate_lm(model, data, batch_size, pad_id_);
}

std::string NextTokenObjective::describe_samples(const data::LabelledDataset& train, bool /*text*/) const {
  return fmt::format("chunks of {} tokens", train.inputs.size(1));
}

Throughput NextTokenObjective::throughput(double samples_per_second, int64_t seq_len) const {
  return {samples_per_second * seq_len, "tokens/s"};
}

nlohmann::json NextTokenObjective::eval_fields(const EvalResult& ev) const {
  return {{"loss", ev.loss}, {"accuracy", ev.accuracy}, {"perplexity", ev.perplexity}};
}

std::string NextTokenObjective::eval_text(const EvalResult& ev) const {
  return fmt::format("val loss {:.4f}  perplexity {:.2f}  next-token accuracy {:.4f}", ev.loss, ev.perplexity,
                     ev.accuracy);
}

void NextTokenObjective::report_best(const io::TrainState& state, TrainResult& result) const {
  result.lm = true;
  result.best_val_loss = state.best_epoch >= 0 ? -state.best_metric : -1;  // score() is −loss
}

void NextTokenObjective::add_summary_fields(const TrainResult& result, nlohmann::json& line) const {
  line["best_val_loss"] = result.best_val_loss;
}

std::string NextTokenObjective::summary_text(const TrainResult& result) const {
  return fmt::format("{} steps, {:.0f} tokens/s, best val loss {:.4f} (perplexity {:.2f})", result.steps,
                     result.tokens_per_second, result.best_val_loss, std::exp(result.best_val_loss));
}

std::unique_ptr<Objective> make_objective(const Recipe& recipe) {
  std::unique_ptr<Objective> objective;
  if (recipe.data.is_chat())
    objective = std::make_unique<ResponseObjective>();
  else if (recipe.model.is_lm())
    objective = std::make_unique<NextTokenObjective>(recipe.model.pad_id);
  else
    objective = std::make_unique<ClassificationObjective>();
  objective->loss_chunk = recipe.train.loss_chunk;
  return objective;
}

EvalResult evaluate(models::Model& model, const data::LabelledDataset& data, const Recipe& recipe) {
  return make_objective(recipe)->evaluate(model, data, recipe.data.eval_batch_size);
}

}  // namespace tunekit
