// Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist):
// loading, normalisation, class subsets, a held-out validation split, and `prepare`
// (verify the four files and cache them uncompressed under .data/ with a MANIFEST.json of their
// sizes and MD5s, checked whenever a run reads the cache).
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

// The directory a recipe with an empty data.root reads: the prepared cache if it has a
// MANIFEST.json, otherwise (none, or one an older tunekit wrote without checksums) the Debian
// package's directory.
std::string default_fashion_mnist_root();

struct FashionMnistOptions {
  TORCH_ARG(std::string, root);              // empty: default_fashion_mnist_root()
  TORCH_ARG(std::vector<int64_t>, classes);  // subset of labels, remapped to 0..k-1; empty = all
  TORCH_ARG(double, val_fraction) = 0.1;     // held out from train, stratified, seeded
  TORCH_ARG(int64_t, limit_train) = 0;       // 0 = all
};

// Loads train/val/test: the class subset, the seeded validation split and the training limit.
// A root with a MANIFEST.json is a prepared cache: a file whose size or MD5 differs is an Error
// naming it ("<file>: checksum mismatch with MANIFEST.json (the prepared cache is damaged; run
// `tunekit prepare fashion_mnist` to redo it)"); a root with only an old MANIFEST is refused alike.
ImageSplits load_fashion_mnist(const FashionMnistOptions& options, uint64_t seed);

// Reads and checks the four files under `source`, writes them uncompressed to `dest`
// with a MANIFEST.json (sizes, MD5s, shapes); returns a summary line. A cache whose every file
// matches its manifest is kept ("already prepared"); a missing, old, truncated or damaged one is
// redone and the summary says why.
std::string prepare_fashion_mnist(const std::string& source, const std::string& dest);

}  // namespace tunekit::data
