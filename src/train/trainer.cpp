#include "src/train/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/text_data.h"
#include "src/build/data.h"
#include "src/eval/evaluator.h"
#include "src/io/adapter_file.h"
#include "src/io/checkpoint.h"
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

}  // namespace

TrainResult train(const Recipe& recipe, const TrainOptions& opts) {
  const auto wall0 = std::chrono::steady_clock::now();
  const std::string run_dir = recipe.run_dir();
  const std::string ckpt_dir = run_dir + "/checkpoints";
  const std::string last_dir = ckpt_dir + "/last", best_dir = ckpt_dir + "/best";
  auto say = [&](const std::string& s) {
    if (!opts.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };

  std::string threads = apply_thread_policy(recipe.threads);
  torch::manual_seed(static_cast<uint64_t>(recipe.seed));

  bool resuming = opts.resume && io::checkpoint_exists(last_dir);
  if (opts.resume && !resuming) say(fmt::format("no checkpoint in {} to resume from; starting fresh", last_dir));
  if (!resuming && fs::exists(last_dir) && !opts.resume)
    say(fmt::format("note: {} already has checkpoints; starting over (use --resume to continue)", run_dir));
  fs::create_directories(ckpt_dir);
  write_file_atomic(run_dir + "/recipe.yaml", recipe.resolved_yaml);

  RunModel rm = build_run_model(recipe, /*load_init=*/!resuming);
  auto& model = *rm.model;
  std::string tokenizer_message;
  data::ImageSplits splits;
  if (recipe.data.is_text()) {
    // A fresh run makes its tokenizer anew (the recipe's tokenizer settings may have changed); a
    // resumed one keeps the ids its checkpoint was trained with.
    if (!resuming) fs::remove(fs::path(run_dir) / data::kTokenizerFile);
    splits = build::load_text_data(recipe, build::prepare_tokenizer(recipe, run_dir, &tokenizer_message));
  } else {
    splits = load_data(recipe, run_dir);
  }
  const bool lm = recipe.model.is_lm();
  const int64_t seq_len = recipe.model.is_text() ? splits.train.inputs.size(1) : 1;
  const auto& train_set = splits.train;
  const bool has_val = splits.val.size() > 0;
  if (train_set.size() < recipe.data.batch_size)
    throw Error(fmt::format("data: the training split has {} samples, fewer than data.batch_size {}",
                            train_set.size(), recipe.data.batch_size));

  std::vector<torch::Tensor> params;
  for (auto& p : model.parameters())
    if (p.requires_grad()) params.push_back(p);
  auto optimizer = make_optimizer(recipe.optimizer, params);

  io::TrainState state;
  if (resuming) {
    std::string from = io::existing_checkpoint(last_dir);
    io::load_weights(from, model, {}, /*strict=*/true, false);
    io::load_optimizer(from, *optimizer);
    io::load_rng(from);
    state = io::load_train_state(from);
    truncate_metrics(run_dir + "/metrics.jsonl", state.step);
  } else {
    fs::remove(run_dir + "/metrics.jsonl");
    fs::remove_all(best_dir);
  }
  MetricsLog metrics(run_dir + "/metrics.jsonl");

  const int64_t bs = recipe.data.batch_size, accum = recipe.train.grad_accum;
  const int64_t batches_per_epoch = train_set.size() / bs;  // the last partial batch is dropped
  const int64_t steps_per_epoch = (batches_per_epoch + accum - 1) / accum;
  int64_t total_steps = steps_per_epoch * recipe.train.epochs;
  if (recipe.train.max_steps > 0) total_steps = std::min(total_steps, recipe.train.max_steps);

  say(fmt::format("run {}: {}", run_dir, model.describe()));
  if (!rm.init_message.empty()) say("init: " + rm.init_message);
  if (!tokenizer_message.empty()) say(tokenizer_message);
  say(fmt::format("adapter {}: {}", to_string(recipe.adapter.kind), rm.report.summary()));
  say(fmt::format("data: {} train / {} val / {} test {}, batch {} x accum {}, {} steps; threads: {}", train_set.size(),
                  splits.val.size(), splits.test.size(),
                  lm ? fmt::format("chunks of {} tokens", seq_len) : recipe.model.is_text() ? "texts" : "images", bs, accum,
                  total_steps, threads));
  if (resuming)
    say(fmt::format("resuming from step {} (epoch {}, batch {})", state.step, state.epoch + 1, state.batch_in_epoch));

  TrainResult result;
  result.run_dir = run_dir;
  result.trainable = rm.report.trainable;
  result.total = rm.report.total;
  result.flops_per_sample = model.flops_per_sample();

  Progress progress("train", total_steps, recipe.train.log_every, opts.quiet);
  model.train();
  optimizer->zero_grad();
  double train_seconds = state.train_seconds;
  int64_t samples_this_call = 0;
  double seconds_this_call = 0;
  // Low-rank adapters are also written on their own (PEFT layout) inside every checkpoint.
  // Low-rank adapters are also written on their own (PEFT layout), and text runs' tokenizer
  // travels with each checkpoint.
  std::function<void(const std::string&)> write_adapter;
  if (recipe.adapter.saves_adapter_file() || recipe.data.is_text())
    write_adapter = [&](const std::string& dir) {
      if (recipe.adapter.saves_adapter_file())
        io::save_adapter(dir, model, recipe.adapter, rm.report.adapted, recipe.init_from.run);
      if (recipe.data.is_text())
        fs::copy_file(fs::path(run_dir) / data::kTokenizerFile, fs::path(dir) / data::kTokenizerFile,
                      fs::copy_options::overwrite_existing);
    };
  auto checkpoint_last = [&] {
    state.train_seconds = train_seconds;
    io::save_checkpoint(last_dir, model, optimizer.get(), state, write_adapter);
  };

  bool stop = state.step >= total_steps;
  double window_loss = 0;
  int64_t window_n = 0;
  for (int64_t epoch = state.epoch; epoch < recipe.train.epochs && !stop; ++epoch) {
    state.epoch = epoch;
    auto perm = data::epoch_permutation(train_set.size(), static_cast<uint64_t>(recipe.seed), epoch);
    double step_loss = 0;
    int64_t micro = 0;
    auto t_start = std::chrono::steady_clock::now();
    for (int64_t b = state.batch_in_epoch; b < batches_per_epoch; ++b) {
      auto idx = perm.slice(0, b * bs, (b + 1) * bs);
      auto x = train_set.inputs.index_select(0, idx);
      auto y = train_set.labels.index_select(0, idx);
      auto out = model.forward(x);
      auto loss = lm ? lm_loss(out, x, recipe.model.pad_id) : torch::nn::functional::cross_entropy(out, y);
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value))
        throw Error(fmt::format("training diverged: loss is {} at step {} (lower optimizer.lr or set "
                                "train.clip_grad_norm)", loss_value, state.step + 1));
      (accum > 1 ? loss / double(accum) : loss).backward();
      step_loss += loss_value;
      ++micro;
      state.samples += bs;
      samples_this_call += bs;
      bool boundary = micro == accum || b + 1 == batches_per_epoch;
      if (!boundary) continue;

      double lr = scheduled_lr(recipe.schedule, recipe.optimizer.lr, state.step, total_steps);
      set_lr(*optimizer, lr);
      if (recipe.train.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(params, recipe.train.clip_grad_norm);
      optimizer->step();
      optimizer->zero_grad();
      ++state.step;
      state.batch_in_epoch = b + 1;
      double mean_loss = step_loss / micro;
      result.losses.emplace_back(state.step, mean_loss);
      window_loss += mean_loss;
      ++window_n;
      step_loss = 0;
      micro = 0;

      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - t_start).count();
      t_start = now;
      train_seconds += dt;
      seconds_this_call += dt;
      double rate = seconds_this_call > 0 ? samples_this_call / seconds_this_call : 0;
      progress.update(state.step, fmt::format("epoch {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} {}", epoch + 1,
                                              recipe.train.epochs, mean_loss, lr, lm ? rate * seq_len : rate,
                                              lm ? "tokens/s" : "samples/s"));
      if (state.step % recipe.train.log_every == 0 || state.step == total_steps) {
        metrics.write({{"type", "train"}, {"step", state.step}, {"epoch", epoch + 1},
                       {"loss", window_loss / window_n}, {"lr", lr}, {"samples_per_second", rate}});
        window_loss = 0;
        window_n = 0;
      }
      if (opts.stop_after_steps > 0 && state.step >= opts.stop_after_steps) {
        progress.clear();
        say(fmt::format("stopping after step {} (as asked)", state.step));
        result.steps = state.step;
        return result;  // abrupt: no checkpoint, as if the process had been killed
      }
      if (recipe.train.checkpoint_every > 0 && state.step % recipe.train.checkpoint_every == 0 &&
          b + 1 < batches_per_epoch)
        checkpoint_last();
      if (state.step >= total_steps) {
        stop = true;
        break;
      }
    }

    // End of epoch (or of the step budget): validate, keep the best, checkpoint.
    progress.clear();
    if (has_val) {
      auto ev = evaluate(model, splits.val, recipe);
      model.train();
      result.final_val_accuracy = ev.accuracy;
      // The kept metric: accuracy for classifiers, −loss for language models (higher is better).
      const double metric = lm ? -ev.loss : ev.accuracy;
      bool better = state.best_epoch < 0 || metric > state.best_metric;
      nlohmann::json line{{"type", "eval"}, {"split", "val"}, {"step", state.step}, {"epoch", epoch + 1},
                          {"loss", ev.loss}, {"accuracy", ev.accuracy}};
      if (lm) line["perplexity"] = ev.perplexity;
      else line["macro_f1"] = ev.macro_f1;
      metrics.write(line);
      say(lm ? fmt::format("epoch {}/{}: val loss {:.4f}  perplexity {:.2f}  next-token accuracy {:.4f}{}", epoch + 1,
                           recipe.train.epochs, ev.loss, ev.perplexity, ev.accuracy, better ? "  (best)" : "")
             : fmt::format("epoch {}/{}: val loss {:.4f}  val accuracy {:.4f}{}", epoch + 1, recipe.train.epochs, ev.loss,
                           ev.accuracy, better ? "  (best)" : ""));
      if (better) {
        state.best_metric = metric;
        state.best_epoch = epoch + 1;
      }
    }
    if (!stop) {  // a step budget that ends mid-epoch leaves the position at its last batch
      state.epoch = epoch + 1;
      state.batch_in_epoch = 0;
    }
    if (!has_val || state.best_epoch == epoch + 1) {
      state.train_seconds = train_seconds;
      io::save_checkpoint(best_dir, model, nullptr, state, write_adapter);
    }
    checkpoint_last();
  }

  result.steps = state.step;
  result.lm = lm;
  result.best_val_accuracy = lm ? -1 : state.best_metric;
  result.best_val_loss = lm && state.best_epoch >= 0 ? -state.best_metric : -1;
  result.train_seconds = train_seconds;
  result.samples_per_second = seconds_this_call > 0 ? samples_this_call / seconds_this_call : 0;
  result.tokens_per_second = recipe.model.is_text() ? result.samples_per_second * seq_len : 0;
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  if (!io::checkpoint_exists(best_dir)) io::save_checkpoint(best_dir, model, nullptr, state, write_adapter);
  metrics.write({{"type", "summary"}, {"step", state.step}, {"samples_per_second", result.samples_per_second},
                 {"wall_seconds", result.wall_seconds}, {"flops_per_sample", result.flops_per_sample},
                 {"tokens_per_second", result.tokens_per_second},
                 {"train_seconds", train_seconds}, {lm ? "best_val_loss" : "best_val_accuracy", lm ? result.best_val_loss : state.best_metric},
                 {"trainable_params", result.trainable}, {"total_params", result.total}});
  progress.finish(lm ? fmt::format("{} steps, {:.0f} tokens/s, best val loss {:.4f} (perplexity {:.2f})", state.step,
                                   result.tokens_per_second, result.best_val_loss, std::exp(result.best_val_loss))
                     : fmt::format("{} steps, {:.0f} samples/s, best val accuracy {:.4f}", state.step,
                                   result.samples_per_second, state.best_metric));
  return result;
}

}  // namespace tunekit
