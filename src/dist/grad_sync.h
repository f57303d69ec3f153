// Data-parallel synchronisation on a ProcessGroup: the model broadcast from rank 0 at the start
// (every parameter and buffer, trainable or frozen), and the gradients of the trainable parameters
// summed over ranks in float32, flattened into buckets of a few MB whose allreduces run together.
// (c10d's Reducer cannot be built against Debian's LibTorch, so this is tunekit's own.)
#pragma once
#include <torch/torch.h>

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

// Consecutive runs of `params` of at most `bucket_bytes` (in float32) each; a parameter larger than
// that gets a bucket of its own. Empty parameters are skipped.
std::vector<Bucket> make_buckets(const std::vector<torch::Tensor>& params, int64_t bucket_bytes);

// The bucket's gradients as one float32 vector (an undefined gradient reads as zeros).
torch::Tensor flatten_grads(const std::vector<torch::Tensor>& params, const Bucket& bucket);
// Writes `flat` x `scale` back into the bucket's gradients (in their own dtype); a gradient that
// is undefined stays so (GradSync::reduce first defines, as zeros, every gradient that some rank
// has; one no rank has stays undefined, and the optimizer treats it as in one process).
void unflatten_grads(const torch::Tensor& flat, double scale, const std::vector<torch::Tensor>& params,
                     const Bucket& bucket);

class GradSync {
 public:
  GradSync(ProcessGroup& group, std::vector<torch::Tensor> trainable, int64_t bucket_bytes = kDefaultBucketBytes);

  // Makes every rank's model rank 0's: parameters and buffers, in their own dtypes (half types
  // travel as float32).
  void broadcast_model(models::Model& model);
  // Sums the trainable gradients over ranks and multiplies them by `scale`; `step` names the
  // step in an error. After backward (the allreduces of all buckets are started, then waited for).
  // A gradient defined on some rank only ends up defined (the sum) on every rank.
  void reduce(double scale, int64_t step);

  int64_t bytes_per_step() const { return bytes_per_step_; }  // payload of one reduce()
  size_t buckets() const { return buckets_.size(); }

 private:
  ProcessGroup& group_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  int64_t bytes_per_step_ = 0;
};

}  // namespace tunekit::dist
