#include "data/dataset.h"

#include <ATen/CPUGeneratorImpl.h>

namespace tunekit::data {

torch::Generator seeded_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

LabelledDataset LabelledDataset::subset(const torch::Tensor& index) const {
  LabelledDataset out{inputs.index_select(0, index), labels.index_select(0, index), class_names,
                      groups.defined() ? groups.index_select(0, index) : torch::Tensor(), group_names};
  if (segments.defined()) out.segments = segments.index_select(0, index);
  return out;
}

std::pair<LabelledDataset, LabelledDataset> stratified_split(const LabelledDataset& d, double fraction,
                                                             uint64_t seed) {
  auto gen = seeded_generator(seed);
  std::vector<torch::Tensor> keep, held;
  const int64_t k = d.labels.numel() ? d.labels.max().item<int64_t>() + 1 : 0;
  for (int64_t c = 0; c < k; ++c) {
    auto idx = (d.labels == c).nonzero().flatten();
    idx = idx.index_select(0, torch::randperm(idx.numel(), gen, torch::kLong));
    int64_t n_held = static_cast<int64_t>(idx.numel() * fraction + 0.5);
    held.push_back(idx.slice(0, 0, n_held));
    keep.push_back(idx.slice(0, n_held));
  }
  auto a = std::get<0>(torch::cat(keep).sort()), b = std::get<0>(torch::cat(held).sort());
  return {d.subset(a), d.subset(b)};
}

LabelledDataset select_classes(const LabelledDataset& d, const std::vector<int64_t>& classes) {
  if (classes.empty()) return d;
  auto mask = torch::zeros_like(d.labels, torch::kBool);
  auto remapped = torch::full_like(d.labels, -1);
  std::vector<std::string> names;
  for (size_t i = 0; i < classes.size(); ++i) {
    auto m = d.labels == classes[i];
    mask |= m;
    remapped.masked_fill_(m, static_cast<int64_t>(i));
    names.push_back(classes[i] < int64_t(d.class_names.size()) ? d.class_names[classes[i]]
                                                               : std::to_string(classes[i]));
  }
  auto idx = mask.nonzero().flatten();
  return {d.inputs.index_select(0, idx), remapped.index_select(0, idx), names,
          d.groups.defined() ? d.groups.index_select(0, idx) : torch::Tensor(), d.group_names};
}

torch::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  auto gen = seeded_generator(seed * 1000003ULL + static_cast<uint64_t>(epoch) + 1);
  return torch::randperm(n, gen, torch::kLong);
}

}  // namespace tunekit::data
