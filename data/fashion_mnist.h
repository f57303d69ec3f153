// Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist):
// loading, normalisation, class subsets, a held-out validation split, and `prepare`
// (verify the four files and cache them uncompressed under .data/).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data/dataset.h"

namespace tunekit::data {

inline constexpr const char* kDebianFashionMnist = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kPreparedFashionMnist = ".data/fashion-mnist";

// Images are x = (pixel / 255 - mean) / std with Fashion-MNIST's training-set mean and std.
inline constexpr double kFashionMnistMean = 0.2860, kFashionMnistStd = 0.3530;

struct ImageSplits {
  LabelledDataset train, val, test;
};

// The directory a recipe with an empty data.root reads: the prepared cache if it is
// complete, otherwise the Debian package's directory.
std::string default_fashion_mnist_root();

struct FashionMnistOptions {
  TORCH_ARG(std::string, root);              // empty: default_fashion_mnist_root()
  TORCH_ARG(std::vector<int64_t>, classes);  // subset of labels, remapped to 0..k-1; empty = all
  TORCH_ARG(double, val_fraction) = 0.1;     // held out from train, stratified, seeded
  TORCH_ARG(int64_t, limit_train) = 0;       // 0 = all
};

// Loads train/val/test: the class subset, the seeded validation split and the training limit.
ImageSplits load_fashion_mnist(const FashionMnistOptions& options, uint64_t seed);

// Reads and checks the four files under `source`, writes them uncompressed to `dest`
// with a manifest; returns a summary line. Idempotent: a complete cache is kept.
std::string prepare_fashion_mnist(const std::string& source, const std::string& dest);

}  // namespace tunekit::data
