// Dendrogram of a mixing measure (docs/methods.md §15): repeatedly merge the two atoms with the
// smallest dissimilarity into one atom of weight π_i + π_j with weight-averaged parameters; the
// merge heights choose the number of experts. Two dissimilarities (lab.dendrogram):
//   mixture (2403.01684):  π_iπ_j/(π_i+π_j) · ‖θ_i − θ_j‖² over the whole atom, σ averaged;
//   authors (2510.12744's code): π_iπ_j/(π_i+π_j) · (‖c_i − c_j‖² + sqrt(‖a_i − a_j‖² + (σ²_i − σ²_j)²)),
//     the gate slopes β left out of d (but averaged in the merge), σ² averaged.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "src/lab/lab_kinds.h"

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

struct DendrogramOptions {
  DendrogramRule rule = DendrogramRule::Mixture;
  // authors: the widths of θ's parts in order (gate slope β, expert slope a, intercept c[, σ]),
  // as lab::Atoms::blocks gives them.
  std::vector<int64_t> blocks;
};

// weight [K] (normalised inside), theta [K, p]. The levels hold θ as given (σ, not σ²).
Dendrogram build_dendrogram(const torch::Tensor& weight, const torch::Tensor& theta,
                            const DendrogramOptions& options = {});

// gnuplot data for drawing it: one "x0 y0 dx dy" vector per line segment.
std::string dendrogram_segments(const Dendrogram& d);

}  // namespace tunekit::lab
