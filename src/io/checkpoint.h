// Checkpoints: a run's weights, optimizer state, RNG state and progress, written to a
// temporary directory with a manifest (each file's size and MD5), verified, and only then renamed
// over the previous one; read back whole, verified against the manifest and validated field by field.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <optional>
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
// state.json into `<parent>/.<name>.tmp`, every file through util/file.h's AtomicFile (each write,
// fsync and close checked); `write_extra`, when given, writes further files into that directory.
// Then manifest.json (format, each file's name, size and MD5) is written last, the directory is
// read back and verified against it, and only then swapped in (dir -> .<name>.old, tmp -> dir,
// backup dropped, parents fsynced). Any failure (a full disk, a write_extra error) is one Error
// naming the file and the cause; the temporary directory is removed and the previous checkpoint
// in `dir` is left as it was.
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

// state.json's fields, validated (types, ranges): "<dir>/state.json: step: must be ... (got ...)".
TrainState load_train_state(const std::string& dir);

// The checks of a saved state against the run about to resume from it (numbers the trainer
// computes): epoch <= epochs, batch_in_epoch <= batches_per_epoch, step <= total_steps,
// best_epoch <= epochs. Throws "<dir>/state.json: <key>: ..." naming the recipe setting.
void check_train_state(const TrainState& state, int64_t epochs, int64_t batches_per_epoch, int64_t total_steps,
                       const std::string& dir);

// One checkpoint read whole into memory and verified: every file its manifest.json lists must be
// there with the listed size and MD5 ("<dir>/model.pt: checksum mismatch (the file is damaged; ...)"),
// state.json is validated, and all loads below use these bytes, so a run replacing the directory
// meanwhile can never mix two checkpoints (a read that fails while the directory was being
// replaced is retried). A checkpoint without manifest.json is refused when its state.json says a
// manifest was written; one from an older tunekit (no "format" key) is read with a warning on stderr.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);  // `dir` or its backup, as existing_checkpoint

  const std::string& dir() const { return dir_; }
  const TrainState& state() const { return state_; }
  bool trainable_only() const { return trainable_only_; }
  bool has(const std::string& file) const { return files_.count(file) > 0; }

  // As the free functions below, from this checkpoint's bytes.
  int64_t load_weights(torch::nn::Module& model, const std::vector<std::string>& exclude, bool strict,
                       bool allow_missing_adapters) const;
  void load_optimizer(torch::optim::Optimizer& optimizer) const;
  void load_rng() const;
  // Data parallel: restores rank `rank`'s RNG stream (rank 0's is rng.pt's, the others'
  // rng_ranks.pt's); false, with nothing changed, when the checkpoint holds none for that rank (it
  // was written by fewer ranks, or by a tunekit that kept one stream).
  bool load_rng(int rank) const;
  bool has_rng(int rank) const;

 private:
  // Rank `rank`'s saved generator state from rng_ranks.pt (ranks after 0), if it holds one.
  std::optional<torch::Tensor> rank_rng_state(int rank) const;

  std::string dir_;
  std::map<std::string, std::string> files_;  // name -> bytes
  TrainState state_;
  bool trainable_only_ = false;
};

// Loads weights from `dir`/model.pt into `model`. Names matching an `exclude` glob are
// skipped. With `strict`, every model tensor must be present (adapter tensors may be absent
// when `allow_missing_adapters`; frozen parameters when the checkpoint was saved
// trainable_only); shapes and dtypes must match, and a tensor with NaN or Inf is an error naming
// it. Returns the number of tensors loaded.
int64_t load_weights(const std::string& dir, torch::nn::Module& model, const std::vector<std::string>& exclude,
                     bool strict, bool allow_missing_adapters);

void load_optimizer(const std::string& dir, torch::optim::Optimizer& optimizer);
// Restores the global RNG saved with the checkpoint.
void load_rng(const std::string& dir);

// Data parallel: writes the RNG states of ranks 1, 2, ... (`states[r]` for rank r; rank 0's
// travels in rng.pt) as `dir`/rng_ranks.pt, for a save_checkpoint write_extra.
void save_rank_rngs(const std::string& dir, const std::vector<torch::Tensor>& states);
inline constexpr const char* kRankRngFile = "rng_ranks.pt";

}  // namespace tunekit::io
