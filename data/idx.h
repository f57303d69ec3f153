// Reader for the IDX format (MNIST / Fashion-MNIST), gzip-compressed or raw.
// Every size is checked against the file: a truncated or malformed file is an Error naming it.
#pragma once
#include <torch/torch.h>

#include <string>

namespace tunekit::data {

// Returns a uint8 tensor with the file's shape (e.g. [60000, 28, 28] or [60000]).
torch::Tensor read_idx(const std::string& path);

// Writes a uint8 tensor as an uncompressed IDX file (used by data preparation and tests).
void write_idx(const std::string& path, const torch::Tensor& t);

}  // namespace tunekit::data
