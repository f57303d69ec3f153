// Checkpoints: a run's weights, optimizer state, RNG state and progress, written to a
// temporary directory and renamed into place so a killed run never leaves a torn checkpoint.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace tunekit::io {

struct TrainState {
  int64_t epoch = 0;          // epoch in progress (0-based)
  int64_t batch_in_epoch = 0; // batches of that epoch already consumed
  int64_t step = 0;           // optimizer steps taken
  int64_t samples = 0;        // training samples seen
  double best_metric = -1.0;  // best validation accuracy so far
  int64_t best_epoch = -1;
  double train_seconds = 0;   // wall time spent training so far
  // The losses since the last "train" line of metrics.jsonl (their sum and count), so a run
  // resumed between two log lines writes the same next line as one that was never stopped.
  double window_loss = 0;
  int64_t window_n = 0;
};

// Writes all named parameters and buffers of `model` (+ optimizer and RNG when given) and
// state.json into `dir`, atomically.
// `write_extra`, when given, writes further files into the temporary directory before the swap.
// With `trainable_only` the frozen parameters are left out (a model.from_hf run: its base comes
// from the Hugging Face directory again, so a checkpoint of a 0.5B model holds megabytes, not
// gigabytes); state.json records it and load_weights then accepts the frozen ones missing.
void save_checkpoint(const std::string& dir, const torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const std::function<void(const std::string&)>& write_extra = {},
                     bool trainable_only = false);

// The checkpoint directory to read for `dir`: `dir` itself or, after a crash between the two
// renames of save_checkpoint, its backup. Throws if neither exists.
std::string existing_checkpoint(const std::string& dir);
bool checkpoint_exists(const std::string& dir);

TrainState load_train_state(const std::string& dir);

// Loads weights from `dir`/model.pt into `model`. Names matching an `exclude` glob are
// skipped. With `strict`, every model tensor must be present (adapter tensors may be absent
// when `allow_missing_adapters`; frozen parameters when the checkpoint was saved
// trainable_only); shapes must match. Returns the number of tensors loaded.
int64_t load_weights(const std::string& dir, torch::nn::Module& model, const std::vector<std::string>& exclude,
                     bool strict, bool allow_missing_adapters);

void load_optimizer(const std::string& dir, torch::optim::Optimizer& optimizer);
// Restores the global RNG saved with the checkpoint.
void load_rng(const std::string& dir);

}  // namespace tunekit::io
