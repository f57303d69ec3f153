// An objective's evaluation split among `parts` ranks without processes: each part evaluated,
// their counts summed as the allreduce would, and read back (src/eval/evaluator.h).
#pragma once
#include "src/train/objective.h"

namespace tunekit::testkit {

inline EvalResult evaluate_in_parts(const Objective& objective, models::Model& model,
                                    const data::LabelledDataset& data, int64_t batch_size, int parts) {
  torch::Tensor sum;
  EvalResult first;
  for (int r = 0; r < parts; ++r) {
    EvalResult part = objective.evaluate_part(model, data, batch_size, r, parts);
    const torch::Tensor counts = eval_counts(part);
    sum = r == 0 ? counts : sum + counts;
    if (r == 0) first = part;
  }
  return eval_from_counts(first, sum);
}

}  // namespace tunekit::testkit
