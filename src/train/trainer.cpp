#include "src/train/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/text_data.h"
#include "src/from_recipe/data.h"
#include "src/eval/evaluator.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
#include "src/train/objective.h"
#include "src/train/setup.h"
#include "util/error.h"
#include "util/file.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace tunekit {

double scheduled_lr(const ScheduleConfig& s, double base_lr, int64_t step, int64_t total) {
  if (s.warmup_steps > 0 && step < s.warmup_steps) return base_lr * double(step + 1) / double(s.warmup_steps);
  if (s.kind == ScheduleKind::Constant) return base_lr;
  int64_t span = std::max<int64_t>(1, total - s.warmup_steps);
  double t = std::min(1.0, double(step - s.warmup_steps) / double(span));
  double floor = base_lr * s.min_lr_ratio;
  if (s.kind == ScheduleKind::Linear) return floor + (base_lr - floor) * (1.0 - t);
  return floor + (base_lr - floor) * 0.5 * (1.0 + std::cos(M_PI * t));
}

namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerConfig& c, std::vector<torch::Tensor> params) {
  if (params.empty()) throw Error("nothing to train: every parameter is frozen (check adapter.targets / modules_to_save)");
  if (c.name == OptimizerKind::SGD)
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  return std::make_unique<torch::optim::AdamW>(
      params, torch::optim::AdamWOptions(c.lr)
                  .betas({c.betas[0], c.betas[1]})
                  .eps(c.eps)
                  .weight_decay(c.weight_decay));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

// Keeps only the metrics lines at or before `step` (a resumed run rewrites what follows).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("step", int64_t(0)) > step) continue;
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : out_(path, std::ios::app) {
    if (!out_) throw Error(fmt::format("{}: cannot open for writing", path));
  }
  void write(const nlohmann::json& j) {
    out_ << j.dump() << "\n";
    out_.flush();
  }

 private:
  std::ofstream out_;
};

// --- the run's state, shared by the phases below ---

// What set-up builds and each phase of training reads and advances.
struct Run {
  Run(const Recipe& r, const TrainOptions& o)
      : recipe(r),
        opts(o),
        run_dir(r.run_dir()),
        ckpt_dir(run_dir + "/checkpoints"),
        last_dir(ckpt_dir + "/last"),
        best_dir(ckpt_dir + "/best"),
        objective(make_objective(r)) {}

  const Recipe& recipe;
  const TrainOptions& opts;
  const std::string run_dir, ckpt_dir, last_dir, best_dir;
  const std::unique_ptr<Objective> objective;
  RunModel rm;
  data::ImageSplits splits;
  int64_t seq_len = 1;  // tokens per sample (1 for images)
  std::vector<torch::Tensor> params;  // the trainable ones
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  io::TrainState state;
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<Progress> progress;
  int64_t batch_size = 0, accum = 1, batches_per_epoch = 0, total_steps = 0;
  // Files a checkpoint carries beside the weights (adapter file, tokenizer); empty when none.
  std::function<void(const std::string&)> write_extra;
  double train_seconds = 0;  // over the whole run, resumed calls included
  int64_t samples_this_call = 0;
  double seconds_this_call = 0;
  double window_loss = 0;  // losses since the last "train" line of metrics.jsonl
  int64_t window_n = 0;
  TrainResult result;

  models::Model& model() { return *rm.model; }
  void say(const std::string& s) const {
    if (!opts.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  }
  // Writes a checkpoint of the model (with the optimizer for `last`, to resume from).
  void save(const std::string& dir, torch::optim::Optimizer* with_optimizer) {
    state.train_seconds = train_seconds;
    io::save_checkpoint(dir, model(), with_optimizer, state, write_extra, /*trainable_only=*/recipe.model.is_hf());
  }
  void checkpoint_last() { save(last_dir, optimizer.get()); }
};

// --- set-up and resume ---

// Decides between resuming and starting over, and writes the run's recipe.yaml. True to resume.
bool open_run_dir(const Run& run) {
  bool resuming = run.opts.resume && io::checkpoint_exists(run.last_dir);
  if (run.opts.resume && !resuming) run.say(fmt::format("no checkpoint in {} to resume from; starting fresh", run.last_dir));
  if (!resuming && fs::exists(run.last_dir) && !run.opts.resume)
    run.say(fmt::format("note: {} already has checkpoints; starting over (use --resume to continue)", run.run_dir));
  fs::create_directories(run.ckpt_dir);
  write_file_atomic(run.run_dir + "/recipe.yaml", run.recipe.resolved_yaml);
  return resuming;
}

// The run's data through the one path every verb reads it by (load_data). A text run first makes
// its tokenizer: a fresh run anew (the recipe's tokenizer settings may have changed), a resumed
// one keeps the ids its checkpoint was trained with.
data::ImageSplits load_training_data(const Run& run, bool resuming, std::string* tokenizer_message) {
  if (!run.recipe.data.is_text()) return load_data(run.recipe, run.run_dir);
  if (!resuming) fs::remove(fs::path(run.run_dir) / data::kTokenizerFile);
  const data::Tokenizer tok = from_recipe::prepare_tokenizer(run.recipe, run.run_dir, tokenizer_message);
  return load_data(run.recipe, run.run_dir, &tok);  // the tokenizer just made, not read again
}

// Restores model, optimizer, RNG and position from the last checkpoint, or clears what a
// previous run left; then opens metrics.jsonl.
void resume_or_start(Run& run, bool resuming) {
  const std::string metrics_path = run.run_dir + "/metrics.jsonl";
  if (resuming) {
    std::string from = io::existing_checkpoint(run.last_dir);
    io::load_weights(from, run.model(), {}, /*strict=*/true, false);
    io::load_optimizer(from, *run.optimizer);
    io::load_rng(from);
    run.state = io::load_train_state(from);
    truncate_metrics(metrics_path, run.state.step);
  } else {
    fs::remove(metrics_path);
    fs::remove_all(run.best_dir);
  }
  run.metrics = std::make_unique<MetricsLog>(metrics_path);
}

// Low-rank adapters are also written on their own (PEFT layout), and text runs' tokenizer travels
// with each checkpoint.
void set_checkpoint_extras(Run& run) {
  const Recipe& recipe = run.recipe;
  if (!recipe.adapter.saves_adapter_file() && !recipe.data.is_text()) return;
  run.write_extra = [&run](const std::string& dir) {
    const Recipe& recipe = run.recipe;
    if (recipe.adapter.saves_adapter_file())
      io::save_adapter(dir, run.model(), recipe.adapter, run.rm.report.adapted,
                       recipe.model.is_hf() ? recipe.model.base_model_name() : recipe.init_from.run);
    if (recipe.data.is_text())
      fs::copy_file(fs::path(run.run_dir) / data::kTokenizerFile, fs::path(dir) / data::kTokenizerFile,
                    fs::copy_options::overwrite_existing);
  };
}

// The run's opening lines: model, init, tokenizer, adapter, data and step budget, resume position.
void announce(const Run& run, const std::string& threads, const std::string& tokenizer_message, bool resuming) {
  const Recipe& recipe = run.recipe;
  const auto& s = run.splits;
  run.say(fmt::format("run {}: {}", run.run_dir, run.rm.model->describe()));
  if (!run.rm.init_message.empty()) run.say("init: " + run.rm.init_message);
  if (!tokenizer_message.empty()) run.say(tokenizer_message);
  run.say(fmt::format("adapter {}: {}", to_string(recipe.adapter.kind), run.rm.report.summary()));
  run.say(fmt::format("data: {} train / {} val / {} test {}, batch {} x accum {}, {} steps; threads: {}",
                      s.train.size(), s.val.size(), s.test.size(),
                      run.objective->describe_samples(s.train, recipe.model.is_text()), run.batch_size, run.accum,
                      run.total_steps, threads));
  if (resuming)
    run.say(fmt::format("resuming from step {} (epoch {}, batch {})", run.state.step, run.state.epoch + 1,
                        run.state.batch_in_epoch));
}

// Seeds, builds the model, loads the data, makes the optimizer and resumes or starts the run.
void set_up(Run& run) {
  const Recipe& recipe = run.recipe;
  std::string threads = apply_thread_policy(recipe.threads);
  torch::manual_seed(static_cast<uint64_t>(recipe.seed));
  const bool resuming = open_run_dir(run);
  run.rm = build_run_model(recipe, /*load_init=*/!resuming);
  std::string tokenizer_message;
  run.splits = load_training_data(run, resuming, &tokenizer_message);
  const auto& train_set = run.splits.train;
  run.seq_len = recipe.model.is_text() ? train_set.inputs.size(1) : 1;
  if (train_set.size() < recipe.data.batch_size)
    throw Error(fmt::format("data: the training split has {} samples, fewer than data.batch_size {}",
                            train_set.size(), recipe.data.batch_size));

  for (auto& p : run.model().parameters())
    if (p.requires_grad()) run.params.push_back(p);
  run.optimizer = make_optimizer(recipe.optimizer, run.params);
  resume_or_start(run, resuming);

  run.batch_size = recipe.data.batch_size;
  run.accum = recipe.train.grad_accum;
  run.batches_per_epoch = train_set.size() / run.batch_size;  // the last partial batch is dropped
  const int64_t steps_per_epoch = (run.batches_per_epoch + run.accum - 1) / run.accum;
  run.total_steps = steps_per_epoch * recipe.train.epochs;
  if (recipe.train.max_steps > 0) run.total_steps = std::min(run.total_steps, recipe.train.max_steps);
  announce(run, threads, tokenizer_message, resuming);

  run.result.run_dir = run.run_dir;
  run.result.trainable = run.rm.report.trainable;
  run.result.total = run.rm.report.total;
  run.result.flops_per_sample = run.model().flops_per_sample();
  run.progress = std::make_unique<Progress>("train", run.total_steps, recipe.train.log_every, run.opts.quiet);
  run.train_seconds = run.state.train_seconds;
  set_checkpoint_extras(run);
}

// --- one optimizer step ---

struct Step {
  double loss = 0;         // mean over its micro-batches
  double lr = 0;
  int64_t next_batch = 0;  // the epoch's first batch not yet consumed
};

// Forward and backward of batch `b` of the epoch's order; returns its loss.
double forward_backward(Run& run, const torch::Tensor& perm, int64_t b) {
  const auto& train_set = run.splits.train;
  auto idx = perm.slice(0, b * run.batch_size, (b + 1) * run.batch_size);
  auto x = train_set.inputs.index_select(0, idx);
  auto y = train_set.labels.index_select(0, idx);
  auto loss = run.objective->loss(run.model().forward(x), x, y);
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value))
    throw Error(fmt::format("training diverged: loss is {} at step {} (lower optimizer.lr or set "
                            "train.clip_grad_norm)", loss_value, run.state.step + 1));
  (run.accum > 1 ? loss / double(run.accum) : loss).backward();
  run.state.samples += run.batch_size;
  run.samples_this_call += run.batch_size;
  return loss_value;
}

// Accumulates gradients over up to `accum` batches from batch `b` (fewer at the epoch's end),
// then clips, sets the scheduled learning rate and steps the optimizer.
Step train_step(Run& run, const torch::Tensor& perm, int64_t b) {
  const int64_t end = std::min(b + run.accum, run.batches_per_epoch);
  double loss_sum = 0;
  for (int64_t i = b; i < end; ++i) loss_sum += forward_backward(run, perm, i);

  const Recipe& recipe = run.recipe;
  const double lr = scheduled_lr(recipe.schedule, recipe.optimizer.lr, run.state.step, run.total_steps);
  set_lr(*run.optimizer, lr);
  if (recipe.train.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(run.params, recipe.train.clip_grad_norm);
  run.optimizer->step();
  run.optimizer->zero_grad();
  ++run.state.step;
  run.state.batch_in_epoch = end;
  return {loss_sum / double(end - b), lr, end};
}

// Records a step: its loss, the time it took (since `t_start`, which it advances), the progress
// line and, every log_every steps, a "train" line in metrics.jsonl.
void log_step(Run& run, int64_t epoch, const Step& step, std::chrono::steady_clock::time_point& t_start) {
  auto& state = run.state;
  run.result.losses.emplace_back(state.step, step.loss);
  run.window_loss += step.loss;
  ++run.window_n;
  auto now = std::chrono::steady_clock::now();
  double dt = std::chrono::duration<double>(now - t_start).count();
  t_start = now;
  run.train_seconds += dt;
  run.seconds_this_call += dt;
  const double rate = run.seconds_this_call > 0 ? run.samples_this_call / run.seconds_this_call : 0;
  const Throughput speed = run.objective->throughput(rate, run.seq_len);
  const int64_t epochs = run.recipe.train.epochs;
  run.progress->update(state.step, fmt::format("epoch {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} {}", epoch + 1, epochs,
                                               step.loss, step.lr, speed.per_second, speed.unit));
  if (state.step % run.recipe.train.log_every == 0 || state.step == run.total_steps) {
    run.metrics->write({{"type", "train"}, {"step", state.step}, {"epoch", epoch + 1},
                        {"loss", run.window_loss / run.window_n}, {"lr", step.lr}, {"samples_per_second", rate}});
    run.window_loss = 0;
    run.window_n = 0;
  }
}

enum class EpochEnd { Done, BudgetSpent, Stopped };

// The optimizer steps of one epoch, from the run's position in it.
EpochEnd run_epoch(Run& run, int64_t epoch) {
  auto& state = run.state;
  state.epoch = epoch;
  auto perm = data::epoch_permutation(run.splits.train.size(), static_cast<uint64_t>(run.recipe.seed), epoch);
  auto t_start = std::chrono::steady_clock::now();
  for (int64_t b = state.batch_in_epoch; b < run.batches_per_epoch;) {
    const Step step = train_step(run, perm, b);
    b = step.next_batch;
    log_step(run, epoch, step, t_start);
    if (run.opts.stop_after_steps > 0 && state.step >= run.opts.stop_after_steps) {
      run.progress->clear();
      run.say(fmt::format("stopping after step {} (as asked)", state.step));
      return EpochEnd::Stopped;
    }
    const int64_t every = run.recipe.train.checkpoint_every;
    if (every > 0 && state.step % every == 0 && b < run.batches_per_epoch) run.checkpoint_last();
    if (state.step >= run.total_steps) return EpochEnd::BudgetSpent;
  }
  return EpochEnd::Done;
}

// --- end of epoch ---

// Evaluates the validation split, logs it, and remembers the epoch when its score is the best.
void validate(Run& run, int64_t epoch) {
  auto& state = run.state;
  const Objective& objective = *run.objective;
  auto ev = objective.evaluate(run.model(), run.splits.val, run.recipe.data.eval_batch_size);
  run.model().train();
  run.result.final_val_accuracy = ev.accuracy;
  const double score = objective.score(ev);
  const bool better = state.best_epoch < 0 || score > state.best_metric;
  nlohmann::json line = objective.eval_fields(ev);
  line["type"] = "eval";
  line["split"] = "val";
  line["step"] = state.step;
  line["epoch"] = epoch + 1;
  run.metrics->write(line);
  run.say(fmt::format("epoch {}/{}: {}{}", epoch + 1, run.recipe.train.epochs, objective.eval_text(ev),
                      better ? "  (best)" : ""));
  if (better) {
    state.best_metric = score;
    state.best_epoch = epoch + 1;
  }
}

// Validates, keeps the best checkpoint, and checkpoints the position. `budget_spent`: the step
// budget ended the epoch (mid-epoch, the position stays at its last batch).
void end_epoch(Run& run, int64_t epoch, bool budget_spent) {
  run.progress->clear();
  const bool has_val = run.splits.val.size() > 0;
  if (has_val) validate(run, epoch);
  if (!budget_spent) {
    run.state.epoch = epoch + 1;
    run.state.batch_in_epoch = 0;
  }
  if (!has_val || run.state.best_epoch == epoch + 1) run.save(run.best_dir, nullptr);
  run.checkpoint_last();
}

// --- the summary ---

TrainResult summarise(Run& run, std::chrono::steady_clock::time_point wall0) {
  auto& r = run.result;
  r.steps = run.state.step;
  r.train_seconds = run.train_seconds;
  r.samples_per_second = run.seconds_this_call > 0 ? run.samples_this_call / run.seconds_this_call : 0;
  r.tokens_per_second = run.recipe.model.is_text() ? r.samples_per_second * run.seq_len : 0;
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  run.objective->report_best(run.state, r);
  if (!io::checkpoint_exists(run.best_dir)) run.save(run.best_dir, nullptr);
  nlohmann::json line{{"type", "summary"},
                      {"step", run.state.step},
                      {"samples_per_second", r.samples_per_second},
                      {"wall_seconds", r.wall_seconds},
                      {"flops_per_sample", r.flops_per_sample},
                      {"tokens_per_second", r.tokens_per_second},
                      {"train_seconds", run.train_seconds},
                      {"trainable_params", r.trainable},
                      {"total_params", r.total}};
  run.objective->add_summary_fields(r, line);
  run.metrics->write(line);
  run.progress->finish(run.objective->summary_text(r));
  return r;
}

}  // namespace

TrainResult train(const Recipe& recipe, const TrainOptions& opts) {
  const auto wall0 = std::chrono::steady_clock::now();
  Run run(recipe, opts);
  set_up(run);
  run.model().train();
  run.optimizer->zero_grad();
  bool stop = run.state.step >= run.total_steps;
  for (int64_t epoch = run.state.epoch; epoch < recipe.train.epochs && !stop; ++epoch) {
    const EpochEnd end = run_epoch(run, epoch);
    if (end == EpochEnd::Stopped) {  // abrupt: no checkpoint, as if the process had been killed
      run.result.steps = run.state.step;
      return run.result;
    }
    stop = end == EpochEnd::BudgetSpent;
    end_epoch(run, epoch, stop);
  }
  return summarise(run, wall0);
}

}  // namespace tunekit
