// Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist):
// loading, normalisation, class subsets, a held-out validation split, and `prepare`
// (verify the four files and cache them uncompressed under .data/).
#pragma once
#include <string>

#include "data/dataset.h"
#include "src/recipe/recipe.h"

namespace tunekit::data {

inline constexpr const char* kDebianFashionMnist = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kPreparedFashionMnist = ".data/fashion-mnist";

struct ImageSplits {
  LabelledDataset train, val, test;
};

// The directory a recipe with an empty data.root reads: the prepared cache if it is
// complete, otherwise the Debian package's directory.
std::string default_fashion_mnist_root();

// Loads train/val/test per the recipe's data section (classes, val_fraction, limit_train).
ImageSplits load_fashion_mnist(const DataConfig& cfg, uint64_t seed);

// Reads and checks the four files under `source`, writes them uncompressed to `dest`
// with a manifest; returns a summary line. Idempotent: a complete cache is kept.
std::string prepare_fashion_mnist(const std::string& source, const std::string& dest);

}  // namespace tunekit::data
