// In-memory labelled datasets, deterministic splitting and seeded batching.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace tunekit::data {

struct LabelledDataset {
  torch::Tensor inputs;  // [N, ...] float images (already normalised) or int64 token ids
  torch::Tensor labels;  // [N] int64 in 0..num_classes-1; a chat/instruct LM: [N, L] target ids, -100 where no loss
  std::vector<std::string> class_names;
  torch::Tensor groups;  // optional [N] int64 into group_names (e.g. the SpamAssassin folder)
  std::vector<std::string> group_names;
  torch::Tensor segments;  // optional [N, L] int64: packed examples per row (models/lm.h LmInputs::segments)
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  LabelledDataset subset(const torch::Tensor& index) const;
};

// Splits off `fraction` of every class (seeded) as the second element.
std::pair<LabelledDataset, LabelledDataset> stratified_split(const LabelledDataset& d, double fraction,
                                                             uint64_t seed);

// Keeps the listed original labels and renumbers them 0..k-1 in the listed order.
LabelledDataset select_classes(const LabelledDataset& d, const std::vector<int64_t>& classes);

// A seeded permutation of 0..n-1 for the given epoch: the same (seed, epoch) always gives the
// same order, which is what lets a resumed run replay the batches of an interrupted epoch.
torch::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

torch::Generator seeded_generator(uint64_t seed);

}  // namespace tunekit::data
