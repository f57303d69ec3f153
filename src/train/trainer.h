// The training loop: batches -> forward/backward/step with AdamW, warm-up + cosine schedule,
// clipping and accumulation; per-epoch validation, best/last checkpoints, metrics.jsonl,
// progress output, and resume from the last checkpoint. What differs between tasks (loss,
// evaluation, the kept metric, log lines) comes from the recipe's Objective (objective.h).
// A run holds its directory's lock (util/file.h DirLock) from start to end, never overwrites a
// previous run unless asked, and stops before anything non-finite is written.
#pragma once
#include <string>
#include <vector>

#include "src/recipe/recipe.h"

namespace tunekit {

struct TrainOptions {
  bool resume = false;
  bool quiet = false;            // no progress output (tests)
  int64_t stop_after_steps = 0;  // stop abruptly after this many optimizer steps (tests: a "kill")
  // Start over in a run directory that already holds a run (its checkpoints, metrics and eval
  // files are removed once the lock is held, the model built and the data loaded). Without it
  // (and without `resume`) such a directory is refused.
  bool overwrite = false;
};

struct TrainResult {
  std::string run_dir;
  int64_t steps = 0, trainable = 0, total = 0;
  double best_val_accuracy = -1, final_val_accuracy = -1;
  double best_val_loss = -1;      // causal LM: the best validation loss (the metric it keeps)
  bool lm = false;
  double samples_per_second = 0;  // training throughput (excluding evaluation)
  double tokens_per_second = 0;   // text models: samples/s x sequence length
  double train_seconds = 0, wall_seconds = 0;
  double flops_per_sample = 0;    // forward FLOPs of the model, per sample
  // (step, loss) for every optimizer step taken by this call, in order.
  std::vector<std::pair<int64_t, double>> losses;
};

// Trains `recipe` in its run directory. Throws Error when the directory is locked by another
// process, already holds a run (without resume/overwrite), or training diverges.
// `resume` of a run that already finished writes nothing and returns its result.
TrainResult train(const Recipe& recipe, const TrainOptions& options = {});

// Learning rate at optimizer step `step` (0-based) of `total` under the recipe's schedule.
double scheduled_lr(const ScheduleConfig& s, double base_lr, int64_t step, int64_t total);

}  // namespace tunekit
