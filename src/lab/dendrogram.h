// Dendrogram of a mixing measure (docs/methods.md §15): repeatedly merge the two atoms with the smallest
// d(i,j) = π_i π_j / (π_i + π_j) · ‖θ_i − θ_j‖² into one atom of weight π_i + π_j with
// weight-averaged parameters; the merge heights choose the number of experts.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace tunekit::lab {

struct Merge {
  int64_t left, right;  // node ids: 0..K-1 are the atoms, K + t is the node made by merge t
  double height;
};

struct Dendrogram {
  int64_t leaves = 0;
  std::vector<Merge> merges;  // K − 1 merges, in order (heights need not be monotone)
  // The mixing measure at each level: levels[κ − 1] holds the κ atoms' (weights [κ], theta [κ, p]).
  std::vector<std::pair<torch::Tensor, torch::Tensor>> levels;
  // The number of atoms kept: the count just before the merge whose height jumps most above the
  // previous merge's, on a log scale (tunekit's reading of "the largest height gap").
  int64_t selected() const;
  // The same on a linear scale (the first merge's jump counted from 0), reported for comparison.
  int64_t selected_linear_gap() const;
};

// weight [K] (normalised inside), theta [K, p].
Dendrogram build_dendrogram(const torch::Tensor& weight, const torch::Tensor& theta);

// gnuplot data for drawing it: one "x0 y0 dx dy" vector per line segment.
std::string dendrogram_segments(const Dendrogram& d);

}  // namespace tunekit::lab
