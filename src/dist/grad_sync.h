// Data-parallel synchronisation on a ProcessGroup: the model broadcast from rank 0 at the start
// (every parameter and buffer, trainable or frozen), and the gradients of the trainable parameters
// summed over ranks in float32, flattened into buckets of a few MB whose allreduces run together.
// (c10d's Reducer cannot be built against Debian's LibTorch, so this is tunekit's own.) With
// overlap, a bucket's allreduce starts from a gradient hook as soon as its last gradient is final,
// while backward still runs on the earlier layers.
#pragma once
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/torch.h>

#include <mutex>
#include <string>
#include <vector>

#include "models/model.h"
#include "src/dist/process_group.h"

namespace tunekit::dist {

inline constexpr int64_t kDefaultBucketBytes = int64_t(4) << 20;

// The parameters (by index into the list given to make_buckets) one flat float32 buffer holds.
struct Bucket {
  std::vector<size_t> index;
  int64_t numel = 0;
};

// Consecutive runs of `params`, taken from the last to the first (the order backward produces
// them in), of at most `bucket_bytes` (in float32) each; a parameter larger than
// that gets a bucket of its own. Empty parameters are skipped.
std::vector<Bucket> make_buckets(const std::vector<torch::Tensor>& params, int64_t bucket_bytes);

// The bucket's gradients as one float32 vector (an undefined gradient reads as zeros).
torch::Tensor flatten_grads(const std::vector<torch::Tensor>& params, const Bucket& bucket);
// Writes `flat` x `scale` back into the bucket's gradients (in their own dtype); a gradient that
// is undefined stays so (GradSync::reduce first defines, as zeros, every gradient that some rank
// has; one no rank has stays undefined, and the optimizer treats it as in one process).
void unflatten_grads(const torch::Tensor& flat, double scale, const std::vector<torch::Tensor>& params,
                     const Bucket& bucket);

// Whether TUNEKIT_DIST_OVERLAP asks for overlapped allreduces ("1": yes, unset or "0": no; anything
// else is a one-line error naming the variable).
bool overlap_from_env(const char* value);

// Makes every rank's tensors rank 0's, in place, one broadcast per tensor, each in its own width
// on the wire: float32/64, int64/32, int8 and uint8 as they are, bfloat16 and float16 as their
// 16-bit patterns, bool as bytes, int16 as an int64 copy (a non-contiguous tensor through a
// contiguous copy); another floating or complex type is an error. Each tensor's name is used in
// an error. Returns the bytes broadcast.
int64_t broadcast_tensors(ProcessGroup& group, const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

class GradSync {
 public:
  // `overlap`: a gradient hook on every trainable parameter starts its bucket's allreduce during
  // the backward that arm() announced; otherwise reduce() starts them all after backward.
  GradSync(ProcessGroup& group, std::vector<torch::Tensor> trainable, int64_t bucket_bytes = kDefaultBucketBytes,
           bool overlap = false);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // With overlap: the next backward is the step's last (gradient accumulation syncs only then);
  // its hooks flatten each final gradient (what was accumulated + the new one) and start every
  // bucket whose gradients are all final, in bucket order (the same on every rank). No-op otherwise.
  void arm();
  bool overlap() const { return overlap_; }

  // Makes every rank's model rank 0's: parameters and buffers, in their own dtypes and widths
  // (broadcast_tensors).
  void broadcast_model(models::Model& model);
  // Sums the trainable gradients over ranks and multiplies them by `scale`; `step` names the
  // step in an error. After backward: starts the buckets not started yet (a parameter this rank's
  // backward did not reach contributes what it holds, or zeros), then waits for all of them.
  // A gradient defined on some rank only ends up defined (the sum) on every rank.
  void reduce(double scale, int64_t step);

  int64_t bytes_per_step() const { return bytes_per_step_; }  // payload of one reduce()
  size_t buckets() const { return buckets_.size(); }

 private:
  void on_grad(size_t param, const torch::Tensor& grad);  // the hook (armed only)
  void launch_ready();                                     // starts the ready buckets, in order
  void launch(size_t bucket);

  ProcessGroup& group_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  int64_t bytes_per_step_ = 0;
  bool overlap_ = false;
  std::vector<unsigned> hooks_;  // one per parameter (overlap)
  std::vector<size_t> bucket_of_, offset_of_;  // each parameter's bucket and its place in the flat buffer

  // One step's state (arm() to reduce()).
  std::mutex mutex_;
  bool armed_ = false;
  std::vector<char> final_;         // per parameter: its hook has written the final gradient
  std::vector<int64_t> missing_;    // per bucket: parameters not final yet
  std::vector<torch::Tensor> flats_;
  size_t launched_ = 0;             // buckets [0, launched_) are started
  std::vector<c10::intrusive_ptr<c10d::Work>> works_;
  std::string error_;               // a failure inside a hook, reported by reduce()
};

}  // namespace tunekit::dist
