// `tunekit merge`: folds a run's adapters into its base weights and writes the result as a
// run directory of its own (recipe without an adapter, checkpoints/best with plain weights),
// so eval, export and init_from.run treat it like any fully trained run.
#pragma once
#include <string>

namespace tunekit {

struct MergeResult {
  std::string out_dir;
  int64_t tensors = 0;      // tensors written
  int64_t adapted = 0;      // layers whose adapter was folded in
  double max_abs_diff = 0;  // merged model vs the adapted model, on test images
};

// `out_dir` empty = RUN_DIR + "_merged" beside the run.
MergeResult merge_run(const std::string& run_dir, const std::string& checkpoint, std::string out_dir);

}  // namespace tunekit
